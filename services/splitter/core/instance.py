"""A problem as the arrays the solvers work on, and a vectorised plan scorer.

Why arrays: the exact DP, the MILP, greedy and brute force all need the same
per-(unit, node) and per-(boundary, node, node) numbers. Building them once,
from the formulas in ``costmodel.py``, keeps the solvers short and agreeing
with :func:`costmodel.evaluate` to rounding.

A plan is represented here as an *assignment*: the node index of every unit.
Maximal runs of equal entries are the segments (in PLACEMENT_ONLY, the fixed
segments may also repeat a node back to back).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from . import costmodel as cm
from .problem import GIB, Mode, Plan, Problem, Segment

INF = float("inf")
#: Two objective values this close (relatively) are the same optimum.
REL_TOL = 1e-9


@dataclass
class Instance:
    problem: Problem
    mode: Mode
    node_ids: list[str]
    #: alpha * latency + gamma * privacy + migration cost of one unit on one node; inf where it may not go.
    unit_cost: np.ndarray
    #: Unit may sit on node at all (privacy in hard mode, node not saturated, fits alone).
    allowed: np.ndarray
    mem: np.ndarray
    capacity: np.ndarray
    #: request_rate * service seconds of a unit on a node: its share of the node's utilization.
    load: np.ndarray
    base_util: np.ndarray
    #: Per-token pipeline-stage milliseconds of a unit on a node.
    stage: np.ndarray
    #: [b, j, k]: alpha * latency of the hop into unit b from node j to node k; 0 on the diagonal,
    #: inf without a link.
    hop_cost: np.ndarray
    #: [b, j, k]: per-token milliseconds the link j->k is busy with the activation into unit b.
    hop_stage: np.ndarray
    #: [j, k]: alpha * latency of the ring's closing link, the head on node j returning each
    #: step's result to unit 0's node k; 0 on the diagonal, inf without a link. It couples
    #: the first and the last unit: the chain solvers see it through ``ring.py``.
    ring_cost: np.ndarray
    #: Interior unit indices where a segment may start (all of 1..n-1 when RESPLIT).
    cuts: tuple[int, ...]
    #: PLACEMENT_ONLY: neighbouring fixed segments may share a node.
    allow_same: bool
    beta: float
    _prefix: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return self.unit_cost.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.unit_cost.shape[1]

    @property
    def u_floor(self) -> float:
        """U can never be below the busiest node's background utilization."""
        return float(self.base_util.max())

    @property
    def u_varies(self) -> bool:
        """Whether the plan can change U at all (else beta * U is a constant)."""
        return self.beta > 0 and bool(np.any(self.load > 0))

    def fixed_segments(self) -> list[tuple[int, int]]:
        points = [0, *self.cuts, self.n]
        return list(itertools.pairwise(points))

    def plan_of(self, assign: np.ndarray) -> Plan:
        """Segments of an assignment: maximal runs (RESPLIT) or the fixed segments (PLACEMENT_ONLY)."""
        if self.mode is Mode.PLACEMENT_ONLY:
            bounds = self.fixed_segments()
        else:
            starts = [0] + [i for i in range(1, self.n) if assign[i] != assign[i - 1]]
            bounds = list(zip(starts, [*starts[1:], self.n], strict=True))
        segments = tuple(Segment(a, b, self.node_ids[int(assign[a])]) for a, b in bounds)
        current = self.problem.current
        return Plan(segments, deployment=current.deployment if current else "")


def build(problem: Problem, mode: Mode) -> Instance:
    """Arrays for ``problem``; PLACEMENT_ONLY takes its cut points from ``problem.current``."""
    units, nodes, work, policy = problem.model.units, problem.nodes, problem.workload, problem.policy
    n, count = len(units), len(nodes)
    flops = np.array([u.flops_per_token for u in units])[:, None]
    attn = np.array([u.attention_flops_per_position for u in units])[:, None]
    params = np.array([u.param_bytes for u in units], dtype=float)[:, None]
    kv = np.array([u.kv_bytes_per_token for u in units], dtype=float)[:, None]
    node_flops = np.array([x.flops_per_s for x in nodes])[None, :]
    bandwidth = np.array([x.memory_bandwidth_bps for x in nodes])[None, :]
    util = np.array([x.utilization for x in nodes])
    usable = util < 1.0
    # M/M/1 slow-down 1 / (1 - u); saturated nodes get 1 here and are masked out below.
    factor = 1.0 / np.where(usable, 1.0 - util, 1.0)
    pre = cm.prefill_service_s(flops, attn, params, kv, work, node_flops, bandwidth)
    dec = cm.decode_service_s(flops, attn, params, kv, work, node_flops, bandwidth)
    service_s = pre + work.decode_steps * dec
    latency_ms = np.where(usable[None, :], service_s * 1e3 * factor[None, :], INF)
    stage = np.where(usable[None, :], cm.stage_per_token_ms(pre, dec, work, factor[None, :]), INF)
    mem = np.array([problem.unit_memory_bytes(u) for u in units], dtype=float)
    capacity = np.array([x.memory_bytes for x in nodes], dtype=float)

    trusted = np.array([problem.is_trusted(x) for x in nodes])
    critical = np.zeros(n, dtype=bool)
    critical[problem.critical_units()] = True
    exposed = critical[:, None] & ~trusted[None, :]
    allowed = usable[None, :] & (mem[:, None] <= capacity[None, :])
    if not policy.soft_privacy:
        allowed &= ~exposed
    cost = policy.alpha * latency_ms
    if policy.soft_privacy and policy.gamma > 0:
        cost = cost + policy.gamma * exposed / critical.sum()
    if problem.current is not None and policy.migration_weight > 0:
        before = problem.current.node_of_units(n)
        ids = [x.node_id for x in nodes]
        moved = np.array([[before[i] != ids[j] for j in range(count)] for i in range(n)])
        cost = cost + policy.migration_weight * moved * (mem[:, None] / GIB)
    unit_cost = np.where(allowed, cost, INF)

    hop_cost, hop_stage, ring_cost = _hops(problem, n, count)
    if mode is Mode.PLACEMENT_ONLY:
        if problem.current is None:
            raise ValueError("PLACEMENT_ONLY needs the current plan")
        cuts = problem.current.boundaries()
    else:
        cuts = tuple(range(1, n))
    return Instance(
        problem=problem,
        mode=mode,
        node_ids=[x.node_id for x in nodes],
        unit_cost=unit_cost,
        allowed=allowed,
        mem=mem,
        capacity=capacity,
        load=np.where(usable[None, :], work.request_rate * service_s, INF),
        base_util=util,
        stage=stage,
        hop_cost=hop_cost,
        hop_stage=hop_stage,
        ring_cost=ring_cost,
        cuts=cuts,
        allow_same=mode is Mode.PLACEMENT_ONLY,
        beta=policy.beta,
    )


