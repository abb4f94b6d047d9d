"""E(t) assembly: down detection, stale agents, links of down nodes, input checks."""

from __future__ import annotations

from resplit.v1 import common_pb2
from services.monitor.core.environment import assemble, validate_latency, validate_metrics

UP, DOWN = common_pb2.NODE_STATE_UP, common_pb2.NODE_STATE_DOWN


def _node(node_id: str, state: int) -> common_pb2.Node:
    return common_pb2.Node(node_id=node_id, state=state, address=f"{node_id}:1")


def test_assemble_keeps_up_nodes_metrics_and_links_between_them():
    nodes = [_node("a", UP), _node("b", UP), _node("c", DOWN)]
    metrics = {n: common_pb2.NodeMetrics(node_id=n, timestamp=99.0, cpu_utilization=0.5) for n in "abc"}
    links = [
        common_pb2.Link(src="a", dst="b", bandwidth_mbps=50),
        common_pb2.Link(src="a", dst="c", bandwidth_mbps=10),
    ]
    env = assemble(nodes, metrics, links, {"d": 12.5}, now=100.0, stale_after_s=5.0)
    assert env.timestamp == 100.0
    assert [n.state for n in env.nodes] == [UP, UP, DOWN]
    assert sorted(m.node_id for m in env.metrics) == ["a", "b"]
    assert [(x.src, x.dst) for x in env.links] == [("a", "b")]
    assert dict(env.latency_ewma_ms) == {"d": 12.5}


def test_a_node_whose_agent_went_quiet_is_down_even_while_it_beats():
    nodes = [_node("a", UP), _node("b", UP), _node("new", UP)]
    metrics = {
        "a": common_pb2.NodeMetrics(node_id="a", timestamp=99.0),
        "b": common_pb2.NodeMetrics(node_id="b", timestamp=80.0),
    }
    env = assemble(nodes, metrics, [], {}, now=100.0, stale_after_s=5.0)
    assert {n.node_id: n.state for n in env.nodes} == {"a": UP, "b": DOWN, "new": UP}
    # With the check off, only the heartbeat decides.
    env = assemble(nodes, metrics, [], {}, now=100.0, stale_after_s=0.0)
    assert all(n.state == UP for n in env.nodes)


def test_validation_names_the_bad_field():
    assert validate_metrics(common_pb2.NodeMetrics(node_id="a", cpu_utilization=0.3)) == ""
    assert "node_id" in validate_metrics(common_pb2.NodeMetrics())
    assert "cpu_utilization" in validate_metrics(common_pb2.NodeMetrics(node_id="a", cpu_utilization=1.5))
    bad = common_pb2.NodeMetrics(node_id="a")
    bad.segment_compute_ms["0-2"] = -1.0
    assert "segment_compute_ms" in validate_metrics(bad)
    assert validate_latency("d", 3.0) == ""
    assert "deployment" in validate_latency("", 3.0)
    assert "latency_ms" in validate_latency("d", -1.0)
    assert "latency_ms" in validate_latency("d", float("nan"))
