"""Latency as the first hop sees it: every request's TTFT, TPOT and duration.

Why the first hop: it sees every request of the sessions it answers, whoever
the client is (the SDK's ``ReportLatency`` needs a cooperative client), and it
is where the SLA's quantity is closest to the user's: a prompt arrives, its
first token leaves. Each step is timed from the request's arrival at this hop
to its token leaving it: the prompt's step is the time to first token
(``ttft``), each later step a time per output token (``tpot``; a step that
replays or pulls a moved cache counts its stall there), an encoder's step the
whole request (``request``). Samples wait here until the node agent writes them
to Redis on its next cycle (the data plane never waits on Redis).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TTFT, TPOT, REQUEST = "ttft", "tpot", "request"
#: Samples kept between two agent cycles at most (the oldest are dropped beyond).
MAX_PENDING = 50_000


@dataclass(frozen=True)
class Sample:
    deployment: str
    signal: str
    ms: float
    timestamp: float


@dataclass
class FirstHopLatency:
    """Samples measured since the agent last drained them."""

    pending: list[Sample] = field(default_factory=list)

    def step(self, deployment: str, generative: bool, prompt: bool, ms: float, now: float) -> None:
        """One step answered by this first hop, ``ms`` after its request arrived."""
        signal = (TTFT if prompt else TPOT) if generative else REQUEST
        if len(self.pending) >= MAX_PENDING:
            del self.pending[: len(self.pending) // 2]
        self.pending.append(Sample(deployment, signal, ms, now))

    def drain(self) -> list[Sample]:
        taken, self.pending = self.pending, []
        return taken