def _hops(problem: Problem, n: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = problem.node_index()
    rtt = np.full((count, count), INF)
    bandwidth = np.full((count, count), np.nan)
    for link in problem.links:
        j, k = index[link.src], index[link.dst]
        rtt[j, k], bandwidth[j, k] = link.rtt_ms, link.bandwidth_mbps
    has = np.isfinite(rtt)
    act = np.array([0.0] + [u.activation_bytes_per_token for u in problem.model.units[:-1]])[:, None, None]
    work, alpha = problem.workload, problem.policy.alpha
    bw = np.where(has, bandwidth, 1.0)[None, :, :]
    delay = np.where(has, rtt, 0.0)[None, :, :]
    latency = cm.hop_ms(delay, bw, work.prompt_tokens * act) + work.decode_steps * cm.hop_ms(delay, bw, act)
    hop_cost = np.where(has[None], alpha * latency, INF)
    hop_stage = np.where(has[None], cm.wire_ms(bw, act), INF)
    diagonal = np.arange(count)
    hop_cost[:, diagonal, diagonal] = 0.0
    hop_stage[:, diagonal, diagonal] = 0.0
    # The ring's closing link, head node j -> unit 0's node k, once per step.
    ring_ms = (1 + work.decode_steps) * cm.hop_ms(delay[0], bw[0], cm.RESULT_BYTES)
    ring_cost = np.where(has, alpha * ring_ms, INF)
    ring_cost[diagonal, diagonal] = 0.0
    return hop_cost, hop_stage, ring_cost


@dataclass
class Scores:
    """Scores of K assignments: Phi, feasibility of (3)-(5) and links, and the throughput bottleneck."""

    phi: np.ndarray
    feasible: np.ndarray
    bottleneck: np.ndarray
    utilization: np.ndarray
    #: Phi without the feasibility mask (what a relaxation that ignores node-wide limits would pay).
    raw: np.ndarray


def score(inst: Instance, assigns: np.ndarray) -> Scores:
    """Vectorised Phi and constraint check of K assignments (K x n node indices)."""
    assigns = np.atleast_2d(assigns)
    k_count, n = assigns.shape
    count = inst.num_nodes
    rows = np.arange(n)[None, :]
    additive = inst.unit_cost[rows, assigns].sum(axis=1)
    prev, nxt = assigns[:, :-1], assigns[:, 1:]
    cut = np.arange(1, n)[None, :]
    additive = additive + inst.hop_cost[cut, prev, nxt].sum(axis=1)
    additive = additive + inst.ring_cost[assigns[:, -1], assigns[:, 0]]
    flat = (assigns + np.arange(k_count)[:, None] * count).ravel()

    def per_node(weights: np.ndarray) -> np.ndarray:
        return np.bincount(flat, weights=weights.ravel(), minlength=k_count * count).reshape(k_count, count)

    used = per_node(np.ones_like(assigns, dtype=float)) > 0
    memory = per_node(np.broadcast_to(inst.mem, assigns.shape))
    rho = inst.base_util[None, :] + per_node(inst.load[rows, assigns])
    stage = per_node(inst.stage[rows, assigns])
    ok = np.isfinite(additive)
    ok &= ~np.any(used & (memory > inst.capacity[None, :]), axis=1)
    ok &= ~np.any(used & (rho >= 1.0), axis=1)
    if inst.mode is Mode.PLACEMENT_ONLY:
        for a, b in inst.fixed_segments():
            ok &= np.all(assigns[:, a:b] == assigns[:, a : a + 1], axis=1)
    links = (prev * count + nxt + np.arange(k_count)[:, None] * count * count).ravel()
    wire = inst.hop_stage[cut, prev, nxt]
    wire = np.bincount(
        links, weights=np.where(np.isfinite(wire), wire, 0.0).ravel(), minlength=k_count * count**2
    )
    bottleneck = np.maximum(np.where(used, stage, 0.0).max(axis=1), wire.reshape(k_count, -1).max(axis=1))
    utilization = np.where(np.isfinite(rho), rho, INF).max(axis=1)
    phi = additive + (inst.beta * utilization if inst.beta > 0 else 0.0)
    return Scores(np.where(ok, phi, INF), ok, np.where(ok, bottleneck, INF), utilization, phi)
