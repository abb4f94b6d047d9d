"""E(t) assembly: the registry, the latest metrics and links, the latency EWMA.

Why pure: the orchestrator decides from this snapshot, so what counts as a
live node, a stale metric or a usable link must be testable without Redis.
Latency: the EWMA hash holds the whole-request EWMA under the deployment's name
and the others under ``"deployment|ttft"`` / ``"deployment|tpot"``; each lands in
``latency_signals`` (and the request EWMA also in ``latency_ewma_ms``, as before).
Rules: a node is DOWN when its heartbeat expired (the registry says so) or
when it was UP but its last metrics are older than ``stale_after_s`` (its agent
stopped while the process still beats). Metrics and links of DOWN nodes are
left out: nothing should be placed on them or routed through them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from resplit.v1 import common_pb2

#: The latency signals a deployment's EWMAs are kept for (policy.latency_signal).
SIGNALS = ("ttft", "tpot", "request")


def is_stale(metrics: common_pb2.NodeMetrics | None, now: float, stale_after_s: float) -> bool:
    """True when no report arrived within ``stale_after_s`` (0 disables the check)."""
    if stale_after_s <= 0:
        return False
    return metrics is None or now - metrics.timestamp > stale_after_s


def assemble(
    nodes: Iterable[common_pb2.Node],
    metrics: Mapping[str, common_pb2.NodeMetrics],
    links: Iterable[common_pb2.Link],
    latency_ewma_ms: Mapping[str, float],
    now: float,
    stale_after_s: float = 0.0,
) -> common_pb2.Environment:
    """One E(t) snapshot at time ``now``."""
    env = common_pb2.Environment(timestamp=now)
    up: set[str] = set()
    for node in nodes:
        entry = env.nodes.add()
        entry.CopyFrom(node)
        report = metrics.get(node.node_id)
        if (
            entry.state == common_pb2.NODE_STATE_UP
            and report is not None
            and is_stale(report, now, stale_after_s)
        ):
            entry.state = common_pb2.NODE_STATE_DOWN
        if entry.state == common_pb2.NODE_STATE_UP:
            up.add(node.node_id)
            if report is not None:
                env.metrics.add().CopyFrom(report)
    for link in links:
        if link.src in up and link.dst in up:
            env.links.add().CopyFrom(link)
    for field, value in sorted(latency_ewma_ms.items()):
        deployment, _, signal = field.partition("|")
        signals = env.latency_signals[deployment]
        if signal in SIGNALS[:2]:
            setattr(signals, f"{signal}_ms", value)
        else:
            env.latency_ewma_ms[deployment] = value
            signals.request_ms = value
    return env


def validate_metrics(report: common_pb2.NodeMetrics) -> str:
    """Why a node agent's report is unusable, or '' when it is fine."""
    if not report.node_id:
        return "node_id is required"
    for name in ("cpu_utilization", "gpu_utilization", "memory_utilization"):
        value = getattr(report, name)
        if not 0.0 <= value <= 1.0:
            return f"{name} must be within [0, 1], got {value}"
    if report.timestamp < 0:
        return f"timestamp must not be negative, got {report.timestamp}"
    for key, value in report.segment_compute_ms.items():
        if value < 0:
            return f"segment_compute_ms[{key!r}] must not be negative, got {value}"
    return ""


def validate_latency(deployment: str, latency_ms: float) -> str:
    """Why a latency sample is unusable, or '' when it is fine."""
    if not deployment:
        return "deployment is required"
    if not latency_ms >= 0 or latency_ms == float("inf"):
        return f"latency_ms must be a finite non-negative number, got {latency_ms}"
    return ""
