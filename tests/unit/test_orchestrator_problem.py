"""The splitter Problem the control loop builds from E(t), the deployment and its plan."""

from __future__ import annotations

import pytest
from splitter_cases import LLAMA3_8B

from resplit.core import devices
from resplit.core.profiles import profile
from resplit.v1 import common_pb2
from services.orchestrator.core.policy import default_policy
from services.orchestrator.core.problem import WorkloadDefaults, build_problem
from services.splitter.core import convert
from services.splitter.core.solve import Mode, evaluate_current, solve
from services.worker.core.identity import describe_node

GIB = 1024**3
MODEL = convert.model_to_proto(profile(LLAMA3_8B, "float16"))  # 34 units
UP, DOWN = common_pb2.NODE_STATE_UP, common_pb2.NODE_STATE_DOWN


def _node(node_id, trusted=False, gib=64, device="", mbps=1000.0, state=UP) -> common_pb2.Node:
    return common_pb2.Node(
        node_id=node_id,
        trusted=trusted,
        state=state,
        role="worker",
        capacity=common_pb2.NodeCapacity(memory_bytes=gib * GIB, device_profile=device, network_mbps=mbps),
    )


def _plan(*segments) -> common_pb2.Plan:
    plan = common_pb2.Plan(deployment="d", epoch=4)
    for a, b, node in segments:
        plan.segments.add(units=common_pb2.UnitRange(start=a, end=b), node_id=node)
    return plan


PLAN = _plan((0, 2, "edge"), (2, 33, "gpu"), (33, 34, "edge"))


def _env() -> common_pb2.Environment:
    env = common_pb2.Environment(
        nodes=[
            _node("edge", trusted=True, device="cpu", mbps=100.0),
            _node("gpu", device="A100-40GB"),
            _node("spare", gib=16),
            _node("dead", state=DOWN),
        ]
    )
    env.metrics.add(node_id="edge", cpu_utilization=0.3, gpu_utilization=0.0)
    env.metrics.add(node_id="gpu", cpu_utilization=0.1, gpu_utilization=0.6)
    env.links.add(src="edge", dst="gpu", bandwidth_mbps=40.0, rtt_ms=8.0, timestamp=1.0)
    env.links.add(src="edge", dst="gpu", bandwidth_mbps=30.0, rtt_ms=9.0, timestamp=2.0)
    return env


def _deployment(**policy) -> common_pb2.Deployment:
    spec = common_pb2.Deployment(name="d", num_units=34, generative=True, policy=default_policy())
    for key, value in policy.items():
        if key == "trusted_node_ids":
            spec.policy.trusted_node_ids.extend(value)
        else:
            setattr(spec.policy, key, value)
    return spec


def test_nodes_come_from_the_registry_with_measured_utilization():
    problem = build_problem(_env(), _deployment(), PLAN, MODEL)
    nodes = {n.node_id: n for n in problem.nodes}
    assert sorted(nodes) == ["edge", "gpu", "spare"]  # the down node is not a candidate
    assert nodes["edge"].trusted and not nodes["gpu"].trusted
    assert nodes["edge"].memory_bytes == 64 * GIB
    assert nodes["gpu"].device_profile == "A100-40GB"
    assert nodes["spare"].device_profile == "cpu"  # no profile declared: a CPU, never a GPU
    assert nodes["edge"].utilization == pytest.approx(0.3)
    assert nodes["gpu"].utilization == pytest.approx(0.6)  # the busier of CPU and GPU
    assert nodes["spare"].utilization == 0.0  # no report yet
    env = _env()
    env.metrics[0].cpu_utilization = 1.0
    (edge,) = [n for n in build_problem(env, _deployment(), PLAN, MODEL).nodes if n.node_id == "edge"]
    assert edge.utilization == 0.99  # saturated is slow, not gone


def test_links_are_the_newest_measurements_or_assumed_from_declared_capacity():
    problem = build_problem(_env(), _deployment(), PLAN, MODEL, WorkloadDefaults(assumed_rtt_ms=2.0))
    links = {(x.src, x.dst): (x.bandwidth_mbps, x.rtt_ms) for x in problem.links}
    assert len(links) == 6  # every ordered pair of the three up nodes
    assert links["edge", "gpu"] == (30.0, 9.0)
    assert links["gpu", "edge"] == (100.0, 2.0)  # min of the declared 100 and 1000 Mb/s
    assert links["gpu", "spare"] == (1000.0, 2.0)


def test_policy_workload_and_current_plan():
    spec = _deployment(trusted_node_ids=["gpu", "dead"], private_depth=1)
    problem = build_problem(_env(), spec, PLAN, MODEL, WorkloadDefaults(64, 8))
    assert list(problem.policy.trusted_node_ids) == ["gpu"]  # the splitter rejects unknown ids
    assert problem.policy.private_depth == 1 and problem.policy.alpha == 1.0
    assert (problem.workload.prompt_tokens, problem.workload.generate_tokens) == (64, 8)
    assert problem.current == PLAN
    spec.generative = False
    assert build_problem(_env(), spec, PLAN, MODEL).workload.generate_tokens == 0


def test_the_splitter_accepts_it_evaluates_the_plan_and_solves_both_modes():
    problem = convert.problem_from_proto(build_problem(_env(), _deployment(), PLAN, MODEL))
    current = evaluate_current(problem)
    migrated = solve(problem, Mode.PLACEMENT_ONLY)
    resplit = solve(problem, Mode.RESPLIT)
    assert current.cost.phi > 0
    assert [s.start for s in migrated.plan.segments] == [0, 2, 33]
    assert resplit.cost.phi <= migrated.cost.phi <= current.cost.phi + 1e-9


def test_a_plan_on_a_down_node_is_infeasible_to_evaluate_but_migration_replaces_it():
    from services.splitter.core.solve import Infeasible

    plan = _plan((0, 2, "edge"), (2, 33, "dead"), (33, 34, "edge"))
    problem = convert.problem_from_proto(build_problem(_env(), _deployment(), plan, MODEL))
    with pytest.raises(Infeasible):
        evaluate_current(problem)
    assert "dead" not in {s.node_id for s in solve(problem, Mode.PLACEMENT_ONLY).plan.segments}


def test_a_real_cpu_worker_gets_cpu_flops():
    worker = describe_node("worker-0", "127.0.0.1:1", True, 0, "cpu", 1000.0)
    worker.state = UP
    env = common_pb2.Environment(nodes=[worker])
    plan = _plan((0, 34, "worker-0"))
    problem = convert.problem_from_proto(build_problem(env, _deployment(), plan, MODEL))
    (node,) = problem.nodes
    cpu = devices.lookup("cpu")
    assert node.flops_per_s == cpu.flops_per_s and node.memory_bandwidth_bps == cpu.memory_bandwidth_bps
    assert node.memory_bytes == worker.capacity.memory_bytes  # the host's, not the table's
