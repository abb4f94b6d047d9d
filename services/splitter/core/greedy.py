"""Greedy baseline: walk the units in order and take the cheapest next node.

This is how peers decide (Petals picks blocks greedily, exo by memory share):
no look-ahead beyond keeping room for the head on a node allowed to hold it.
It is kept as a baseline for the benchmark's "gap to optimal" and as a cheap
feasible incumbent that lets the MILP prune. It can miss the optimum and can
even dead-end on a feasible problem; it returns None then.
"""

from __future__ import annotations

import numpy as np

from .instance import INF, Instance
from .problem import Mode


def greedy(inst: Instance, stage_cap: float = INF) -> np.ndarray | None:
    n, count = inst.n, inst.num_nodes
    pieces = inst.fixed_segments() if inst.mode is Mode.PLACEMENT_ONLY else [(i, i + 1) for i in range(n)]
    memory = np.zeros(count)
    rho = inst.base_util.copy()
    stage = np.zeros(count)
    assign = np.full(n, -1)
    head_mem = inst.mem[n - 1]
    head_ok = inst.allowed[n - 1]
    prev = -1
    for a, b in pieces:
        best, best_cost = -1, INF
        need = inst.mem[a:b].sum()
        for k in range(count):
            if not inst.allowed[a:b, k].all() or memory[k] + need > inst.capacity[k]:
                continue
            if rho[k] + inst.load[a:b, k].sum() >= 1.0 or stage[k] + inst.stage[a:b, k].sum() > stage_cap:
                continue
            cost = float(inst.unit_cost[a:b, k].sum())
            if prev >= 0 and prev != k:
                if inst.hop_stage[a, prev, k] > stage_cap:
                    continue
                cost += float(inst.hop_cost[a, prev, k])
            if b == n and a > 0:  # the head returns each result to unit 0's node (the ring)
                if not np.isfinite(inst.ring_cost[k, assign[0]]):
                    continue
                cost += float(inst.ring_cost[k, assign[0]])
            if b < n and not _head_still_fits(memory, k, need, head_mem, head_ok, inst.capacity):
                continue
            if cost < best_cost or (cost == best_cost and k == prev):
                best, best_cost = k, cost
        if best < 0:
            return None
        assign[a:b] = best
        memory[best] += need
        rho[best] += inst.load[a:b, best].sum()
        stage[best] += inst.stage[a:b, best].sum()
        prev = best
    return assign


def _head_still_fits(
    memory: np.ndarray, k: int, need: float, head_mem: float, head_ok: np.ndarray, capacity: np.ndarray
) -> bool:
    after = memory.copy()
    after[k] += need
    return bool(np.any(head_ok & (after + head_mem <= capacity)))
