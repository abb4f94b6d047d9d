"""SOLVE_MODE_EVALUATE: the cost of the plan in force, as the cost model scores it."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from splitter_cases import LLAMA3_8B

from resplit.core.profiles import profile
from resplit.v1 import common_pb2, splitter_pb2
from services.splitter.config import SplitterSettings
from services.splitter.core import convert
from services.splitter.core.costmodel import evaluate
from services.splitter.server import SplitterServicer

MODEL = convert.model_to_proto(profile(LLAMA3_8B, "float16"))  # 34 units, 15 GiB in all
GIB = 1024**3


class Aborted(Exception):
    pass


class Context:
    async def abort(self, code, details):
        self.code, self.details = code, details
        raise Aborted(details)


def _problem(current, *, edge_util: float = 0.0, cloud_gib: float = 40.0) -> splitter_pb2.Problem:
    nodes = [
        splitter_pb2.NodeProfile(
            node_id="edge", memory_bytes=32 * GIB, trusted=True, device_profile="cpu", utilization=edge_util
        ),
        splitter_pb2.NodeProfile(node_id="cloud", memory_bytes=int(cloud_gib * GIB), device_profile="A100"),
    ]
    links = [
        common_pb2.Link(src=a, dst=b, bandwidth_mbps=100.0, rtt_ms=10.0)
        for a, b in (("edge", "cloud"), ("cloud", "edge"))
    ]
    plan = common_pb2.Plan(deployment="d", epoch=3)
    for start, end, node in current:
        plan.segments.add(units=common_pb2.UnitRange(start=start, end=end), node_id=node)
    return splitter_pb2.Problem(
        model=MODEL,
        nodes=nodes,
        links=links,
        policy=common_pb2.Policy(alpha=1.0),
        workload=splitter_pb2.Workload(prompt_tokens=64, generate_tokens=8),
        current=plan,
    )


def _call(problem: splitter_pb2.Problem, context: Context | None = None) -> splitter_pb2.SolveResponse:
    servicer = SplitterServicer(SplitterSettings())
    request = splitter_pb2.SolveRequest(problem=problem, mode=splitter_pb2.SOLVE_MODE_EVALUATE)
    return asyncio.run(servicer.Solve(request, context or Context()))


S3 = [(0, 2, "edge"), (2, 33, "cloud"), (33, 34, "edge")]


def test_evaluate_returns_the_cost_of_the_current_plan_unchanged():
    problem = _problem(S3)
    reply = _call(problem)
    assert [(s.units.start, s.units.end, s.node_id) for s in reply.plan.segments] == S3
    expected = evaluate(convert.problem_from_proto(problem), convert.plan_from_proto(problem.current))
    assert expected.feasible
    assert reply.cost.phi == pytest.approx(expected.breakdown.phi)
    assert reply.cost.latency_ms == pytest.approx(expected.breakdown.latency_ms)
    assert reply.cost.transfer_ms > 0 and reply.cost.migration_gib == 0.0
    assert reply.plan.predicted.phi == pytest.approx(reply.cost.phi)
    assert "evaluate" in reply.detail


def test_evaluate_does_not_choose_a_better_plan():
    """All on the CPU edge node is worse than offloading, but EVALUATE scores it as it is."""
    everything_on_edge = [(0, 34, "edge")]
    slow = _call(_problem(everything_on_edge))
    fast = _call(_problem(S3))
    assert [s.node_id for s in slow.plan.segments] == ["edge"]
    assert slow.cost.latency_ms > fast.cost.latency_ms


def test_a_busy_node_costs_more_queueing():
    idle = _call(_problem(S3))
    busy = _call(_problem(S3, edge_util=0.5))
    assert busy.cost.queueing_ms > idle.cost.queueing_ms
    assert busy.cost.latency_ms > idle.cost.latency_ms


def test_a_plan_on_a_node_that_is_gone_is_infeasible_with_the_reason():
    context = Context()
    with pytest.raises(Aborted):
        _call(_problem([(0, 2, "edge"), (2, 33, "gone"), (33, 34, "edge")]), context)
    assert context.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "current plan breaks" in context.details and "no known node" in context.details


def test_a_plan_that_no_longer_fits_is_infeasible_naming_capacity():
    context = Context()
    with pytest.raises(Aborted):
        _call(_problem(S3, cloud_gib=4.0), context)
    assert context.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "(4) capacity: node 'cloud'" in context.details


def test_a_saturated_node_is_infeasible():
    context = Context()
    with pytest.raises(Aborted):
        _call(_problem(S3, edge_util=1.0), context)
    assert "utilization" in context.details


def test_evaluate_without_a_current_plan_is_invalid_argument():
    problem = _problem(S3)
    problem.ClearField("current")
    context = Context()
    with pytest.raises(Aborted):
        _call(problem, context)
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "problem.current is required" in context.details
