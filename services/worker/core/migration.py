"""Which old hops hold the cache a new hop needs, and the cache on the wire.

Pure bookkeeping for live migration: a new hop running units [a, b) pulls,
from every hop of the old route whose units overlap [a, b), the layers of
the overlap. Chunks arrive as (unit, key|value, tensor chunk, length); the
collector turns them back into whole layers and refuses anything malformed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resplit.core.tensors import Assembler, TensorError, encode
from resplit.models.kv import LayerKV
from resplit.v1 import common_pb2, worker_pb2

from .errors import MigrationFailed

KINDS = ("key", "value")


@dataclass(frozen=True)
class Source:
    """Pull units [start, end) of the session's cache from ``hop``."""

    hop: common_pb2.Hop
    start: int
    end: int


def sources(start: int, end: int, old_hops: Sequence[common_pb2.Hop]) -> list[Source]:
    """The old hops overlapping [start, end), each with the overlap."""
    out = []
    for hop in old_hops:
        lo, hi = max(start, hop.units.start), min(end, hop.units.end)
        if lo < hi:
            out.append(Source(hop, lo, hi))
    covered = sum(s.end - s.start for s in out)
    if covered != end - start:
        raise MigrationFailed(
            f"the old route covers {covered} of the {end - start} units [{start}, {end}) this hop runs"
        )
    return out


class Collector:
    """Reassembles KvChunks into layers, checking what they claim."""

    def __init__(self, session_id: str, max_bytes: int) -> None:
        self.session_id = session_id
        self.max_bytes = max_bytes
        self._open: dict[tuple[int, str], Assembler] = {}
        self._done: dict[tuple[int, str], object] = {}
        self._length: dict[int, int] = {}
        self.bytes = 0

    def add(self, chunk: worker_pb2.KvChunk) -> None:
        if chunk.session_id != self.session_id:
            raise MigrationFailed(
                f"cache chunk for session {chunk.session_id!r}, expected {self.session_id!r}"
            )
        if chunk.kind not in KINDS:
            raise MigrationFailed(f"cache chunk of kind {chunk.kind!r}, expected key or value")
        key = (chunk.unit, chunk.kind)
        if key in self._done:
            raise MigrationFailed(f"the {chunk.kind} cache of unit {chunk.unit} arrived twice")
        self._length.setdefault(chunk.unit, chunk.length)
        if self._length[chunk.unit] != chunk.length:
            raise MigrationFailed(f"unit {chunk.unit}: key and value caches disagree on their length")
        self.bytes += len(chunk.tensor.data)
        if self.bytes > self.max_bytes:
            raise MigrationFailed(f"the cache exceeds {self.max_bytes} bytes")
        assembler = self._open.setdefault(key, Assembler())
        try:
            if assembler.add(chunk.tensor):
                self._done[key] = assembler.tensor()  # owns its buffer
                del self._open[key]
        except TensorError as exc:
            raise MigrationFailed(f"unit {chunk.unit} {chunk.kind} cache: {exc}") from None

    def layers(self) -> list[LayerKV]:
        if self._open:
            raise MigrationFailed(f"cache truncated: {sorted(self._open)} never completed")
        units = sorted({unit for unit, _ in self._done})
        missing = [u for u in units if (u, "key") not in self._done or (u, "value") not in self._done]
        if missing:
            raise MigrationFailed(f"units {missing} arrived without both key and value caches")
        return [
            LayerKV(unit - 1, self._done[(unit, "key")], self._done[(unit, "value")], self._length[unit])
            for unit in units
        ]


def chunks_of(
    layer: LayerKV, deployment: str, session_id: str, epoch: int, chunk_bytes: int
) -> list[worker_pb2.KvChunk]:
    """One layer's key and value caches as KvChunks (unit = block + 1)."""

    out = []
    for kind, tensor in (("key", layer.keys), ("value", layer.values)):
        for piece in encode(tensor, session_id=session_id, epoch=epoch, chunk_bytes=chunk_bytes):
            out.append(
                worker_pb2.KvChunk(
                    deployment=deployment,
                    session_id=session_id,
                    unit=layer.block + 1,
                    kind=kind,
                    tensor=piece,
                    epoch=epoch,
                    length=layer.length,
                )
            )
    return out
