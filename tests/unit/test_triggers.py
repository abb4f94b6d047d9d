"""ShouldReconfigure(E(t), Theta): which Table I triggers fire for a deployment's plan."""

from __future__ import annotations

from resplit.v1 import common_pb2
from services.orchestrator.core.policy import default_policy, effective_thresholds
from services.orchestrator.core.triggers import describe, should_reconfigure

THETA = common_pb2.Thresholds(l_max_ms=150, u_max=0.85, b_min_mbps=50, t_cool_s=30)
UP, DOWN = common_pb2.NODE_STATE_UP, common_pb2.NODE_STATE_DOWN


def _plan(*segments: tuple[int, int, str]) -> common_pb2.Plan:
    plan = common_pb2.Plan(deployment="d", epoch=1)
    for a, b, node in segments:
        plan.segments.add(units=common_pb2.UnitRange(start=a, end=b), node_id=node)
    return plan


PLAN = _plan((0, 2, "edge"), (2, 6, "mec"), (6, 8, "edge"))


def _env(latency=None, cpu=None, gpu=None, links=None, nodes=None) -> common_pb2.Environment:
    env = common_pb2.Environment(timestamp=1.0)
    for node_id, state in (nodes or {"edge": UP, "mec": UP, "cloud": UP}).items():
        env.nodes.add(node_id=node_id, state=state)
    if latency is not None:
        env.latency_ewma_ms["d"] = latency
    for node_id, value in (cpu or {}).items():
        env.metrics.add(node_id=node_id, cpu_utilization=value, gpu_utilization=(gpu or {}).get(node_id, 0.0))
    for (src, dst), mbps in (links or {}).items():
        env.links.add(src=src, dst=dst, bandwidth_mbps=mbps, rtt_ms=1.0, timestamp=1.0)
    return env


def _fired(env, plan=PLAN):
    return [(t.name, t.subject, t.value, t.threshold) for t in should_reconfigure(env, "d", plan, THETA)]


def test_nothing_fires_when_every_measurement_is_within_theta():
    env = _env(latency=100, cpu={"edge": 0.5, "mec": 0.85}, links={("edge", "mec"): 80, ("mec", "edge"): 50})
    assert _fired(env) == []


def test_missing_measurements_never_fire():
    assert _fired(_env()) == []


def test_latency_above_l_max_fires_with_value_and_threshold():
    assert _fired(_env(latency=180.5)) == [("latency", "d", 180.5, 150)]


def test_latency_of_another_deployment_does_not_fire():
    env = _env()
    env.latency_ewma_ms["other"] = 1e6
    assert _fired(env) == []


def test_utilization_fires_per_node_of_the_plan_with_the_busier_of_cpu_and_gpu():
    env = _env(cpu={"edge": 0.2, "mec": 0.3, "cloud": 0.99}, gpu={"mec": 0.95})
    assert _fired(env) == [("utilization", "mec", 0.95, 0.85)]


def test_bandwidth_fires_only_on_links_the_plan_uses():
    env = _env(links={("edge", "mec"): 20, ("mec", "edge"): 60, ("edge", "cloud"): 1})
    assert _fired(env) == [("bandwidth", "edge->mec", 20, 50)]


def test_the_newest_link_estimate_counts():
    env = _env(links={("edge", "mec"): 20})
    env.links.add(src="edge", dst="mec", bandwidth_mbps=500, rtt_ms=1.0, timestamp=2.0)
    assert _fired(env) == []


def test_segments_on_one_node_use_no_link():
    env = _env(links={("edge", "mec"): 1})
    assert _fired(env, _plan((0, 8, "edge"))) == []


def test_a_down_or_missing_node_fires_node_down():
    assert _fired(_env(nodes={"edge": UP, "mec": DOWN})) == [("node_down", "mec", 0.0, 0.0)]
    assert _fired(_env(nodes={"mec": UP})) == [("node_down", "edge", 0.0, 0.0)]


def test_a_settling_registry_counts_only_down_nodes_not_missing_ones():
    """Redis restarted empty: edge has not registered again yet (missing), mec has and then
    stopped beating (DOWN). Only mec fires until the registry is older than the grace."""
    env = _env(nodes={"mec": DOWN})
    settling = [t.subject for t in should_reconfigure(env, "d", PLAN, THETA, settling=True)]
    settled = [t.subject for t in should_reconfigure(env, "d", PLAN, THETA, settling=False)]
    assert (settling, settled) == (["mec"], ["edge", "mec"])


def test_several_triggers_fire_together():
    env = _env(latency=200, cpu={"edge": 0.9}, links={("mec", "edge"): 10})
    assert [t[0] for t in _fired(env)] == ["latency", "utilization", "bandwidth"]


def test_describe_names_value_and_threshold():
    env = _env(latency=200, links={("mec", "edge"): 10}, nodes={"edge": UP})
    assert [describe(t) for t in should_reconfigure(env, "d", PLAN, THETA)] == [
        "node_down mec",
        "latency 200 > 150",
        "bandwidth mec->edge 10 < 50",
    ]


def test_unset_thresholds_take_table_i():
    policy = common_pb2.Policy(thresholds=common_pb2.Thresholds(l_max_ms=0.001))
    theta = effective_thresholds(policy)
    assert (theta.l_max_ms, theta.u_max, theta.b_min_mbps, theta.t_cool_s) == (0.001, 0.85, 50, 30)
    assert effective_thresholds(default_policy()) == THETA
