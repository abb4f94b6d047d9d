"""Solver behaviour beyond the random properties: node reuse, modes, objectives, baselines, the wire."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from splitter_cases import LLAMA3_8B, check_constraints, edge_mec_cloud

from resplit.core.profiles import profile
from resplit.v1 import common_pb2, splitter_pb2
from services.splitter.core import brute, convert, exact, instance
from services.splitter.core.brute import TooLarge
from services.splitter.core.problem import (
    GIB,
    Link,
    Mode,
    Node,
    Objective,
    Plan,
    Policy,
    Problem,
    ProblemError,
    Segment,
    SolverKind,
    Workload,
)
from services.splitter.core.solve import solve

#: Llama-3-8B's shapes with 8 blocks: 10 units, small enough for brute force over two nodes.
SMALL = profile({**LLAMA3_8B, "num_hidden_layers": 8}, "float16")


def _shared_edge(edge_gib: float) -> Problem:
    """A fast trusted edge with little memory, a slower cloud: S1 and S3 share the edge (paper, Sec. III)."""
    nodes = (
        Node("edge", int(edge_gib * GIB), 4e14, 0.0, True, "", 3e12),
        Node("cloud", 40 * GIB, 1e14, 0.2, False, "", 1e12),
    )
    links = (Link("edge", "cloud", 1000.0, 5.0), Link("cloud", "edge", 1000.0, 5.0))
    return Problem(SMALL, nodes, links, Policy(private_depth=0), Workload(256, 32))


@pytest.mark.parametrize("edge_gib", [2.5, 3.0, 3.5, 4.0])
def test_s1_and_s3_on_one_trusted_node_respect_its_memory_exactly(edge_gib):
    problem = _shared_edge(edge_gib)
    inst = instance.build(problem, Mode.RESPLIT)
    result = exact.solve(inst)
    plan = inst.plan_of(result.assign)
    assert check_constraints(problem, plan) == []
    owners = plan.node_of_units(problem.num_units)
    assert owners[0] == owners[-1] == "edge" and "cloud" in owners
    # The DP alone would overfill the edge (each of S1, S3 fits, both do not); the answer is still optimal.
    assert "MILP" in result.detail or "column generation" in result.detail
    oracle = brute.brute_force(inst)
    assert instance.score(inst, result.assign).phi[0] == pytest.approx(instance.score(inst, oracle).phi[0])


def test_greedy_is_a_feasible_baseline_that_exact_never_loses_to():
    problem = _shared_edge(3.0)
    best = solve(problem, kind=SolverKind.EXACT)
    baseline = solve(problem, kind=SolverKind.GREEDY)
    assert check_constraints(problem, baseline.plan) == []
    assert best.cost.phi <= baseline.cost.phi
    assert baseline.proven is False and best.proven is True


def test_brute_force_refuses_what_it_cannot_enumerate():
    problem = edge_mec_cloud(1000, 0.1)
    with pytest.raises(TooLarge, match=r"at most 200000 assignments; this problem has .* \(use EXACT\)"):
        solve(problem, kind=SolverKind.BRUTE_FORCE)


def _with_current(problem: Problem, weight: float) -> Problem:
    current = Plan((Segment(0, 2, "edge"), Segment(2, 33, "cloud"), Segment(33, 34, "edge")))
    return dataclasses.replace(
        problem, current=current, policy=dataclasses.replace(problem.policy, migration_weight=weight)
    )


def test_placement_only_keeps_the_boundaries_and_moves_segments():
    problem = _with_current(edge_mec_cloud(10, 0.1), 0.0)  # the cloud link is thin now: move to the MEC
    moved = solve(problem, Mode.PLACEMENT_ONLY)
    assert [(s.start, s.end) for s in moved.plan.segments] == [(0, 2), (2, 33), (33, 34)]
    assert [s.node_id for s in moved.plan.segments] == ["edge", "mec", "edge"]
    assert moved.cost.migration_gib == pytest.approx(31 * 436_224_000 / GIB, rel=0.01)


def test_a_high_migration_weight_keeps_the_current_placement():
    problem = _with_current(edge_mec_cloud(10, 0.1), 1e6)  # moving a GiB costs more than any latency gain
    kept = solve(problem, Mode.PLACEMENT_ONLY)
    assert [s.node_id for s in kept.plan.segments] == ["edge", "cloud", "edge"]
    assert kept.cost.migration_gib == 0.0


def test_resplit_can_beat_placement_only():
    problem = _with_current(edge_mec_cloud(1000, 0.95, edge_free_gib=8), 0.0)
    resplit = solve(problem, Mode.RESPLIT)
    placement = solve(problem, Mode.PLACEMENT_ONLY)
    assert resplit.cost.phi <= placement.cost.phi


def test_the_throughput_objective_minimises_the_slowest_stage():
    latency_first = edge_mec_cloud(1000, 0.1)
    throughput_first = dataclasses.replace(
        latency_first, policy=dataclasses.replace(latency_first.policy, objective=Objective.THROUGHPUT)
    )
    fast = solve(latency_first)
    wide = solve(throughput_first)
    assert wide.cost.bottleneck_ms <= fast.cost.bottleneck_ms
    assert wide.cost.throughput_tps == pytest.approx(1000.0 / wide.cost.bottleneck_ms)
    assert wide.detail.startswith("throughput:")


def test_the_u_term_spreads_load_when_beta_is_large():
    """With a heavy request rate and a large beta, the peak utilization goes down, latency may go up."""
    base = edge_mec_cloud(1000, 0.3)
    busy = dataclasses.replace(base, workload=Workload(512, 64, request_rate=0.5))
    calm = solve(busy)
    balanced = solve(dataclasses.replace(busy, policy=dataclasses.replace(busy.policy, beta=1e6)))
    assert balanced.cost.utilization <= calm.cost.utilization
    assert balanced.cost.latency_ms >= calm.cost.latency_ms - 1e-6


def _problem_pb() -> splitter_pb2.Problem:
    return splitter_pb2.Problem(
        model=convert.model_to_proto(SMALL),
        nodes=[
            splitter_pb2.NodeProfile(node_id="edge", device_profile="Jetson-AGX-Orin-64GB", trusted=True),
            splitter_pb2.NodeProfile(node_id="gpu", device_profile="a100", utilization=0.5),
        ],
        links=[
            common_pb2.Link(src="edge", dst="gpu", bandwidth_mbps=100, rtt_ms=3),
            common_pb2.Link(src="gpu", dst="edge", bandwidth_mbps=100, rtt_ms=3),
        ],
        workload=splitter_pb2.Workload(prompt_tokens=64, generate_tokens=8),
    )


def test_wire_defaults_device_table_and_unset_weights():
    problem = convert.problem_from_proto(_problem_pb())
    orin = problem.nodes[0]
    assert orin.memory_bytes == 64 * GIB and orin.flops_per_s == pytest.approx(21.25e12)
    assert problem.nodes[1].memory_bandwidth_bps == pytest.approx(0.9 * 1555e9)
    assert problem.policy.alpha == 1.0 and problem.policy.objective is Objective.LATENCY
    assert problem.workload.concurrent_sessions == 1 and problem.current is None
    assert convert.mode_from_proto(splitter_pb2.SOLVE_MODE_UNSPECIFIED) is Mode.RESPLIT
    assert convert.solver_from_proto(splitter_pb2.SOLVER_KIND_UNSPECIFIED) is SolverKind.EXACT
    assert convert.model_from_proto(convert.model_to_proto(SMALL)) == SMALL


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.nodes[1].ClearField("device_profile"), r"node 'gpu': memory_bytes must be > 0"),
        (
            lambda p: setattr(p.nodes[1], "device_profile", "tpu-v9"),
            "device_profile 'tpu-v9' is not in the device",
        ),
        (lambda p: p.ClearField("model"), "problem.model has no units"),
        (lambda p: setattr(p.links[0], "dst", "nowhere"), "unknown node 'nowhere'"),
        (lambda p: setattr(p.policy, "objective", 7), "policy.objective 7 is not an Objective"),
    ],
)
def test_malformed_wire_problems_name_the_field(mutate, message):
    pb = _problem_pb()
    mutate(pb)
    with pytest.raises(ProblemError, match=message):
        convert.problem_from_proto(pb)


def test_a_solved_plan_goes_back_on_the_wire_with_its_cost():
    solution = solve(convert.problem_from_proto(_problem_pb()))
    pb = convert.plan_to_proto(solution.plan, solution.cost, "why", 1.5)
    assert [(s.units.start, s.units.end) for s in pb.segments] == [
        (s.start, s.end) for s in solution.plan.segments
    ]
    assert pb.predicted.phi == pytest.approx(solution.cost.phi) and pb.reason == "why" and pb.epoch == 0
    assert np.isfinite(pb.predicted.throughput_tps)


@pytest.mark.parametrize("back_rtt_ms", [1.0, 20.0, 200.0, 2000.0])
def test_the_solvers_charge_the_rings_closing_link_exactly(back_rtt_ms):
    """Two trusted nodes, the faster one (mec, too small for the whole model) close to the
    edge one way and, as the link back gets longer, far the other: whether the head goes to
    mec depends on the link from the head back to unit 0's node, a term that couples the
    first and last unit and that no forward hop shows. The exact solver (one chain per node
    of unit 0) matches brute force at every RTT (solving the chain without the closing link
    does not), and greedy never beats it."""
    nodes = (
        Node("edge", 40 * GIB, 2e13, 0.3, True, "", 4e11),
        Node("mec", 4 * GIB, 2e14, 0.1, True, "", 2e12),
    )
    links = (Link("edge", "mec", 1000.0, 1.0), Link("mec", "edge", 1000.0, back_rtt_ms))
    problem = Problem(SMALL, nodes, links, Policy(private_depth=0), Workload(64, 16))
    inst = instance.build(problem, Mode.RESPLIT)
    result = exact.solve(inst)
    oracle = brute.brute_force(inst)
    best = instance.score(inst, oracle).phi[0]
    assert instance.score(inst, result.assign).phi[0] == pytest.approx(best)
    assert solve(problem, kind=SolverKind.GREEDY).cost.phi >= best * (1 - 1e-9)
