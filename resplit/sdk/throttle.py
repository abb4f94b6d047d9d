"""Client-side adaptive throttling: a client whose first hop keeps refusing it as full
refuses part of its own new sessions at once, instead of sending them to be refused.

Why: under load far above what the workers serve, every refused session still costs a
Forward stream opened, read, answered RESOURCE_EXHAUSTED and closed, in the worker's
event loop and in the client, on the cores the admitted sessions compute on. In
bench/overload.py at 4x the unloaded rate (2026-12-05, about 210 refusals a second on
two cores) that work raised the admitted requests' latency by a fifth, and the stack
served 0.73-0.85 of its maximum.

The rule is the client-side throttling of Google's SRE book ("Handling Overload"):
over the last ``window_s``, of ``requests`` attempts ``accepts`` were admitted; a new
attempt is refused here with probability max(0, (requests - k * accepts) / (requests + 1)).
While the hop admits everything, requests == accepts and nothing is refused here; nor
until the hop refused ``min_refused`` (10) sessions within the window: the rule alone
refuses half the next sessions after a single refusal (requests 1, accepts 0), where a
worker full for a moment is ordinary and its one refusal is the caller's to handle. With
k = 2 the hop still sees about twice what it admits, so a freed slot is soon taken, and
the client sees at once when the hop has room again (its acceptances climb). Only what
overload decides counts: a session admitted, a refusal RESOURCE_EXHAUSTED with a retry
hint, or one refused here. A lost hop (UNAVAILABLE) counts for nothing, so a failure
never turns into local refusals that would stop a session's recovery.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import grpc

from ..core.limits import RETRY_METADATA_KEY, retry_hint

#: The hint a local refusal carries before the hop gave one (the workers' default).
DEFAULT_HINT_MS = 100


@dataclass
class Throttle:
    """Requests and acceptances of one first hop over the last ``window_s`` seconds."""

    k: float = 2.0
    window_s: float = 10.0
    #: Refusals by the hop within the window before the client refuses anything itself.
    min_refused: int = 10
    requests: deque[float] = field(default_factory=deque)
    accepts: deque[float] = field(default_factory=deque)
    refusals: deque[float] = field(default_factory=deque)
    #: The retry hint (ms) the hop's last refusal carried.
    hint_ms: int = DEFAULT_HINT_MS

    def _expire(self, now: float) -> None:
        for times in (self.requests, self.accepts, self.refusals):
            while times and times[0] <= now - self.window_s:
                times.popleft()

    def probability(self, now: float) -> float:
        """The chance that an attempt now is refused here."""
        self._expire(now)
        if len(self.refusals) < self.min_refused:
            return 0.0
        return max(0.0, (len(self.requests) - self.k * len(self.accepts)) / (len(self.requests) + 1))

    def admits(self, now: float, draw: float) -> bool:
        """Whether to send an attempt now (``draw``: uniform in [0, 1)). One refused here
        counts as a request, as the book's rule has it: it is load the client offered."""
        if draw >= self.probability(now):
            return True
        self.requests.append(now)
        return False

    def admitted(self, now: float) -> None:
        """The hop admitted a session."""
        self.requests.append(now)
        self.accepts.append(now)

    def refused(self, now: float, hint_ms: int) -> None:
        """The hop refused a session as full, with a retry hint."""
        self.requests.append(now)
        self.refusals.append(now)
        self.hint_ms = hint_ms


class Throttled(grpc.RpcError):
    """A session this client refused itself: its first hop has been refusing most of them.
    It reads as the hop's own refusal would (RESOURCE_EXHAUSTED, ``retry-after-ms``), so a
    caller that retries or answers 429 on overload treats both alike."""

    def __init__(self, address: str, throttle: Throttle, now: float) -> None:
        super().__init__()
        self.hint_ms = throttle.hint_ms
        self._details = (
            f"refused by this client: the first hop {address} admitted {len(throttle.accepts)} of the "
            f"last {len(throttle.requests)} sessions in {throttle.window_s:g} s (client-side throttling, "
            f"k={throttle.k:g}); {retry_hint(throttle.hint_ms)}"
        )

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((RETRY_METADATA_KEY, str(self.hint_ms)),)

    def __str__(self) -> str:
        return f"RESOURCE_EXHAUSTED: {self._details}"
