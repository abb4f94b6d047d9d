"""Smoothing of noisy telemetry: a time-aware EWMA and a link estimator.

Why time-aware: samples arrive irregularly (requests end when they end), so a
fixed per-sample weight would make the window depend on traffic. With
``alpha = 1 - exp(-dt / window)`` a sample's weight depends on how much time it
covers, and the EWMA forgets over the window Δt whatever the sample rate.

Why a level-shift rule for links: a plain EWMA that damps probe noise also
delays a real change (50 → 20 Mbit/s) by many cycles, and the orchestrator
would react late. Two consecutive samples that both disagree with the
estimate by more than ``shift_ratio`` in the same direction are a new level,
not noise: the estimate jumps to their mean (one probe alone is too noisy to
be the new level by itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Ewma:
    """Exponentially weighted moving average over a time window (seconds)."""

    window_s: float
    value: float | None = None
    last_t: float | None = None
    samples: int = 0

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s must be positive, got {self.window_s}")

    def update(self, sample: float, t: float) -> float:
        """Fold in ``sample`` taken at time ``t``; returns the new average."""
        if not math.isfinite(sample):
            raise ValueError(f"sample must be finite, got {sample}")
        if self.value is None or self.last_t is None:
            self.value = sample
        else:
            dt = max(t - self.last_t, 0.0)
            alpha = 1.0 - math.exp(-dt / self.window_s) if dt > 0 else 1.0 / (self.samples + 1)
            alpha = max(alpha, 1e-3)  # same-instant bursts still count a little
            self.value += alpha * (sample - self.value)
        self.last_t = t if self.last_t is None else max(self.last_t, t)
        self.samples += 1
        return self.value


@dataclass
class LinkEstimator:
    """Smoothed estimate of one link quantity (bandwidth or RTT)."""

    alpha: float = 0.3
    shift_ratio: float = 1.5
    value: float | None = None
    _pending: int = 0  # +1 / -1: direction of one unconfirmed out-of-band sample

    def update(self, sample: float) -> float:
        """Fold in one positive sample; returns the estimate."""
        if not (sample > 0 and math.isfinite(sample)):
            raise ValueError(f"link sample must be positive and finite, got {sample}")
        if self.value is None:
            self.value = sample
            return sample
        ratio = sample / self.value
        direction = 1 if ratio > self.shift_ratio else -1 if ratio < 1 / self.shift_ratio else 0
        if direction and direction == self._pending:
            # Confirmed: a new level, where the confirming sample puts it. The first
            # out-of-band sample is often caught in the change itself (a qdisc or route
            # change drops packets and TCP recovers during that probe), so averaging it
            # in left a rate change to 20 Mbit/s reading 13-17 for several cycles.
            self.value, self._pending = sample, 0
        elif direction:
            # One outlier: hold the estimate, wait for a second.
            self._pending = direction
        else:
            self._pending = 0
            self.value += self.alpha * (sample - self.value)
        return self.value


def utilization(busy_delta_s: float, wall_delta_s: float, cores: float) -> float:
    """Share of ``cores`` kept busy over a wall interval, clamped to [0, 1].

    ``busy_delta_s`` is CPU time consumed (cgroup cpuacct or process times)
    over ``wall_delta_s``; a node given 1.5 cores that burns 1.5 CPU-seconds
    per second is fully used."""
    if wall_delta_s <= 0 or cores <= 0:
        return 0.0
    return min(max(busy_delta_s / (wall_delta_s * cores), 0.0), 1.0)
