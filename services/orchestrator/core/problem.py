"""The splitter's Problem for one deployment, from E(t), its policy and its plan.

* **nodes**: the registry's workers that are up. Memory, trust and the device
  profile come from the node's NodeCapacity; a node that declares no profile
  is a CPU (``"cpu"`` in the splitter's device table: the profile a worker
  declares by default, so a plain CPU worker gets CPU FLOP/s and memory
  bandwidth, never a GPU's). Utilization is max(CPU, GPU) from the node's
  latest metrics (0 when it has not reported yet), clamped to [0, 0.99]: a
  node measured at 100 % is very slow (queueing x100), not gone, so the plan
  in force stays comparable instead of turning infeasible on one busy sample.
* **links**: the newest estimate of each directed link between those nodes.
  A pair not probed yet gets an *assumed* link at the smaller declared
  ``network_mbps`` of the two nodes and ``assumed_rtt_ms``, so a fresh stack is
  not "unreachable" before its first probe round.
* **policy**: the deployment's, with trusted ids limited to nodes present
  (the splitter rejects unknown ids) and ``private_depth`` within the model.
* **workload**: one request of ``prompt_tokens`` + ``generate_tokens`` (no
  generation for encoders) at the deployment's measured request rate.
* **sharing** (``Shared``): a node's utilization is what it measures *minus this
  deployment's own load* (``NodeMetrics.segment_load``: the load moves with the
  plan, and the splitter adds it back per candidate from the request rate), plus
  the load that changes committed earlier in this cycle put there (``claimed``:
  not measured yet). Its memory is what every other deployment's segments on it
  leave free (``other_memory``). So the plan in force and a candidate are
  compared on the same footing, and two deployments never count the same free
  capacity twice.
* **current**: the plan in force (PLACEMENT_ONLY keeps its boundaries and the
  migration term counts what moves away from it).
* **correction** (``core/correction.py``): the cost model's online correction,
  measured-over-modelled compute factors of a prefill and a decode step (in the
  workload) and a per-hop overhead o (every link's RTT + 2 o); the identity leaves
  the problem as it was. The plan in force and every candidate are costed with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from resplit.core import devices
from resplit.v1 import common_pb2, splitter_pb2

from .correction import Correction
from .triggers import latest_links, node_utilization

CPU_PROFILE = "cpu"
MAX_UTILIZATION = 0.99
DEFAULT_NETWORK_MBPS = 1000.0


@dataclass(frozen=True)
class WorkloadDefaults:
    prompt_tokens: int = 128
    generate_tokens: int = 32
    assumed_rtt_ms: float = 1.0


@dataclass(frozen=True)
class Shared:
    """What the other deployments on the nodes take, and this one's request rate."""

    #: node -> bytes other deployments' segments hold there.
    other_memory: Mapping[str, int] = field(default_factory=dict)
    #: node -> utilization changes committed earlier in this cycle move there (+) or away (-).
    claimed: Mapping[str, float] = field(default_factory=dict)
    request_rate: float = 0.0


def own_load(env: common_pb2.Environment, deployment: str) -> dict[str, float]:
    """node -> the utilization ``deployment``'s own segments cause there (segment_load)."""
    prefix = f"{deployment}/"
    return {m.node_id: sum(v for k, v in m.segment_load.items() if k.startswith(prefix)) for m in env.metrics}


def node_profiles(
    env: common_pb2.Environment, deployment: str = "", shared: Shared | None = None
) -> list[splitter_pb2.NodeProfile]:
    metrics = {m.node_id: m for m in env.metrics}
    shared = shared or Shared()
    own = own_load(env, deployment) if deployment else {}
    profiles = []
    for node in sorted(env.nodes, key=lambda n: n.node_id):
        if node.state != common_pb2.NODE_STATE_UP or node.role not in ("", "worker"):
            continue
        report = metrics.get(node.node_id)
        utilization = node_utilization(report) if report is not None else 0.0
        utilization += shared.claimed.get(node.node_id, 0.0) - own.get(node.node_id, 0.0)
        memory = node.capacity.memory_bytes
        taken = shared.other_memory.get(node.node_id, 0)
        if taken:
            device = devices.lookup(node.capacity.device_profile or CPU_PROFILE)
            total = memory or (device.memory_bytes if device is not None else 0)
            memory = max(total - taken, 1) if total else 0  # 1 byte: full (0 would mean "the profile's")
        profiles.append(
            splitter_pb2.NodeProfile(
                node_id=node.node_id,
                memory_bytes=memory,
                utilization=min(max(utilization, 0.0), MAX_UTILIZATION),
                trusted=node.trusted,
                device_profile=node.capacity.device_profile or CPU_PROFILE,
            )
        )
    return profiles


def corrected(links: list[common_pb2.Link], correction: Correction) -> None:
    """Apply the correction's per-hop overhead in place: each link's RTT plus twice it (the
    model charges RTT/2 per hop); its compute factors go into the workload."""
    for link in links:
        link.rtt_ms = max(link.rtt_ms + 2.0 * correction.hop_ms, 0.0)


def links_between(
    env: common_pb2.Environment, node_ids: list[str], assumed_rtt_ms: float
) -> list[common_pb2.Link]:
    """Measured links among ``node_ids``; assumed ones where none is measured yet."""
    measured = latest_links(env)
    declared = {n.node_id: n.capacity.network_mbps or DEFAULT_NETWORK_MBPS for n in env.nodes}
    links = []
    for src in node_ids:
        for dst in node_ids:
            if src == dst:
                continue
            link = measured.get((src, dst))
            if link is not None and link.bandwidth_mbps > 0:
                links.append(
                    common_pb2.Link(src=src, dst=dst, bandwidth_mbps=link.bandwidth_mbps, rtt_ms=link.rtt_ms)
                )
            else:
                bandwidth = min(declared[src], declared[dst])
                links.append(
                    common_pb2.Link(src=src, dst=dst, bandwidth_mbps=bandwidth, rtt_ms=assumed_rtt_ms)
                )
    return links


def problem_policy(policy: common_pb2.Policy, node_ids: list[str], num_blocks: int) -> common_pb2.Policy:
    out = common_pb2.Policy()
    out.CopyFrom(policy)
    del out.trusted_node_ids[:]
    out.trusted_node_ids.extend(n for n in policy.trusted_node_ids if n in node_ids)
    out.private_depth = min(policy.private_depth, max(num_blocks, 0))
    return out


def build_problem(
    env: common_pb2.Environment,
    deployment: common_pb2.Deployment,
    plan: common_pb2.Plan,
    model: splitter_pb2.ModelProfile,
    defaults: WorkloadDefaults = WorkloadDefaults(),
    shared: Shared | None = None,
    correction: Correction | None = None,
) -> splitter_pb2.Problem:
    """The Problem the splitter solves (or evaluates) for ``deployment`` now."""
    shared = shared or Shared()
    nodes = node_profiles(env, deployment.name, shared)
    node_ids = [n.node_id for n in nodes]
    links = links_between(env, node_ids, defaults.assumed_rtt_ms)
    correction = correction or Correction()
    corrected(links, correction)
    return splitter_pb2.Problem(
        model=model,
        nodes=nodes,
        links=links,
        policy=problem_policy(deployment.policy, node_ids, len(model.units) - 2),
        workload=splitter_pb2.Workload(
            prompt_tokens=defaults.prompt_tokens,
            generate_tokens=defaults.generate_tokens if deployment.generative else 0,
            request_rate=shared.request_rate,
            prefill_factor=correction.prefill,
            decode_factor=correction.decode,
        ),
        current=plan,
    )
