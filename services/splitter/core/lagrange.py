"""Lagrangian tightening of the DP bound when nodes host several segments.

Priced resources: memory (always), load (stability, with a request rate) and the
per-token stage time (throughput's cap); memory is the example below.

The chain DP checks memory per segment, so it happily puts [3, 35) and
[36, 80) on the same fast GPU with a one-unit detour in between: each segment
fits, both together do not. Pricing memory fixes that without leaving the DP:
for prices ``mu_n >= 0`` (Phi per GiB),

    L(mu) = min over relaxed plans of [A + sum_n mu_n mem_n + beta U]  -  sum_n mu_n M_n

is a lower bound on the optimum (every feasible plan has ``mem_n <= M_n``, so
adding ``mu_n (mem_n - M_n) <= 0`` cannot raise its cost), and it is one DP
walk per price vector. The best prices come from column generation: a small
master LP mixes the plans found so far under the node memory rows, its duals
are the next prices, and the priced DP either returns a plan that improves the
master or proves the master's value is the best bound the prices can give.

When the bounds have not met, :func:`repair` turns the last priced plan into a
feasible one (an over-full node keeps one of its segments - a small search over
which - and the DP re-routes the rest), which may lower the upper bound. When
the two meet, the plan is optimal; otherwise the prices and both bounds make the
MILP small.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import highspy
import numpy as np

from .instance import INF, Instance, score
from .milp import new_highs
from .problem import GIB

ROUNDS = 30
#: Stop when the gap to the best plan shrank by less than STALL_GAIN over the last STALL rounds.
STALL, STALL_GAIN = 3, 0.1
#: DP calls one repair may spend.
REPAIR_CALLS = 8
#: Penalty per GiB of memory the master LP may borrow while it has too few plans to fit.
OVERFLOW_PENALTY = 1e7

Walk = Callable[[Instance], tuple[float, list[np.ndarray], int]]


@dataclass
class Resource:
    """A node-wide additive limit: sum over a node's units of ``weight[i, n]`` <= ``capacity[n]``."""

    name: str
    weight: np.ndarray
    capacity: np.ndarray


def resources(inst: Instance, stage_cap: float) -> list[Resource]:
    """The limits the DP checks only per segment: memory, stability, and the stage cap if any."""
    allowed = np.isfinite(inst.unit_cost)
    out = [Resource("memory", np.broadcast_to(inst.mem[:, None] / GIB, allowed.shape), inst.capacity / GIB)]
    load = np.where(allowed, inst.load, 0.0)
    if load.any():
        # Feasible plans keep load < 1 - u; no margin here, or the bound would not hold for them.
        out.append(Resource("load", load, np.maximum(1.0 - inst.base_util, 0.0)))
    if np.isfinite(stage_cap):
        out.append(Resource("stage", np.where(allowed, inst.stage, 0.0), np.full(inst.num_nodes, stage_cap)))
    return out


@dataclass
class Tightened:
    bound: float
    #: The instance with the best bound's prices in its unit costs, and the prices' offset
    #: (sum of price x capacity): its DP value minus the offset bounds Phi from below.
    priced: Instance
    offset: float
    rounds: int


def priced(inst: Instance, limits: list[Resource], prices: np.ndarray) -> Instance:
    """The instance with resource prices in every unit's cost (for bounds, never for answers)."""
    count = inst.num_nodes
    cost = inst.unit_cost.copy()
    for r, limit in enumerate(limits):
        cost = cost + prices[None, r * count : (r + 1) * count] * limit.weight
    return dataclasses.replace(inst, unit_cost=cost, _prefix={})


def _usage(limits: list[Resource], assign: np.ndarray) -> np.ndarray:
    rows = np.arange(len(assign))
    count = limits[0].capacity.shape[0]
    return np.concatenate(
        [np.bincount(assign, weights=x.weight[rows, assign], minlength=count) for x in limits]
    )


def _memory_gib(inst: Instance, assign: np.ndarray) -> np.ndarray:
    return np.bincount(assign, weights=inst.mem / GIB, minlength=inst.num_nodes)


