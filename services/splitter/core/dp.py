"""Chain dynamic programs over (cut point, node) states.

A plan is a path: segment [b, b') on node k, then a hop into the next
segment. Every cost term except U is a sum over units and hops
(``costmodel.py``), so the shortest path through states "a segment ends at
cut b on node k" is the cheapest plan - *provided each node hosts one
segment*. Memory (4) and utilization add up over all segments on a node, and
a path may come back to a node (edge -> MEC -> edge is the paper's own S1, S3
example). The DP checks each segment on its own, which is a **relaxation**:
every feasible plan is a feasible path, so the DP value is a lower bound.
When the DP's best path also satisfies the node-wide limits, it is optimal
for the real problem; ``exact.py`` checks that certificate and otherwise
hands the problem to the MILP, using the bounds computed here to prune it.

Cost: O(C^2 N + C N^2) for C cut points and N nodes, vectorised over nodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .instance import INF, Instance


@dataclass
class Prefix:
    """Prefix sums over units, per node, so a segment's totals are one subtraction."""

    cost: np.ndarray
    bad: np.ndarray
    mem: np.ndarray
    load: np.ndarray
    stage: np.ndarray


def prefix(inst: Instance) -> Prefix:
    if "prefix" not in inst._prefix:

        def cumulative(values: np.ndarray) -> np.ndarray:
            out = np.zeros((values.shape[0] + 1, *values.shape[1:]))
            out[1:] = np.cumsum(values, axis=0)
            return out

        finite = np.isfinite(inst.unit_cost)
        inst._prefix["prefix"] = Prefix(
            cost=cumulative(np.where(finite, inst.unit_cost, 0.0)),
            bad=cumulative((~finite).astype(float)),
            mem=cumulative(inst.mem),
            load=cumulative(np.where(finite, inst.load, 0.0)),
            stage=cumulative(np.where(finite, inst.stage, 0.0)),
        )
    return inst._prefix["prefix"]


@dataclass
class Caps:
    """Per-segment limits of one DP run (the walk over U and throughput tighten them)."""

    #: Every segment's node must stay strictly below this utilization.
    rho: float = 1.0
    #: Every segment's and hop's per-token stage time must stay at or below this (ms).
    stage: float = INF


def _segment_ok(
    inst: Instance, pre: Prefix, starts: np.ndarray, ends: np.ndarray | int, caps: Caps
) -> np.ndarray:
    """(len(starts), N) mask: segment [start, end) may sit on node k by its own limits."""
    ok = (pre.bad[ends] - pre.bad[starts]) == 0
    ok &= (pre.mem[ends] - pre.mem[starts])[:, None] <= inst.capacity[None, :]
    ok &= inst.base_util[None, :] + (pre.load[ends] - pre.load[starts]) < caps.rho
    if np.isfinite(caps.stage):
        ok &= (pre.stage[ends] - pre.stage[starts]) <= caps.stage
    return ok


def _hop_matrix(inst: Instance, cut: int, caps: Caps) -> np.ndarray:
    """Cost of the hop into unit ``cut`` from node j to node k (diagonal: staying, if allowed)."""
    hops = inst.hop_cost[cut]
    hops = np.where(inst.hop_stage[cut] <= caps.stage, hops, INF) if np.isfinite(caps.stage) else hops.copy()
    if not inst.allow_same:
        np.fill_diagonal(hops, INF)
    return hops


@dataclass
class Path:
    value: float
    assign: np.ndarray
    #: max over segments of (background utilization + the segment's own load).
    seg_rho: float


@dataclass
class Tables:
    """Forward and backward DP tables, for MILP pruning bounds."""

    points: np.ndarray
    #: arrive[t, k]: cheapest cover of [0, points[t]) ready to start a segment on k at points[t].
    arrive: np.ndarray
    #: finish[t, k]: cheapest cover of [0, points[t]) whose last segment is on k.
    finish: np.ndarray
    #: start[t, k]: cheapest cover of [points[t], n) whose first segment is on k.
    start: np.ndarray
    #: leave[t, j]: cheapest cover of [points[t], n) after a segment that ended on j.
    leave: np.ndarray


def chain(inst: Instance, caps: Caps | None = None, *, minmax: bool = False) -> Path | None:
    """Best path by the relaxation: additive cost, or (``minmax``) the smallest bottleneck stage."""
    caps = caps or Caps()
    pre = prefix(inst)
    points = np.array([0, *inst.cuts, inst.n])
    last, count = len(points) - 1, inst.num_nodes
    arrive = np.full((last + 1, count), INF)
    arrive[0] = 0.0
    finish = np.full((last + 1, count), INF)
    parent_t = np.zeros((last + 1, count), dtype=int)
    parent_node = np.full((last + 1, count), -1)
    columns = np.arange(count)
    for t in range(1, last + 1):
        end, starts = points[t], points[:t]
        ok = _segment_ok(inst, pre, starts, end, caps)
        if minmax:
            seg = pre.stage[end] - pre.stage[starts]
            value = np.where(ok, np.maximum(arrive[:t], seg), INF)
        else:
            value = np.where(ok, arrive[:t] + (pre.cost[end] - pre.cost[starts]), INF)
        best = np.argmin(value, axis=0)
        finish[t], parent_t[t] = value[best, columns], best
        if t < last:
            if minmax:
                wire = np.where(np.isfinite(_hop_matrix(inst, end, caps)), inst.hop_stage[end], INF)
                through = np.maximum(finish[t][:, None], wire)
            else:
                through = finish[t][:, None] + _hop_matrix(inst, end, caps)
            parent_node[t] = np.argmin(through, axis=0)
            arrive[t] = through[parent_node[t], columns]
    return _trace(inst, pre, points, finish, parent_t, parent_node)


