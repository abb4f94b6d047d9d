"""The exact solver against brute force on 2,000+ random small problems.

Every instance: up to 10 units and 5 nodes, random trust, memory (often too
little for one node, so nodes host several segments), background load, request
rate, links (some missing), soft or hard privacy, migration weight. EXACT must
reach brute force's optimum (and agree on feasibility), and no plan it returns
may break constraints (3), (4) or (5), checked by code that shares nothing
with the solver.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from splitter_cases import check_constraints, problems

from services.splitter.core import brute, costmodel, exact, instance
from services.splitter.core.problem import Mode, Objective, Problem

SETTINGS = {"deadline": None, "derandomize": True, "suppress_health_check": [HealthCheck.too_slow]}


def _path(detail: str) -> str:
    if "MILP" in detail:
        return "MILP"
    if "column generation" in detail:
        return "column generation closed the gap"
    return "DP certificate"


def _compare(problem: Problem, mode: Mode) -> None:
    inst = instance.build(problem, mode)
    result = exact.solve(inst)
    oracle = brute.brute_force(inst)
    assert result.proven
    assert (result.assign is None) == (oracle is None), result.detail
    if oracle is None:
        event("infeasible")
        return
    event(_path(result.detail))
    plan = inst.plan_of(result.assign)
    assert check_constraints(problem, plan) == []
    reference = costmodel.evaluate(problem, plan)
    assert reference.feasible, reference.violations
    best = instance.score(inst, oracle)
    if problem.policy.objective is Objective.THROUGHPUT:
        assert reference.breakdown.bottleneck_ms == pytest.approx(float(best.bottleneck[0]), rel=1e-7)
    assert reference.breakdown.phi == pytest.approx(float(best.phi[0]), rel=1e-7, abs=1e-9)
    if mode is Mode.PLACEMENT_ONLY:
        assert plan.boundaries() == problem.current.boundaries()


@settings(max_examples=800, **SETTINGS)
@given(problems(Objective.LATENCY, Mode.RESPLIT))
def test_resplit_is_optimal_and_feasible(problem):
    _compare(problem, Mode.RESPLIT)


@settings(max_examples=600, **SETTINGS)
@given(problems(Objective.LATENCY, Mode.PLACEMENT_ONLY))
def test_placement_only_is_optimal_and_keeps_the_boundaries(problem):
    _compare(problem, Mode.PLACEMENT_ONLY)


@settings(max_examples=400, **SETTINGS)
@given(problems(Objective.LATENCY, Mode.RESPLIT, reuse=True))
def test_a_shared_trusted_node_is_handled_exactly(problem):
    """The embedding and head share the one trusted node (S1, S3), whose memory binds node-wide."""
    _compare(problem, Mode.RESPLIT)


@settings(max_examples=350, **SETTINGS)
@given(problems(Objective.THROUGHPUT, Mode.RESPLIT))
def test_throughput_resplit_minimises_the_bottleneck_then_phi(problem):
    _compare(problem, Mode.RESPLIT)


@settings(max_examples=250, **SETTINGS)
@given(problems(Objective.THROUGHPUT, Mode.PLACEMENT_ONLY))
def test_throughput_placement_only_minimises_the_bottleneck_then_phi(problem):
    _compare(problem, Mode.PLACEMENT_ONLY)


@settings(max_examples=300, **SETTINGS)
@given(problems(Objective.LATENCY, Mode.RESPLIT))
def test_the_fast_scorer_agrees_with_the_reference_cost_model(problem):
    """The solvers' vectorised scorer and costmodel.evaluate are two codings of one definition."""
    inst = instance.build(problem, Mode.RESPLIT)
    rng = np.random.default_rng(problem.num_units * 7919 + len(problem.nodes))
    assigns = rng.integers(0, len(problem.nodes), size=(8, problem.num_units))
    scores = instance.score(inst, assigns)
    for k, assign in enumerate(assigns):
        reference = costmodel.evaluate(problem, inst.plan_of(assign))
        assert bool(scores.feasible[k]) == reference.feasible, reference.violations
        if reference.feasible:
            assert float(scores.phi[k]) == pytest.approx(reference.breakdown.phi, rel=1e-9, abs=1e-9)
            assert float(scores.bottleneck[k]) == pytest.approx(reference.breakdown.bottleneck_ms, rel=1e-9)
