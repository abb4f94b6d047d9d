"""The cost model's online correction (services/orchestrator/core/correction.py): fitted from
predicted vs measured signals, applied to the problem, converging on the real cost model."""

from __future__ import annotations

import pytest
from test_orchestrator_problem import MODEL, PLAN, _deployment, _env, _plan

from services.orchestrator.core.correction import (
    BOUNDS,
    OUTLIER,
    PROBES,
    Check,
    Correction,
    ErrorTally,
    OutlierGate,
    Sensitivity,
    checks,
    fit,
    outlying,
)
from services.orchestrator.core.decide import predicted_ms
from services.orchestrator.core.problem import build_problem
from services.splitter.core import convert
from services.splitter.core.problem import ProblemError
from services.splitter.core.solve import evaluate_current

SIGNALS = ("ttft", "tpot")
ONE_NODE = _plan((0, 34, "edge"))  # no hop: the factors alone


def _predict(correction: Correction, plan=PLAN) -> dict[str, float]:
    """The real splitter's prediction of ``plan`` under ``correction``."""
    problem = build_problem(_env(), _deployment(), plan, MODEL, correction=correction)
    cost = convert.breakdown_to_proto(evaluate_current(convert.problem_from_proto(problem)).cost)
    return {s: predicted_ms(cost, s) for s in SIGNALS}


def _sensitivities(plan=PLAN) -> list[Sensitivity]:
    raw, slower, delayed = (_predict(c, plan) for c in PROBES)
    return [Sensitivity.of(s, raw[s], slower[s], delayed[s]) for s in SIGNALS]


def test_the_correction_reaches_the_problem_and_the_identity_leaves_it_alone():
    plain = build_problem(_env(), _deployment(), PLAN, MODEL)
    assert build_problem(_env(), _deployment(), PLAN, MODEL, correction=Correction()) == plain
    fixed = build_problem(_env(), _deployment(), PLAN, MODEL, correction=Correction(2.0, 1.5, 3.0))
    assert (fixed.workload.prefill_factor, fixed.workload.decode_factor) == (2.0, 1.5)
    before = {(x.src, x.dst): x.rtt_ms for x in plain.links}
    assert all(x.rtt_ms == pytest.approx(before[x.src, x.dst] + 6.0) for x in fixed.links)
    fixed.workload.decode_factor = -1.0
    with pytest.raises(ProblemError, match=r"workload\.decode_factor"):
        convert.problem_from_proto(fixed)


def test_the_prediction_is_linear_in_every_term_on_the_real_cost_model():
    """What the fit assumes: base + k c + o h predicts the splitter's own answer off the probes."""
    truth = _predict(Correction(2.5, 1.5, 4.0))
    for s in _sensitivities():
        assert s.per_factor > 0 and s.per_hop_ms > 0
        assert s.predict(Correction(2.5, 1.5, 4.0)) == pytest.approx(truth[s.signal], rel=1e-6)


def test_on_one_node_the_fit_recovers_both_factors_and_the_error_vanishes():
    truth = Correction(3.0, 1.4)
    measured = _predict(truth, ONE_NODE)  # the "real" system: the model, slower per phase
    sensitivities = _sensitivities(ONE_NODE)
    assert all(s.per_hop_ms == 0 for s in sensitivities)
    correction = Correction()
    tally = ErrorTally()
    for _ in range(12):
        for check in checks(sensitivities, measured, correction):
            tally.add(check)
        correction = fit(correction, sensitivities, measured)
    assert correction.prefill == pytest.approx(3.0, rel=0.02)
    assert correction.decode == pytest.approx(1.4, rel=0.02)
    assert correction.hop_ms == 0.0  # nothing says anything about hops
    last = checks(sensitivities, measured, correction)
    assert all(abs(Check.error(c.corrected, c.measured)) < 0.01 for c in last)
    assert all(abs(Check.error(c.raw, c.measured)) > 0.3 for c in last)  # uncorrected: far off
    raw, corrected = tally.means()
    assert corrected < raw / 2


