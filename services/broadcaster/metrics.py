"""Prometheus metrics of rollouts (served on the /metrics side port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ROLLOUT_PHASE_SECONDS = Histogram(
    "resplit_rollout_phase_seconds",
    "Time spent in each rollout phase",
    ["phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ROLLOUTS = Counter("resplit_rollouts_total", "Rollouts by outcome", ["outcome"])

for _phase in ("prepare", "commit", "drain", "release"):
    ROLLOUT_PHASE_SECONDS.labels(phase=_phase)
for _outcome in ("committed", "aborted", "unchanged"):
    ROLLOUTS.labels(outcome=_outcome)


class PrometheusObserver:
    """The rollout core's ``Observer``."""

    def phase(self, phase: str, seconds: float) -> None:
        ROLLOUT_PHASE_SECONDS.labels(phase=phase).observe(seconds)

    def outcome(self, outcome: str) -> None:
        ROLLOUTS.labels(outcome=outcome).inc()
