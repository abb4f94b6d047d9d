"""Random protobuf messages for the RPC fuzzers, built from one seed.

Hypothesis draws only the seed (``derandomize`` makes a run reproducible; a
failure prints the seed and the message): drawing every field of a nested
message through Hypothesis costs more than the RPC it feeds, and the fuzzers
must send 1,000 messages per RPC in seconds.

Every field gets a hostile value often: extremes of its integer type, NaN and
infinities, empty, long, odd or path-like strings, unknown enum numbers, long
repeated fields, deep nesting. A few names are special (``FIELD_VALUES``):
deployment names, model directories and addresses come from small sets, so the
fuzzer never makes a worker dial the world, never loads a real model by chance
and - with ``owned`` - only ever names deployments it owns (prefix "fuzz-").
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

F = FieldDescriptor
OWNED = ["fuzz-ghost", "fuzz-a", "fuzz-", "fuzz-" + "x" * 200, "fuzz-é\u202e", "fuzz-../x", "fuzz-a b"]
ANY_NAME = [*OWNED, "", " ", "nope", "\x00", "x" * 5000, "fuzz-live"]
ADDRESSES = ["", "127.0.0.1:1", "[::1]:1", "unix:/nonexistent/sock", "localhost", "127.0.0.1:99999", "::::"]
MODEL_DIRS = ["", "/nonexistent/model", "/", "/etc", "/proc/self", "relative/dir", "\x00", "a" * 5000]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-300, 5e-324, 1e300, -1e300, math.nan, math.inf, -math.inf, 2.0**53]
INT_LIMITS = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}


def _repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == F.LABEL_REPEATED


class Fuzz:
    """A random message builder over one ``random.Random``."""

    def __init__(self, seed: int, owned: bool = False, values: dict[str, Callable] | None = None) -> None:
        self.rng = random.Random(seed)
        #: Only deployment names with the "fuzz-" prefix (mutating RPCs).
        self.owned = owned
        self.values = {**FIELD_VALUES, **(values or {})}

    # -- scalars -----------------------------------------------------------
    def integer(self, kind: int) -> int:
        lo, hi = INT_LIMITS[kind]
        r = self.rng.random()
        if r < 0.4:
            return self.rng.randint(max(lo, 0), min(hi, 8))
        if r < 0.6:
            return self.rng.choice([lo, hi, hi - 1, max(lo, -1), 2**31 - 1 if hi > 2**31 else hi])
        if r < 0.8:
            return self.rng.randint(max(lo, 0), min(hi, 5000))
        return self.rng.randint(lo, hi)

    def floating(self) -> float:
        if self.rng.random() < 0.6:
            return self.rng.choice(FLOATS)
        return self.rng.uniform(-10.0, 1000.0)

    def string(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            return ""
        if r < 0.5:
            return self.rng.choice(ANY_NAME)
        if r < 0.55:
            return "s" * self.rng.choice([256, 10_000])
        alphabet = "abcxyz019-_./:é\u202e\u0000 %$"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(1, 24)))

    def blob(self) -> bytes:
        r = self.rng.random()
        if r < 0.3:
            return b""
        if r < 0.98:
            return self.rng.randbytes(self.rng.randint(1, 64))
        return self.rng.randbytes(self.rng.choice([4096, 65_536]))

    def deployment(self) -> str:
        return self.rng.choice(OWNED if self.owned else ANY_NAME)

    # -- messages ----------------------------------------------------------
    def value(self, field: FieldDescriptor, depth: int):
        special = self.values.get(field.name)
        if special is not None and field.type == F.TYPE_STRING:
            return special(self)
        if field.type == F.TYPE_MESSAGE:
            return None  # handled by fill()
        if field.type == F.TYPE_BOOL:
            return self.rng.random() < 0.5
        if field.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            value = self.floating()
            return (
                value if field.type == F.TYPE_DOUBLE or abs(value) < 3e38 or not math.isfinite(value) else 1.0
            )
        if field.type == F.TYPE_STRING:
            return self.string()
        if field.type == F.TYPE_BYTES:
            return self.blob()
        if field.type == F.TYPE_ENUM:
            numbers = [v.number for v in field.enum_type.values]
            return self.rng.choice([*numbers, *numbers, max(numbers) + 1, 99, -1])
        return self.integer(field.type)

    def count(self) -> int:
        r = self.rng.random()
        if r < 0.35:
            return 0
        if r < 0.97:
            return self.rng.randint(1, 4)
        return self.rng.choice([16, 64])

    def fill(self, message: Message, depth: int = 0, keep: float = 0.6) -> Message:
        """Set a random subset of ``message``'s fields (one member of each oneof)."""
        chosen = {}
        for oneof in message.DESCRIPTOR.oneofs:
            if self.rng.random() < 0.9:
                chosen[oneof.name] = self.rng.choice(oneof.fields).name
        for field in message.DESCRIPTOR.fields:
            if field.containing_oneof is not None:
                if chosen.get(field.containing_oneof.name) != field.name:
                    continue
            elif self.rng.random() > keep:
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                target = getattr(message, field.name)
                value_field = field.message_type.fields_by_name["value"]
                for _ in range(self.count()):
                    key = self.string()[:64]
                    if value_field.type == F.TYPE_MESSAGE:
                        if depth < 4:
                            self.fill(target[key], depth + 1)
                    else:
                        target[key] = self.value(value_field, depth)
                continue
            if _repeated(field):
                target = getattr(message, field.name)
                for _ in range(self.count()):
                    if field.type == F.TYPE_MESSAGE:
                        if depth < 4:
                            self.fill(target.add(), depth + 1)
                    else:
                        target.append(self.value(field, depth))
                continue
            if field.type == F.TYPE_MESSAGE:
                if depth < 4:
                    sub = getattr(message, field.name)
                    sub.SetInParent()
                    self.fill(sub, depth + 1)
                continue
            setattr(message, field.name, self.value(field, depth))
        self.own(message)
        return message

    def own(self, message: Message) -> None:
        """Deployment names of an owned message: always "fuzz-"-prefixed."""
        if not self.owned:
            return
        named = message.DESCRIPTOR.name in ("Deployment", "Plan", "Route")
        for field in message.DESCRIPTOR.fields:
            if field.type != F.TYPE_STRING or _repeated(field):
                continue
            if field.name == "deployment" or (named and field.name == "name"):
                setattr(message, field.name, self.deployment())

    def message(self, cls: type[Message], **fixed) -> Message:
        message = self.fill(cls())
        for name, value in fixed.items():
            setattr(message, name, value)
        return message


FIELD_VALUES: dict[str, Callable[[Fuzz], object]] = {
    "deployment": Fuzz.deployment,
    "address": lambda f: f.rng.choice(ADDRESSES),
    "model_dir": lambda f: f.rng.choice(MODEL_DIRS),
    "node_id": lambda f: f.rng.choice(["", "fuzz-node", "worker-0", "worker-2", "n", "x" * 300, "\x00"]),
    "dtype": lambda f: (
        f.rng.choice(["", "float32", "float16", "bfloat16", "int8", "float64", "x" * 100])
        if f.rng.random() < 0.9
        else f.string()
    ),
}
