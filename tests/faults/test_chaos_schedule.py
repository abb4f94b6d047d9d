"""The soak's fault schedule (tests/faults/chaos.py): pure, no processes."""

from __future__ import annotations

import pytest
from chaos import KINDS, by_kind, overlapping, schedule

TARGETS = {
    "worker_kill": ["worker-0", "worker-1"],
    "worker_stop": ["worker-0", "worker-1"],
    "control_kill": ["orchestrator", "broadcaster"],
    "redis_restart_empty": ["redis"],
    "redis_restart_data": ["redis"],
    "cpu_hog": ["host"],
    "plan_apply": ["soak"],
    "second_deployment": ["soak-2"],
}


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another():
    first = schedule(26, 600, TARGETS)
    assert first == schedule(26, 600, TARGETS)
    assert first != schedule(27, 600, TARGETS)


def test_a_ten_minute_schedule_hits_every_kind_with_overlaps_and_a_quiet_tail():
    faults = schedule(26, 600, TARGETS, mean_gap_s=6, quiet_tail_s=10)
    assert 60 <= len(faults) <= 150  # about 600 / 6
    assert set(by_kind(faults)) == set(KINDS)
    assert overlapping(faults) > 0
    assert all(0 < f.at_s < 590 for f in faults)
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    for fault in faults:
        _, shortest, longest = KINDS[fault.kind]
        assert shortest <= fault.hold_s <= longest and fault.target in TARGETS[fault.kind]


def test_kinds_without_targets_are_never_drawn():
    faults = schedule(3, 300, {"cpu_hog": ["host"], "worker_kill": []})
    assert faults and {f.kind for f in faults} == {"cpu_hog"}
    assert schedule(3, 300, {}) == []
    with pytest.raises(ValueError, match="mean_gap_s"):
        schedule(3, 300, TARGETS, mean_gap_s=0)


def test_overlapping_counts_faults_that_start_while_another_holds():
    from chaos import Fault

    faults = [
        Fault(0, "cpu_hog", "host", 5),
        Fault(1, "plan_apply", "soak", 0),
        Fault(6, "cpu_hog", "host", 1),
    ]
    assert overlapping(faults) == 1


def test_the_report_finds_when_no_trusted_worker_was_up():
    """The soak's report (soak.py) names the windows when both trusted workers were down or
    stopped at once: the model unplaceable, the one cause a failed request may have."""
    from types import SimpleNamespace

    from chaos import Fault
    from soak import Played, Soak

    def played(kind: str, target: str, start: float, end: float) -> Played:
        return Played(Fault(start, kind, target, end - start), start, ended_s=end)

    run = SimpleNamespace(
        played=[
            played("worker_kill", "worker-0", 10.0, 30.0),
            played("worker_stop", "worker-1", 25.0, 28.0),  # within worker-0's: 25-28
            played("worker_kill", "worker-1", 40.0, 60.0),
            played("worker_stop", "worker-0", 55.0, 70.0),  # overlaps worker-1's: 55-60
            played("worker_kill", "worker-2", 0.0, 100.0),  # not trusted
            played("cpu_hog", "host", 0.0, 100.0),
        ]
    )
    assert Soak.no_trusted_worker(run) == [(25.0, 28.0), (55.0, 60.0)]
