"""How soon a service re-checks its readiness: soon while it is not ready, then once per interval."""

from __future__ import annotations

import pytest

from resplit.rpc.server import FIRST_RECHECK_S, recheck_delay


def _delays(states: list[bool], interval: float = 1.0) -> list[float]:
    """The delay after each check, for a run of readiness results."""
    delays, was_ready, delay = [], None, interval
    for ready in states:
        delay = recheck_delay(ready, was_ready, delay, interval)
        delays.append(delay)
        was_ready = ready
    return delays


def test_a_starting_service_is_rechecked_soon_then_less_often_up_to_the_interval():
    assert _delays([False] * 7) == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_a_ready_service_is_rechecked_once_per_interval():
    assert _delays([True, True, True]) == [1.0, 1.0, 1.0]
    assert _delays([False, False, True, True]) == pytest.approx([0.05, 0.1, 1.0, 1.0])


def test_losing_a_dependency_starts_the_quick_rechecks_again():
    assert _delays([True, False, False, True, False]) == pytest.approx([1.0, 0.05, 0.1, 1.0, 0.05])


def test_the_interval_caps_every_delay():
    assert _delays([False, False], interval=0.02) == pytest.approx([0.02, 0.02])
    assert FIRST_RECHECK_S < 1.0