def test_across_hops_the_fit_explains_both_signals():
    """Two signals, three terms: not every term is identified, but the signals are fitted."""
    measured = _predict(Correction(2.0, 1.5, 3.0))
    sensitivities = _sensitivities()
    correction = Correction()
    for _ in range(20):
        correction = fit(correction, sensitivities, measured)
    assert all(
        abs(Check.error(c.corrected, c.measured)) < 0.03 for c in checks(sensitivities, measured, correction)
    )


def test_one_step_moves_part_of_the_way_and_one_signal_holds_the_hop_term():
    sensitivities = _sensitivities()
    measured = {"ttft": _predict(Correction(3.0))["ttft"]}  # TTFT only: one equation
    step = fit(Correction(1.0, 1.0, 2.0), sensitivities, measured)
    assert 1.0 < step.prefill < 3.0  # a step of RATE toward it, not the whole way
    assert step.hop_ms == 2.0 and step.decode == 1.0  # held: one equation, one term


def test_the_correction_is_bounded_and_no_signal_changes_nothing():
    sensitivities = _sensitivities()
    absurd = {s: v * 1000 for s, v in _predict(Correction()).items()}
    correction = Correction()
    for _ in range(30):
        correction = fit(correction, sensitivities, absurd)
    for term, (low, high) in BOUNDS.items():
        assert low <= correction.value(term) <= high
    assert correction.prefill == pytest.approx(BOUNDS["prefill"][1])
    tiny = {s: v / 1000 for s, v in _predict(Correction()).items()}
    for _ in range(30):
        correction = fit(correction, sensitivities, tiny)
    for term, (low, high) in BOUNDS.items():
        assert low <= correction.value(term) <= high
    assert fit(Correction(1.5, 1.2, 1.0), sensitivities, {}) == Correction(1.5, 1.2, 1.0)
    assert fit(Correction(1.5, 1.2, 1.0), sensitivities, {"ttft": 0.0}) == Correction(1.5, 1.2, 1.0)
    assert checks(sensitivities, {"ttft": 0.0}, Correction()) == []


def test_a_check_far_off_the_corrected_prediction_is_held_once_then_fitted_if_it_stays():
    sensitivities = _sensitivities()
    correction = Correction(2.0, 1.2, 0.0)
    near = _predict(correction)
    assert not outlying(sensitivities, near, correction)
    assert not outlying(sensitivities, {s: v * (OUTLIER - 0.1) for s, v in near.items()}, correction)
    for off in (OUTLIER + 0.5, 1 / (OUTLIER + 0.5)):  # either way
        assert outlying(sensitivities, {**near, "tpot": near["tpot"] * off}, correction)
    gate = OutlierGate()
    # a transient (a node loaded since the last E(t) sample): held; the checks after it fitted
    assert [gate.admits(o) for o in (False, True, False, False)] == [True, False, True, True]
    # one that stays is real: only its first check is held
    assert [gate.admits(o) for o in (True, True, True, False)] == [False, True, True, True]


def test_the_tally_gives_the_mean_and_a_median_one_transient_does_not_set():
    tally = ErrorTally()
    assert all(v != v for v in (*tally.means(), *tally.medians()))  # nan before any check
    for _ in range(9):
        tally.add(Check("tpot", measured=11.0, raw=10.0, corrected=11.0))
    tally.add(Check("tpot", measured=220.0, raw=10.0, corrected=11.0))  # a load step, 20x off
    raw_mean, corrected_mean = tally.means()
    raw_median, corrected_median = tally.medians()
    assert raw_mean == pytest.approx((9 * 0.1 + 21.0) / 10)
    assert corrected_mean == pytest.approx(19.0 / 10)
    assert (raw_median, corrected_median) == (pytest.approx(0.1), pytest.approx(0.0))
