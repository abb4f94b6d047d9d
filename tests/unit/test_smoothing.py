"""EWMA over a time window, link level shifts, utilization from CPU-time deltas."""

from __future__ import annotations

import math

import pytest

from resplit.core.smoothing import Ewma, LinkEstimator, utilization


def test_ewma_first_sample_is_the_value_and_weight_follows_elapsed_time():
    ewma = Ewma(window_s=10.0)
    assert ewma.update(100.0, t=0.0) == 100.0
    # One full window later a new sample gets weight 1 - 1/e.
    value = ewma.update(200.0, t=10.0)
    assert value == pytest.approx(100.0 + (1 - math.exp(-1)) * 100.0)


def test_ewma_forgets_over_the_window_whatever_the_sample_rate():
    sparse, dense = Ewma(5.0), Ewma(5.0)
    sparse.update(0.0, 0.0)
    dense.update(0.0, 0.0)
    sparse.update(100.0, 5.0)
    for i in range(1, 51):
        dense.update(100.0, i * 0.1)
    # Both cover five seconds of a step to 100: both are at 1 - 1/e of it.
    assert sparse.value == pytest.approx(dense.value, rel=1e-9)


def test_ewma_refuses_bad_input():
    with pytest.raises(ValueError):
        Ewma(0.0)
    with pytest.raises(ValueError):
        Ewma(1.0).update(float("nan"), 0.0)


def test_link_estimator_damps_noise_but_follows_a_confirmed_shift_in_two_samples():
    est = LinkEstimator(alpha=0.3, shift_ratio=1.5)
    for sample in (50.0, 55.0, 45.0, 52.0):
        est.update(sample)
    assert 45.0 < est.value < 55.0
    assert est.update(20.0) == pytest.approx(est.value)  # one outlier: held
    assert 45.0 < est.value < 55.0
    assert est.update(21.0) == 21.0  # second one agrees: a new level, where the second puts it


def test_link_estimator_ignores_a_single_spike():
    est = LinkEstimator()
    est.update(50.0)
    est.update(500.0)
    assert est.value == 50.0
    est.update(51.0)
    assert 50.0 <= est.value <= 51.0
    with pytest.raises(ValueError):
        est.update(0.0)


def test_utilization_is_busy_time_over_the_cores_given():
    assert utilization(1.5, 1.0, 1.5) == 1.0
    assert utilization(0.5, 1.0, 2.0) == 0.25
    assert utilization(5.0, 1.0, 1.0) == 1.0  # clamped
    assert utilization(1.0, 0.0, 1.0) == 0.0