def _master(costs: list[float], usage: list[np.ndarray], capacity: np.ndarray) -> tuple[float, np.ndarray]:
    """min sum l_p c_p  s.t.  sum l_p use_p <= cap (+ penalised overflow), sum l_p = 1; (value, prices)."""
    plans, count = len(costs), len(capacity)
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = plans + count, count + 1
    lp.col_cost_ = np.concatenate([np.array(costs), np.full(count, OVERFLOW_PENALTY)])
    lp.col_lower_ = np.zeros(plans + count)
    lp.col_upper_ = np.full(plans + count, highspy.kHighsInf)
    lp.row_lower_ = np.concatenate([np.full(count, -highspy.kHighsInf), [1.0]])
    lp.row_upper_ = np.concatenate([capacity, [1.0]])
    starts, index, value = [0], [], []
    for use in usage:
        rows = np.nonzero(use)[0]
        index += [*rows.tolist(), count]
        value += [*use[rows].tolist(), 1.0]
        starts.append(len(index))
    for j in range(count):  # overflow slack of row j
        index.append(j)
        value.append(-1.0)
        starts.append(len(index))
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
    lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
    lp.a_matrix_.value_ = np.array(value)
    solver = new_highs()
    solver.passModel(lp)
    solver.run()
    duals = np.array(solver.getSolution().row_dual[:count])
    return float(solver.getInfo().objective_function_value), np.maximum(0.0, -duals)


def tighten(
    inst: Instance,
    walk: Walk,
    offer: Callable[[list[np.ndarray]], float],
    seeds: list[np.ndarray],
    bound: float,
    close: Callable[[float, float], bool],
    stage_cap: float = INF,
) -> Tightened:
    """Column generation on resource prices, starting from the plans in ``seeds``.

    ``walk`` solves a (priced) instance: (relaxed optimum, candidates, index of the optimum);
    ``offer`` scores plans against the *real* instance and returns the best feasible Phi so far.
    """
    limits = resources(inst, stage_cap)
    capacity = np.concatenate([x.capacity for x in limits])
    costs = [float(x) for x in _relaxed_phi(inst, seeds)]
    usage = [_usage(limits, a) for a in seeds]
    best = Tightened(bound, inst, 0.0, 0)
    gaps: list[float] = []
    incumbent = offer([])
    candidates: list[np.ndarray] = []
    for rounds in range(1, ROUNDS + 1):
        best.rounds = rounds
        master_value, prices = _master(costs, usage, capacity)
        shifted = priced(inst, limits, prices)
        value, candidates, index = walk(shifted)
        if not candidates:
            break
        offset = float(prices @ capacity)
        lower = value - offset
        if lower > best.bound:
            best.bound, best.priced, best.offset = lower, shifted, offset
        plan = candidates[index]
        incumbent = offer(candidates)
        if close(incumbent, best.bound) or lower >= master_value - abs(master_value) * 1e-9:
            break
        gaps.append(incumbent - best.bound)
        if len(gaps) > STALL and gaps[-1] > (1 - STALL_GAIN) * gaps[-1 - STALL]:
            break  # the bound has stopped moving; the MILP closes the rest faster
        costs.append(float(_relaxed_phi(inst, [plan])[0]))
        usage.append(_usage(limits, plan))
    if not close(incumbent, best.bound) and candidates:
        offer([fixed] if (fixed := repair(inst, candidates[index], walk)) is not None else [])
    return best


def _relaxed_phi(inst: Instance, assigns: list[np.ndarray]) -> np.ndarray:
    """Phi of plans ignoring node-wide limits (what the master LP mixes)."""
    raw = score(inst, np.array(assigns)).raw
    return np.where(np.isfinite(raw), raw, OVERFLOW_PENALTY)


def repair(inst: Instance, assign: np.ndarray, walk: Walk, budget: int = REPAIR_CALLS) -> np.ndarray | None:
    """A feasible plan near ``assign``, or None: the best of a small search over which segment an
    over-full node keeps (the others are forbidden to it, so the DP re-routes them), depth first."""
    best, best_phi, calls = None, INF, 0
    stack = [(assign, inst.unit_cost)]
    while stack:
        plan, cost = stack.pop()
        excess = _memory_gib(inst, plan) - inst.capacity / GIB
        if excess.max() <= 0:
            phi = float(score(inst, plan).phi[0])
            if phi < best_phi:
                best, best_phi = plan, phi
            continue
        node = int(np.argmax(excess))
        starts = [0] + [i for i in range(1, inst.n) if plan[i] != plan[i - 1]]
        runs = [(a, b) for a, b in zip(starts, [*starts[1:], inst.n], strict=True) if plan[a] == node]
        runs.sort(key=lambda r: inst.mem[r[0] : r[1]].sum())
        for keep in runs:  # the largest is pushed last, so explored first
            if calls >= budget:
                break
            narrowed = cost.copy()
            for a, b in runs:
                if (a, b) != keep:
                    narrowed[a:b, node] = INF
            calls += 1
            narrow = dataclasses.replace(inst, unit_cost=narrowed, allowed=np.isfinite(narrowed), _prefix={})
            _, candidates, chosen = walk(narrow)
            if candidates:
                stack.append((candidates[chosen], narrowed))
    return best
