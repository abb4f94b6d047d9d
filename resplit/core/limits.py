"""Admission of RPCs: a cap per service and per client identity, and the retry hint.

Why: without a cap, every open stream or waiting call holds memory in the service
(its messages, its task, a session's cache on a worker), so enough slow or hostile
clients grow a service without bound. A service admits at most ``max_rpcs`` RPCs
at once (a stream counts until it ends), and one client identity (its certificate's
name, else its address) at most ``max_rpcs_per_client`` of them, so one flood cannot
take every slot from the other services that call this one. An RPC over either cap
is refused at once with RESOURCE_EXHAUSTED and a hint of when to retry; nothing
queues. The hint is how a caller tells an overload worth retrying from a limit that
retrying cannot fix (a request too large), which carries none.

Pure logic: the gRPC interceptor (resplit/rpc/limits.py) asks and tells this.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

#: How a refusal carries its hint in its message (also in trailing metadata
#: ``retry-after-ms``): a hint that crossed hops keeps only the message.
RETRY_HINT = re.compile(r"retry after (\d{1,7}) ms")
RETRY_METADATA_KEY = "retry-after-ms"
#: Request metadata of a Forward stream: the session it opens, so a full worker refuses a
#: new session before its stream handler runs (services/worker/admission.py).
SESSION_METADATA_KEY = "resplit-session"


def retry_hint(retry_after_ms: int) -> str:
    """The words of a refusal's hint, as :data:`RETRY_HINT` reads them."""
    return f"retry after {retry_after_ms} ms"


def hint_in(details: str) -> int | None:
    """The hint (ms) in a refusal's message, or None: not an overload worth retrying."""
    match = RETRY_HINT.search(details or "")
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Caps:
    """The caps of one service (0: no cap)."""

    max_rpcs: int = 0
    max_rpcs_per_client: int = 0
    retry_after_ms: int = 100

    def __post_init__(self) -> None:
        if self.max_rpcs < 0 or self.max_rpcs_per_client < 0 or self.retry_after_ms < 0:
            raise ValueError(f"caps must not be negative: {self}")


@dataclass(frozen=True)
class Refusal:
    """Why an RPC was not admitted, and when to try again."""

    reason: str
    retry_after_ms: int

    @property
    def message(self) -> str:
        return f"overloaded: {self.reason}; {retry_hint(self.retry_after_ms)}"


class Admission:
    """The RPCs in flight, in all and per client; admits or refuses the next one."""

    def __init__(self, caps: Caps, service: str = "this service") -> None:
        self.caps = caps
        self.service = service
        self.in_flight = 0
        self._per_client: Counter[str] = Counter()
        #: RPCs refused so far (all caps together).
        self.refused = 0

    def of(self, client: str) -> int:
        """RPCs of ``client`` in flight."""
        return self._per_client[client]

    def admit(self, client: str) -> Refusal | None:
        """Take a slot for one RPC of ``client`` (None), or say why not (nothing taken)."""
        caps = self.caps
        if caps.max_rpcs and self.in_flight >= caps.max_rpcs:
            reason = f"{self.service} has {self.in_flight} RPCs in flight (limit {caps.max_rpcs}, --max-rpcs)"
        elif caps.max_rpcs_per_client and self._per_client[client] >= caps.max_rpcs_per_client:
            reason = (
                f"client {client!r} has {self._per_client[client]} RPCs in flight at {self.service} "
                f"(limit {caps.max_rpcs_per_client}, --max-rpcs-per-client)"
            )
        else:
            self.in_flight += 1
            self._per_client[client] += 1
            return None
        self.refused += 1
        return Refusal(reason, caps.retry_after_ms)

    def release(self, client: str) -> None:
        """One admitted RPC of ``client`` ended (however it ended)."""
        if self._per_client[client] <= 0:
            raise ValueError(f"release without admit for client {client!r}")
        self.in_flight -= 1
        self._per_client[client] -= 1
        if not self._per_client[client]:
            del self._per_client[client]


def client_identity(common_names: list[str], peer: str) -> str:
    """Who a call comes from: its certificate's common name under mutual TLS (``cn:worker-1``),
    else its address without the port (``ip:10.0.0.7``): one machine's clients share a slot
    count. The bearer token is one for everyone, so it names no one."""
    if common_names:
        return f"cn:{common_names[0]}"
    if peer.startswith(("ipv4:", "ipv6:")):
        host = peer.split(":", 1)[1]
        host = host[1 : host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        return f"ip:{host}"
    return peer or "unknown"
