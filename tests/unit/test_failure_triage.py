"""The orchestrator's triage of reported failures (services/orchestrator/core/triage.py)."""

from __future__ import annotations

from services.orchestrator.core.triage import Action, Triage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_reports_of_one_node_cost_one_check() -> None:
    triage = Triage(clock=Clock())
    assert triage.claim("w2", down=False) is Action.VERIFY
    assert triage.claim("w2", down=False) is Action.CHECKING
    assert triage.claim("w3", down=False) is Action.VERIFY  # another node: its own check


def test_a_node_found_alive_is_not_checked_again_within_the_quiet_time() -> None:
    clock = Clock()
    triage = Triage(quiet_s=1.0, clock=clock)
    assert triage.claim("w2", down=False) is Action.VERIFY
    triage.settle("w2", alive=True)
    clock.now += 0.5
    assert triage.claim("w2", down=False) is Action.RECENTLY_ALIVE
    clock.now += 0.6
    assert triage.claim("w2", down=False) is Action.VERIFY


def test_a_node_found_dead_is_checked_at_once_when_reported_alive_again() -> None:
    triage = Triage(clock=Clock())
    assert triage.claim("w2", down=False) is Action.VERIFY
    triage.settle("w2", alive=False)
    assert triage.claim("w2", down=True) is Action.ALREADY_DOWN
    # It heartbeat back (the registry reads it up): the next report checks it again.
    assert triage.claim("w2", down=False) is Action.VERIFY


def test_each_reporter_gets_a_bounded_number_of_reports_per_window() -> None:
    clock = Clock()
    triage = Triage(burst=3, window_s=1.0, clock=clock)
    assert [triage.admit("noisy") for _ in range(4)] == [True, True, True, False]
    assert triage.admit("other")
    clock.now += 1.0
    assert triage.admit("noisy")
