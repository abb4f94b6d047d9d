"""ShouldReconfigure(E(t), Theta) of Alg. 1: which triggers of Table I fire now.

A trigger fires for the deployment's plan only, never for the cluster at large:

* ``latency`` (subject: the signal): the EWMA of the deployment's latency signal
  (``ttft``, ``tpot`` or ``request``, as its policy names it: policy.latency_bounds)
  > its bound; without bounds, the whole-request EWMA > L_max;
* ``utilization`` (subject: the node): max(CPU, GPU) utilization of a node the
  plan uses > U_max;
* ``bandwidth`` (subject: ``"a->b"``): bandwidth of a link the plan sends
  activations over (consecutive segments on different nodes) < B_min;
* ``node_down`` (subject: the node): a node of the plan is down or no longer
  registered. While the registry is *settling* (Redis restarted empty less than a
  heartbeat ago) a node missing from it has not had its chance to register again, so
  only a node that reads DOWN fires then.

A measurement that is missing (no EWMA yet, no metrics report, a link not
probed yet) never fires: only a missing node does, because a plan on a node
that is gone cannot serve at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from resplit.v1 import common_pb2

LATENCY = "latency"
UTILIZATION = "utilization"
BANDWIDTH = "bandwidth"
NODE_DOWN = "node_down"
SIGNALS = ("ttft", "tpot", "request")
#: A latency trigger on the plan's prediction (no request measured yet) says so after its signal.
PREDICTED = "(predicted: no request measured yet)"


def node_utilization(metrics: common_pb2.NodeMetrics) -> float:
    """U_n(t): the busier of the node's CPU and GPU."""
    return max(metrics.cpu_utilization, metrics.gpu_utilization)


def plan_nodes(plan: common_pb2.Plan) -> list[str]:
    """Nodes of the plan, in unit order, each once."""
    return list(dict.fromkeys(s.node_id for s in plan.segments))


def plan_hops(plan: common_pb2.Plan) -> list[tuple[str, str]]:
    """Links the plan sends activations over: consecutive segments on different nodes, each once."""
    hops = (
        (a.node_id, b.node_id)
        for a, b in zip(plan.segments[:-1], plan.segments[1:], strict=False)
        if a.node_id != b.node_id
    )
    return list(dict.fromkeys(hops))


def latest_links(env: common_pb2.Environment) -> dict[tuple[str, str], common_pb2.Link]:
    """The newest estimate of every directed link in E(t)."""
    found: dict[tuple[str, str], common_pb2.Link] = {}
    for link in env.links:
        key = (link.src, link.dst)
        if key not in found or link.timestamp >= found[key].timestamp:
            found[key] = link
    return found


def signal_ms(env: common_pb2.Environment, deployment: str, signal: str) -> float:
    """The EWMA of one latency signal of ``deployment`` in E(t) (0: no sample yet)."""
    if deployment not in env.latency_signals:
        return env.latency_ewma_ms.get(deployment, 0.0) if signal == "request" else 0.0
    return getattr(env.latency_signals[deployment], f"{signal}_ms")


def _latency(env, deployment, thresholds, bounds, predicted=None) -> list[common_pb2.Trigger]:
    if bounds is None:
        ewma = env.latency_ewma_ms.get(deployment, 0.0)
        if ewma > 0 and ewma > thresholds.l_max_ms:
            theta = thresholds.l_max_ms
            return [common_pb2.Trigger(name=LATENCY, value=ewma, threshold=theta, subject=deployment)]
        return []
    fired = []
    for signal, bound in bounds:
        value = signal_ms(env, deployment, signal)
        if value > 0 and value > bound:
            fired.append(common_pb2.Trigger(name=LATENCY, value=value, threshold=bound, subject=signal))
        elif value <= 0 and (predicted or {}).get(signal, 0.0) > bound:
            # no request measured yet: the plan in force's predicted signal stands in for it
            fired.append(
                common_pb2.Trigger(
                    name=LATENCY, value=predicted[signal], threshold=bound, subject=f"{signal} {PREDICTED}"
                )
            )
    return fired


def _utilization(env, plan, thresholds) -> list[common_pb2.Trigger]:
    metrics = {m.node_id: m for m in env.metrics}
    fired = []
    for node_id in plan_nodes(plan):
        if node_id in metrics and node_utilization(metrics[node_id]) > thresholds.u_max:
            value = node_utilization(metrics[node_id])
            fired.append(
                common_pb2.Trigger(name=UTILIZATION, value=value, threshold=thresholds.u_max, subject=node_id)
            )
    return fired


def _bandwidth(env, plan, thresholds) -> list[common_pb2.Trigger]:
    links = latest_links(env)
    fired = []
    for src, dst in plan_hops(plan):
        link = links.get((src, dst))
        if link is not None and link.bandwidth_mbps < thresholds.b_min_mbps:
            fired.append(
                common_pb2.Trigger(
                    name=BANDWIDTH,
                    value=link.bandwidth_mbps,
                    threshold=thresholds.b_min_mbps,
                    subject=f"{src}->{dst}",
                )
            )
    return fired


def _node_down(env, plan, settling: bool) -> list[common_pb2.Trigger]:
    up = {n.node_id for n in env.nodes if n.state == common_pb2.NODE_STATE_UP}
    known = {n.node_id for n in env.nodes}
    return [
        common_pb2.Trigger(name=NODE_DOWN, subject=n)
        for n in plan_nodes(plan)
        if n not in up and (n in known or not settling)
    ]


def should_reconfigure(
    env: common_pb2.Environment,
    deployment: str,
    plan: common_pb2.Plan,
    thresholds: common_pb2.Thresholds,
    settling: bool = False,
    bounds: Sequence[tuple[str, float]] | None = None,
    predicted: Mapping[str, float] | None = None,
) -> list[common_pb2.Trigger]:
    """Every trigger that fires for ``plan`` of ``deployment`` under E(t); empty: keep.
    ``settling``: the registry is younger than a heartbeat (see the module's docstring);
    ``bounds``: the latency signals and their bounds (policy.latency_bounds);
    ``predicted``: the plan in force's predicted signals under E(t), which stand in for a
    signal no request has measured yet (a fresh deployment: it need not wait for traffic
    to leave a plan the cost model already says breaks L_max)."""
    return [
        *_node_down(env, plan, settling),
        *_latency(env, deployment, thresholds, bounds, predicted),
        *_utilization(env, plan, thresholds),
        *_bandwidth(env, plan, thresholds),
    ]


def describe(trigger: common_pb2.Trigger) -> str:
    """``"latency 180.2 > 150"``, ``"bandwidth worker-0->worker-2 12 < 50"``, ``"node_down worker-2"``."""
    if trigger.name == NODE_DOWN:
        return f"node_down {trigger.subject}"
    relation = "<" if trigger.name == BANDWIDTH else ">"
    named = trigger.subject.split(" ")[0] in SIGNALS
    subject = f" {trigger.subject}" if trigger.name != LATENCY or named else ""
    return f"{trigger.name}{subject} {trigger.value:.4g} {relation} {trigger.threshold:.4g}"
