"""The cost model: what a plan costs, and which constraint it breaks.

Per request (DESIGN.md, "Cost model"):

* **compute** of a unit on a node is a roofline: ``max(FLOPs / FLOP/s, bytes
  read / memory bandwidth)``. Prefill runs ``P`` prompt tokens at once (weights
  read once, FLOPs dominate); each decode step runs one token (weights read
  again, bandwidth dominates: 0.28 ms per Llama-3-8B layer on an A100, which is
  the published figure). Attention adds FLOPs per attended position.
* **queueing** is M/M/1 against the node's measured utilization ``u``: time in
  system = service / (1 - u), so queueing = service * u / (1 - u).
* **transfer** per hop: ``RTT/2 + bytes / bandwidth`` forward. The result
  (the token, or an embedding) does not come back through the hops: the head
  hop returns it straight to the first hop, which runs the next step (the
  ring, docs/DATA_PLANE.md). That closing link costs ``RTT/2 + result bytes /
  bandwidth`` from the head's node to unit 0's node per step, nothing when
  they are the same node (the paper's placement). It couples the first and
  the last unit, which a chain DP cannot see: ``ring.py`` solves once per
  node unit 0 may run on, with that node's closing link folded into the
  head's cost (the trusted set is small).
* ``L = prefill + (G - 1) * decode`` for ``G`` generated tokens (the prefill
  yields the first one).
* ``U = max_n rho_n`` with ``rho_n = u_n + request_rate * busy_n`` (busy_n =
  our service seconds per request on n): the peak node utilization, the value
  Alg. 1 compares with U_max. A hosting node needs ``rho_n < 1`` (else its
  queue grows without bound): part of capacity (4), next to memory.
* ``P`` = share of privacy-critical units on untrusted nodes (soft privacy);
  with hard privacy (the default) any such unit breaks constraint (5).
* ``M`` = GiB of weights and KV cache a plan moves off the current plan's
  nodes, weighted by ``policy.migration_weight``.

``Phi = alpha L + beta U + gamma P + migration_weight M``. Every term but U is
a sum over units and hops, which is what makes the chain dynamic program exact
(see ``dp.py``); U, memory and stability couple units that share a node.

The formulas are written once, on numpy arrays or scalars alike, and used both
by :func:`evaluate` (the readable reference, one plan at a time) and by
``instance.py`` (the solvers' arrays).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from resplit.core.devices import roofline as _roofline

from .problem import GIB, Node, Plan, Problem, Unit, Workload

#: Bytes of the result the head hop returns to the first hop per step (a token id).
RESULT_BYTES = 4


def prefill_service_s(flops, attn, param_bytes, kv, work: Workload, flops_per_s, bandwidth_bps):
    """Seconds a unit needs for the whole prompt on a node with no other load (times the
    workload's measured-over-modelled prefill factor)."""
    p = work.prompt_tokens
    total_flops = p * flops + attn * p * (p + 1) / 2.0
    return _roofline(total_flops, param_bytes + kv * p, flops_per_s, bandwidth_bps) * work.prefill_factor


def decode_service_s(flops, attn, param_bytes, kv, work: Workload, flops_per_s, bandwidth_bps):
    """Seconds a unit needs for one decode step (mean context over the generation), times the
    workload's decode factor."""
    context = work.prompt_tokens + work.generate_tokens / 2.0
    bytes_read = param_bytes + kv * context
    return _roofline(flops + attn * context, bytes_read, flops_per_s, bandwidth_bps) * work.decode_factor


def hop_ms(rtt_ms, bandwidth_mbps, payload_bytes):
    """One hop: RTT/2 + payload / bandwidth, forward (the ring's closing link too, with
    the result as payload)."""
    return rtt_ms / 2.0 + payload_bytes * 8.0 / (bandwidth_mbps * 1e3)


def wire_ms(bandwidth_mbps, payload_bytes):
    """How long a link is busy with one payload (its pipeline-stage time)."""
    return payload_bytes * 8.0 / (bandwidth_mbps * 1e3)


def stage_per_token_ms(prefill_s, decode_s, work: Workload, slowdown):
    """Per-token busy time of a unit on a node, as a pipeline stage (throughput)."""
    if work.generate_tokens >= 2:
        return decode_s * 1e3 * slowdown
    return prefill_s * 1e3 * slowdown / work.prompt_tokens


def slowdown(utilization: float) -> float:
    """M/M/1 time-in-system factor 1 / (1 - u); infinite for a saturated node."""
    return float("inf") if utilization >= 1.0 else 1.0 / (1.0 - utilization)


@dataclass
class Breakdown:
    phi: float = 0.0
    latency_ms: float = 0.0
    utilization: float = 0.0
    privacy: float = 0.0
    compute_ms: float = 0.0
    transfer_ms: float = 0.0
    queueing_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms_per_token: float = 0.0
    throughput_tps: float = 0.0
    migration_gib: float = 0.0
    bottleneck_ms: float = 0.0


@dataclass
class Evaluation:
    breakdown: Breakdown
    #: One line per broken constraint, naming it: "(4) capacity: ...", "(5) privacy: ...".
    violations: list[str] = field(default_factory=list)
    memory_bytes: dict[str, int] = field(default_factory=dict)
    rho: dict[str, float] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return not self.violations


def _unit_times(unit: Unit, node: Node, work: Workload) -> tuple[float, float]:
    args = (
        unit.flops_per_token,
        unit.attention_flops_per_position,
        unit.param_bytes,
        unit.kv_bytes_per_token,
    )
    pre = float(prefill_service_s(*args, work, node.flops_per_s, node.memory_bandwidth_bps))
    dec = float(decode_service_s(*args, work, node.flops_per_s, node.memory_bandwidth_bps))
    return pre, dec


def _check_cover(plan: Plan, problem: Problem, nodes: dict[str, Node]) -> list[str]:
    problems, expected = [], 0
    for seg in plan.segments:
        if seg.start != expected or seg.end <= seg.start:
            problems.append(
                f"(3) unique assignment: segment [{seg.start}, {seg.end}) does not follow {expected}"
            )
        if seg.node_id not in nodes:
            problems.append(f"(3) unique assignment: segment [{seg.start}, {seg.end}) has no known node")
        expected = max(expected, seg.end)
    if expected != problem.num_units:
        problems.append(
            f"(3) unique assignment: the plan covers units up to {expected}, not {problem.num_units}"
        )
    return problems


def evaluate(problem: Problem, plan: Plan) -> Evaluation:
    """Cost and constraint check of one plan, straight from the definitions above."""
    nodes = {n.node_id: n for n in problem.nodes}
    links = {(link.src, link.dst): link for link in problem.links}
    work, policy = problem.workload, problem.policy
    violations = _check_cover(plan, problem, nodes)
    if violations:
        return Evaluation(Breakdown(phi=float("inf")), violations)
    out = Breakdown()
    units = problem.model.units
    memory = {n.node_id: 0 for n in problem.nodes}
    busy_s = {n.node_id: 0.0 for n in problem.nodes}
    stage = {n.node_id: 0.0 for n in problem.nodes}
    wire: dict[tuple[str, str], float] = {}
    prefill = decode = 0.0
    steps = work.decode_steps
    for pos, seg in enumerate(plan.segments):
        node = nodes[seg.node_id]
        factor = slowdown(node.utilization)
        for unit in units[seg.start : seg.end]:
            pre, dec = _unit_times(unit, node, work)
            service_ms = (pre + steps * dec) * 1e3
            out.compute_ms += service_ms
            out.queueing_ms += service_ms * (factor - 1.0) if factor != float("inf") else float("inf")
            prefill += pre * 1e3 * factor
            decode += dec * 1e3 * factor
            memory[node.node_id] += problem.unit_memory_bytes(unit)
            busy_s[node.node_id] += pre + steps * dec
            stage[node.node_id] += float(stage_per_token_ms(pre, dec, work, factor))
        if pos == 0:
            continue
        prev = plan.segments[pos - 1]
        if prev.node_id == seg.node_id:
            continue
        link = links.get((prev.node_id, seg.node_id))
        if link is None:
            violations.append(
                f"links: no link from {prev.node_id!r} to {seg.node_id!r} (the hop into unit {seg.start})"
            )
            prefill = decode = float("inf")
            continue
        act = units[seg.start - 1].activation_bytes_per_token
        hop_pre = float(hop_ms(link.rtt_ms, link.bandwidth_mbps, work.prompt_tokens * act))
        hop_dec = float(hop_ms(link.rtt_ms, link.bandwidth_mbps, act))
        prefill += hop_pre
        decode += hop_dec
        out.transfer_ms += hop_pre + steps * hop_dec
        key = (prev.node_id, seg.node_id)
        wire[key] = wire.get(key, 0.0) + float(wire_ms(link.bandwidth_mbps, act))
    head, first = plan.segments[-1].node_id, plan.segments[0].node_id
    if head != first:  # the ring's closing link: each step's result, head -> first hop
        link = links.get((head, first))
        if link is None:
            violations.append(f"links: no link from {head!r} to {first!r} (the head returns results there)")
            prefill = decode = float("inf")
        else:
            ring = float(hop_ms(link.rtt_ms, link.bandwidth_mbps, RESULT_BYTES))
            prefill += ring
            decode += ring
            out.transfer_ms += ring * (1 + steps)
    rho = {}
    for node in problem.nodes:
        rho[node.node_id] = node.utilization + work.request_rate * busy_s[node.node_id]
        hosts = any(s.node_id == node.node_id for s in plan.segments)
        if not hosts:
            continue
        if memory[node.node_id] > node.memory_bytes:
            violations.append(
                f"(4) capacity: node {node.node_id!r} would hold {memory[node.node_id] / GIB:.2f} GiB "
                f"but has {node.memory_bytes / GIB:.2f} GiB"
            )
        if rho[node.node_id] >= 1.0:
            violations.append(
                f"(4) capacity: node {node.node_id!r} would run at utilization {rho[node.node_id]:.2f} "
                "(>= 1: its queue grows without bound)"
            )
    critical = problem.critical_units()
    owner = plan.node_of_units(problem.num_units)
    exposed = [i for i in critical if not problem.is_trusted(nodes[owner[i]])]
    out.privacy = len(exposed) / len(critical)
    if exposed and not policy.soft_privacy:
        for i in exposed:
            violations.append(
                f"(5) privacy: unit {i} ({units[i].kind or 'unit'}) on untrusted node {owner[i]!r}"
            )
    if problem.current is not None:
        before = problem.current.node_of_units(problem.num_units)
        moved = sum(
            problem.unit_memory_bytes(units[i]) for i in range(problem.num_units) if owner[i] != before[i]
        )
        out.migration_gib = moved / GIB
    out.prefill_ms = prefill
    out.decode_ms_per_token = decode
    out.latency_ms = prefill + steps * decode
    out.utilization = max(rho.values())
    out.bottleneck_ms = max([*stage.values(), *wire.values()])
    out.throughput_tps = 1e3 / out.bottleneck_ms if out.bottleneck_ms > 0 else float("inf")
    out.phi = (
        policy.alpha * out.latency_ms
        + policy.beta * out.utilization
        + policy.gamma * out.privacy
        + policy.migration_weight * out.migration_gib
    )
    return Evaluation(out, violations, memory, rho)
