"""Link bandwidth measured passively, from the activations this worker really sends.

Why: an active probe says what the link could carry a moment ago; the real
transfers say what it carries now, at no extra traffic. Only transfers large
enough to be limited by the link (not by one round trip) count: a decode
step's few kB measure latency, a prefill's hundreds of kB measure bandwidth.
The agent drains the totals once per cycle into the same smoothed estimate
the probes feed.
"""

from __future__ import annotations

from collections import defaultdict

MIN_BYTES = 64 * 1024  # below gRPC's initial flow-control window a write returns before the link is used


class PassiveLinks:
    def __init__(self, min_bytes: int = MIN_BYTES) -> None:
        self.min_bytes = min_bytes
        self._bytes: dict[str, int] = defaultdict(int)
        self._seconds: dict[str, float] = defaultdict(float)

    def record(self, peer: str, nbytes: int, seconds: float) -> None:
        """One transfer of ``nbytes`` to ``peer`` that took ``seconds`` to write out."""
        if peer and nbytes >= self.min_bytes and seconds > 0:
            self._bytes[peer] += nbytes
            self._seconds[peer] += seconds

    def drain(self) -> dict[str, float]:
        """Mbit/s per peer since the last drain (bytes over time of the transfers)."""
        rates = {peer: self._bytes[peer] * 8 / self._seconds[peer] / 1e6 for peer in self._bytes}
        self._bytes.clear()
        self._seconds.clear()
        return rates