def _trace(
    inst: Instance,
    pre: Prefix,
    points: np.ndarray,
    finish: np.ndarray,
    parent_t: np.ndarray,
    parent_node: np.ndarray,
) -> Path | None:
    """Walk the parent pointers back from the best final state into an assignment."""
    last = len(points) - 1
    node = int(np.argmin(finish[last]))
    value = float(finish[last, node])
    if not np.isfinite(value):
        return None
    assign = np.empty(inst.n, dtype=int)
    seg_rho, t = 0.0, last
    while True:
        t0 = int(parent_t[t, node])
        assign[points[t0] : points[t]] = node
        load = pre.load[points[t]][node] - pre.load[points[t0]][node]
        seg_rho = max(seg_rho, float(inst.base_util[node] + load))
        if t0 == 0:
            break
        node, t = int(parent_node[t0, node]), t0
    return Path(value, assign, seg_rho)


def tables(inst: Instance, caps: Caps | None = None) -> Tables:
    """Forward and backward additive tables of the relaxation (for bounds; no path)."""
    caps = caps or Caps()
    pre = prefix(inst)
    points = np.array([0, *inst.cuts, inst.n])
    last, count = len(points) - 1, inst.num_nodes
    arrive = np.full((last + 1, count), INF)
    arrive[0] = 0.0
    finish = np.full((last + 1, count), INF)
    for t in range(1, last + 1):
        end, starts = points[t], points[:t]
        ok = _segment_ok(inst, pre, starts, end, caps)
        finish[t] = np.where(ok, arrive[:t] + (pre.cost[end] - pre.cost[starts]), INF).min(axis=0)
        if t < last:
            arrive[t] = (finish[t][:, None] + _hop_matrix(inst, end, caps)).min(axis=0)
    start = np.full((last + 1, count), INF)
    leave = np.full((last + 1, count), INF)
    leave[last] = 0.0
    for t in range(last - 1, -1, -1):
        begin, ends = points[t], points[t + 1 :]
        seg_ok = _segment_ok(inst, pre, np.full(len(ends), begin), ends, caps)
        cost = pre.cost[ends] - pre.cost[begin]
        start[t] = np.where(seg_ok, cost + leave[t + 1 :], INF).min(axis=0)
        if t > 0:
            leave[t] = (_hop_matrix(inst, begin, caps) + start[t][None, :]).min(axis=1)
    return Tables(points, arrive, finish, start, leave)


def chain_tracked(inst: Instance, caps: Caps | None = None, *, minmax: bool = False) -> Path | None:
    """A feasible plan, fast: the DP where each state remembers what its own path used on every node.

    Not exact (one label per state breaks the principle of optimality once resources couple), but
    every path it builds respects node-wide memory, stability and stage caps, so it is a good upper
    bound for the exact solver to prune with: the relaxation's detours (leave a full node for one
    unit, come back with fresh memory) are impossible here. ``minmax`` minimises the bottleneck
    stage (node-wide sums) instead of the additive cost.
    """
    caps = caps or Caps()
    pre = prefix(inst)
    points = np.array([0, *inst.cuts, inst.n])
    last, count = len(points) - 1, inst.num_nodes
    diagonal = np.arange(count)
    arrive = np.full((last + 1, count), INF)
    arrive[0] = 0.0
    finish = np.full((last + 1, count), INF)
    # [t, k, :]: memory, load and stage the best path of state (t, k) put on every node.
    used = {name: np.zeros((2, last + 1, count, count)) for name in ("mem", "load", "stage")}
    parent_t = np.zeros((last + 1, count), dtype=int)
    parent_node = np.full((last + 1, count), -1)
    for t in range(1, last + 1):
        end, starts = points[t], points[:t]
        ok = _segment_ok(inst, pre, starts, end, caps)
        seg = {
            "mem": np.broadcast_to((pre.mem[end] - pre.mem[starts])[:, None], (t, count)),
            "load": pre.load[end] - pre.load[starts],
            "stage": pre.stage[end] - pre.stage[starts],
        }
        mine = {name: used[name][0, :t][:, diagonal, diagonal] + seg[name] for name in used}
        ok &= mine["mem"] <= inst.capacity[None, :]
        ok &= inst.base_util[None, :] + mine["load"] < caps.rho
        ok &= mine["stage"] <= caps.stage
        if minmax:
            value = np.where(ok, np.maximum(arrive[:t], mine["stage"]), INF)
        else:
            value = np.where(ok, arrive[:t] + (pre.cost[end] - pre.cost[starts]), INF)
        best = np.argmin(value, axis=0)
        finish[t], parent_t[t] = value[best, diagonal], best
        for name in used:
            used[name][1, t] = used[name][0, best, diagonal]
            used[name][1, t, diagonal, diagonal] = mine[name][best, diagonal]
        if t < last:
            hops = _hop_matrix(inst, end, caps)
            if minmax:
                wire = np.where(np.isfinite(hops), inst.hop_stage[end], INF)
                through = np.maximum(finish[t][:, None], wire)
            else:
                through = finish[t][:, None] + hops
            parent_node[t] = np.argmin(through, axis=0)
            arrive[t] = through[parent_node[t], diagonal]
            for name in used:
                used[name][0, t] = used[name][1, t, parent_node[t]]
    return _trace(inst, pre, points, finish, parent_t, parent_node)
