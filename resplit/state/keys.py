"""Redis key names, in one place so every service spells them the same way."""

from __future__ import annotations

PREFIX = "resplit"


def nodes() -> str:
    """Set of every node id ever registered (alive or not)."""
    return f"{PREFIX}:nodes"


def node(node_id: str) -> str:
    """The node's record (a serialized ``resplit.v1.Node``)."""
    return f"{PREFIX}:node:{node_id}"


def node_alive(node_id: str) -> str:
    """Exists while the node's heartbeat is fresh; its TTL is the heartbeat TTL."""
    return f"{PREFIX}:node:{node_id}:alive"


def registry_since() -> str:
    """When the registry first took a node since Redis last started empty (SET NX): a node
    missing from a registry younger than a heartbeat has not had its chance to register again."""
    return f"{PREFIX}:registry:since"


def deployments() -> str:
    return f"{PREFIX}:deployments"


def deployment(name: str) -> str:
    return f"{PREFIX}:deploy:{name}"


def plan(name: str) -> str:
    """The committed plan (a serialized ``resplit.v1.Plan``)."""
    return f"{PREFIX}:deploy:{name}:plan"


def committed_epoch(name: str) -> str:
    return f"{PREFIX}:deploy:{name}:committed_epoch"


def epoch_counter(name: str) -> str:
    """Highest epoch ever handed out (INCR); never below the committed one."""
    return f"{PREFIX}:deploy:{name}:epoch"


def events(name: str) -> str:
    """Redis stream of ``resplit.v1.DecisionEvent``."""
    return f"{PREFIX}:deploy:{name}:events"


def route_channel(name: str) -> str:
    """Pub/sub channel carrying each newly committed ``resplit.v1.Route``."""
    return f"{PREFIX}:deploy:{name}:route"


def metrics_latest(node_id: str) -> str:
    """The node's latest ``resplit.v1.NodeMetrics``."""
    return f"{PREFIX}:node:{node_id}:metrics"


def metrics_series(node_id: str) -> str:
    """Redis stream of the node's ``NodeMetrics`` (time series, trimmed by age)."""
    return f"{PREFIX}:node:{node_id}:metrics:ts"


def links_from(src: str) -> str:
    """Latest estimates of every link out of ``src``: an ``Environment`` holding only
    ``links`` (one value per node, so E(t) reads N values, not N^2)."""
    return f"{PREFIX}:node:{src}:links"


def link_series(src: str, dst: str) -> str:
    """Redis stream of one directed link's ``Link`` estimates."""
    return f"{PREFIX}:link:{src}>{dst}:ts"


def latency_ewma() -> str:
    """Hash deployment -> end-to-end latency EWMA in ms ("deployment|signal" for the
    other latency signals: ttft, tpot)."""
    return f"{PREFIX}:latency_ewma"


def latency_field(deployment: str, signal: str) -> str:
    """The field of ``deployment``'s ``signal`` in :func:`latency_ewma`."""
    return deployment if signal == "request" else f"{deployment}|{signal}"


def latency_series(name: str) -> str:
    """Redis stream of one deployment's end-to-end latency samples."""
    return f"{PREFIX}:deploy:{name}:latency:ts"


def first_hop_latency() -> str:
    """Redis stream of the first hops' latency samples (deployment, signal, ms, time),
    folded into the per-signal EWMAs by the monitor."""
    return f"{PREFIX}:latency:first_hop:ts"


def environment_series() -> str:
    """Redis stream of assembled E(t) snapshots."""
    return f"{PREFIX}:environment:ts"


def rollout(name: str) -> str:
    """The deployment's latest rollout (a serialized ``resplit.v1.RolloutStatus``)."""
    return f"{PREFIX}:deploy:{name}:rollout"


# -- control loop (Alg. 1) ---------------------------------------------------
def last_change(name: str) -> str:
    """Hash: ``at`` (unix time of the last applied plan change, t_last of Alg. 1),
    ``event`` (its decision event's stream id) and ``measured`` (1 once its
    measured latency is recorded), so T_cool survives an orchestrator restart."""
    return f"{PREFIX}:deploy:{name}:last_change"


def measured_latency(name: str) -> str:
    """Hash decision event id -> end-to-end latency EWMA (ms) measured after that change."""
    return f"{PREFIX}:deploy:{name}:events:measured"
