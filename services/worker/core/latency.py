"""Latency as the first hop sees it: every request's TTFT and duration, and each
session's TPOT.

Why the first hop: it sees every request of the sessions it answers, whoever
the client is (the SDK's ``ReportLatency`` needs a cooperative client), and it
is where the SLA's quantity is closest to the user's: a prompt arrives, its
first token leaves. Each step is timed from the request's arrival at this hop
to its token leaving it: the prompt's step is the time to first token
(``ttft``), each later step a time per output token (``tpot``; a step that
replays or pulls a moved cache counts its stall there), an encoder's step the
whole request (``request``). Samples wait here until the node agent writes them
to Redis on its next cycle (the data plane never waits on Redis).

Why decode steps are summed, not sent one by one: a sample per token made the
control plane's work grow with tokens per second. The monitor folded each one
in its own Redis round trip and the orchestrator parsed every one of the last
30 s each check: at 56 requests/s of 16 tokens (bench/overload.py, 2026-12-05),
about 900 samples a second took 11-21 % of a core in the orchestrator (py-spy:
two thirds of it parsing those XRANGEs) and 15 % in the monitor, on the cores
the workers decode on; summed as below, 1-3 % each. A session's decode steps between two
agent cycles now make one ``tpot`` sample, their mean, stamped with the first
step's time (so a sample never mixes steps from before a plan change with ones
after it in the orchestrator's "since the last change" window, whose cut is
the change's time). The samples grow with sessions x cycles + requests. A
stall still counts: it raises that session's mean for that cycle, and the
orchestrator's median over sessions and cycles keeps one stalled session from
moving the fit, as the median over tokens did.
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
class Decoding:
    """One session's decode steps since the last drain."""

    deployment: str
    first: float  # unix time of the first step
    total_ms: float = 0.0
    steps: int = 0


@dataclass
class FirstHopLatency:
    """Samples measured since the agent last drained them."""

    pending: list[Sample] = field(default_factory=list)
    decoding: dict[str, Decoding] = field(default_factory=dict)

    def step(
        self, deployment: str, generative: bool, prompt: bool, ms: float, now: float, session: str = ""
    ) -> None:
        """One step of ``session`` answered by this first hop, ``ms`` after its request arrived."""
        if generative and not prompt:
            decoding = self.decoding.get(session)
            if decoding is None:
                decoding = self.decoding[session] = Decoding(deployment, now)
            decoding.total_ms += ms
            decoding.steps += 1
            return
        if len(self.pending) >= MAX_PENDING:
            del self.pending[: len(self.pending) // 2]
        self.pending.append(Sample(deployment, TTFT if generative else REQUEST, ms, now))

    def drain(self) -> list[Sample]:
        """The requests' samples, then one ``tpot`` sample per session that decoded."""
        tpot = [Sample(d.deployment, TPOT, d.total_ms / d.steps, d.first) for d in self.decoding.values()]
        taken, self.pending, self.decoding = self.pending + tpot, [], {}
        return taken
