"""The soak's fault schedule: random, overlapping faults, the same for the same seed.

Pure: no process is touched here (tests/faults/soak.py plays the schedule). Faults
arrive as a Poisson process (mean gap ``mean_gap_s``) over the run but its last
``quiet_tail_s``, each of a kind drawn by weight and on a target drawn from that kind's
targets; a fault that lasts (a stopped worker, a CPU hog, a killed service before its
restart) holds for a drawn time, so later faults start while earlier ones still hold.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

#: kind -> (weight, shortest hold s, longest hold s); a hold of 0 is instantaneous.
KINDS: dict[str, tuple[float, float, float]] = {
    "worker_kill": (3, 0.5, 3.0),  # SIGKILL, restarted after the hold
    "worker_stop": (3, 0.5, 4.0),  # SIGSTOP, SIGCONT after the hold
    "control_kill": (3, 0.2, 2.0),  # SIGKILL of a control service, restarted after the hold
    "redis_restart_empty": (1, 0.2, 1.0),
    "redis_restart_data": (1, 0.2, 1.0),  # its keys restored on restart (persistence)
    "cpu_hog": (2, 2.0, 8.0),  # a busy process on the same cores
    "plan_apply": (2, 0.0, 0.0),  # an operator's rollout of another split
    "second_deployment": (2, 2.0, 6.0),  # deployed, served, undeployed after the hold
}


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    target: str
    hold_s: float

    @property
    def ends_s(self) -> float:
        return self.at_s + self.hold_s


def schedule(
    seed: int,
    duration_s: float,
    targets: dict[str, list[str]],
    mean_gap_s: float = 6.0,
    quiet_tail_s: float = 10.0,
) -> list[Fault]:
    """The faults of a run of ``duration_s``, by start time. ``targets`` names what each kind
    may hit (a kind without targets, or absent, is never drawn)."""
    if mean_gap_s <= 0:
        raise ValueError(f"mean_gap_s must be positive, got {mean_gap_s}")
    rng = random.Random(seed)
    kinds = [k for k in KINDS if targets.get(k)]
    if not kinds:
        return []
    weights = [KINDS[k][0] for k in kinds]
    faults: list[Fault] = []
    at = rng.expovariate(1 / mean_gap_s)
    while at < duration_s - quiet_tail_s:
        kind = rng.choices(kinds, weights)[0]
        _, shortest, longest = KINDS[kind]
        hold = round(rng.uniform(shortest, longest), 3)
        faults.append(Fault(round(at, 3), kind, rng.choice(sorted(targets[kind])), hold))
        at += rng.expovariate(1 / mean_gap_s)
    return faults


def by_kind(faults: list[Fault]) -> dict[str, int]:
    return dict(sorted(Counter(f.kind for f in faults).items()))


def overlapping(faults: list[Fault]) -> int:
    """Faults that start while an earlier one still holds."""
    count, latest_end = 0, float("-inf")
    for fault in faults:
        count += fault.at_s < latest_end
        latest_end = max(latest_end, fault.ends_s)
    return count
