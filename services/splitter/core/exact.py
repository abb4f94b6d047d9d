"""The exact solver: DP with a certificate; bounds, then a pruned MILP, when it fails.

Latency objective, ``Phi = A + beta U`` with A additive (alpha L + gamma P +
migration) and ``U = max_n rho_n``:

1. **Parametric walk over U.** The DP minimises A subject to every segment
   keeping its node below a utilization cap ``tau``. Starting at ``tau = 1``
   (stability), each step takes the DP's best path p_k, notes its relaxed
   ``U_k`` and re-solves with ``tau = U_k`` (strictly below). Any path with
   relaxed U >= U_k was beaten on A by p_k, so the best ``A + beta U`` seen is
   the relaxation's optimum once A_k + beta U_floor cannot beat it. (With
   beta = 0, or no request rate, U is a constant and one DP run suffices.)
2. **Certificate.** The relaxation only checks each segment on its own. If a
   plan it produced is feasible node-wide (memory, stability, stage caps) and
   its true Phi equals the relaxed optimum - always so when no node hosts two
   segments - nothing can be cheaper: done.
3. **Bounds.** Otherwise the tracked DP (``dp.chain_tracked``) gives a feasible
   plan, an upper bound, and column generation (``lagrange.py``) prices the
   node-wide limits into the DP for a stronger lower bound. If they meet: done.
4. **MILP** (``milp.py``): the DP's flow graph with node-wide rows, every column
   whose priced bound exceeds the upper bound removed. HiGHS proves the optimum.

Throughput objective: the min-max DP gives a lower bound on the bottleneck
stage; if a feasible plan (tracked min-max DP) reaches it, that is the optimum
bottleneck, else the MILP finds the exact minimum bottleneck. Among plans with
the optimal bottleneck, Phi is minimised as above (steps 1-4 with every stage
capped there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import dp, lagrange, milp, ring
from .instance import INF, REL_TOL, Instance, score
from .problem import Objective

#: The walk normally takes a handful of steps; past this many, the MILP settles it (still exact).
MAX_WALK_STEPS = 200


@dataclass
class ExactResult:
    assign: np.ndarray | None
    detail: str
    proven: bool = True


def _close(value: float, bound: float) -> bool:
    return value <= bound + abs(bound) * REL_TOL + 1e-12


def solve(inst: Instance, time_limit_s: float | None = None) -> ExactResult:
    """The optimum: one chain problem per node unit 0 may run on (``ring.py``), the best
    of them; proven when each is."""
    subs = ring.by_first_node(inst)
    limit = None if time_limit_s is None else time_limit_s / len(subs)
    results = [_chain(sub, limit) for sub in subs]
    chosen = ring.best(inst, [r.assign for r in results])
    result = results[0] if chosen is None else results[chosen]
    proven = all(r.proven for r in results)
    detail = result.detail
    if len(subs) > 1:
        detail += f" (best of {len(subs)}, one per node unit 0 may run on: the ring's closing link)"
    return ExactResult(result.assign, detail, proven)


def _chain(inst: Instance, time_limit_s: float | None) -> ExactResult:
    if inst.problem.policy.objective is Objective.THROUGHPUT:
        return _throughput(inst, time_limit_s)
    return _latency(inst, INF, time_limit_s)


@dataclass
class Walk:
    #: Lower bound on Phi over every plan (the relaxation's optimum, or less if the walk was cut short).
    bound: float
    candidates: list[np.ndarray]
    steps: int
    #: Index of the relaxation's optimum in ``candidates``.
    best: int


def _walk(inst: Instance, stage_cap: float) -> Walk:
    """The parametric walk over U (step 1 of the module docstring)."""
    caps = dp.Caps(stage=stage_cap)
    walk = Walk(INF, [], 0, -1)
    while True:
        path = dp.chain(inst, caps)
        walk.steps += 1
        if path is None:
            return walk
        relaxed_u = max(inst.u_floor, path.seg_rho) if inst.u_varies else inst.u_floor
        value = path.value + inst.beta * relaxed_u
        walk.candidates.append(path.assign)
        if value < walk.bound:
            walk.bound, walk.best = value, len(walk.candidates) - 1
        if not inst.u_varies or path.seg_rho <= inst.u_floor:
            return walk
        floor = path.value + inst.beta * inst.u_floor
        if floor >= walk.bound:
            return walk
        if walk.steps >= MAX_WALK_STEPS:
            walk.bound = min(walk.bound, floor)
            return walk
        caps = dp.Caps(rho=path.seg_rho, stage=stage_cap)


class _Pool:
    """The best plan seen so far that is feasible for the real (node-wide) constraints."""

    def __init__(self, inst: Instance, stage_cap: float) -> None:
        self.inst, self.stage_cap = inst, stage_cap
        self.phi, self.assign = INF, None

    def offer(self, assigns: list[np.ndarray]) -> float:
        if assigns:
            scores = score(self.inst, np.array(assigns))
            ok = scores.feasible & (scores.bottleneck <= self.stage_cap)
            phi = np.where(ok, scores.phi, INF)
            idx = int(np.argmin(phi))
            if phi[idx] < self.phi:
                self.phi, self.assign = float(phi[idx]), assigns[idx]
        return self.phi


def _latency(inst: Instance, stage_cap: float, time_limit_s: float | None) -> ExactResult:
    walk = _walk(inst, stage_cap)
    if not walk.candidates:
        return ExactResult(None, "the per-segment relaxation is already infeasible")
    pool = _Pool(inst, stage_cap)
    pool.offer(walk.candidates)
    how = "exact: chain DP over (cut point, node) states" + (
        f" with a {walk.steps}-step walk over U" if inst.u_varies else ""
    )
    if _close(pool.phi, walk.bound):
        return ExactResult(
            pool.assign, how + "; its optimum keeps every node within its limits, so it is optimal node-wide"
        )
    tracked = dp.chain_tracked(inst, dp.Caps(stage=stage_cap))
    pool.offer([tracked.assign] if tracked is not None else [])

    def priced_walk(priced: Instance) -> tuple[float, list[np.ndarray], int]:
        result = _walk(priced, stage_cap)
        return result.bound, result.candidates, result.best

    tight = lagrange.tighten(inst, priced_walk, pool.offer, walk.candidates, walk.bound, _close, stage_cap)
    how += f", node-wide limits priced by {tight.rounds} rounds of column generation"
    if pool.assign is not None and _close(pool.phi, tight.bound):
        return ExactResult(pool.assign, how + ": a feasible plan meets the lower bound, so it is optimal")
    result = milp.solve(
        inst,
        stage_cap=stage_cap,
        incumbent=pool.phi,
        bounds=(tight.priced, tight.offset),
        lower_bound=tight.bound,
        time_limit_s=time_limit_s,
    )
    if result.assign is not None:
        pool.offer([result.assign])
    how += f", then a MILP (HiGHS) of {result.columns} columns left after pruning by the bound"
    if result.status == "limit":
        if pool.assign is None:
            return ExactResult(None, how + ": time limit before any feasible plan was found", False)
        gap = (pool.phi - max(result.bound, tight.bound)) / max(abs(pool.phi), 1e-12)
        note = f": time limit, best plan found is within {gap:.3%} of optimal (not proven)"
        return ExactResult(pool.assign, how + note, False)
    if pool.assign is None:
        return ExactResult(None, how + ": proved infeasible")
    return ExactResult(pool.assign, how + ": proved optimal")


def _throughput(inst: Instance, time_limit_s: float | None) -> ExactResult:
    relaxed = dp.chain(inst, minmax=True)
    if relaxed is None:
        return ExactResult(None, "the per-segment relaxation is already infeasible")
    lower = relaxed.value
    tracked = dp.chain_tracked(inst, minmax=True)
    upper = float(score(inst, tracked.assign).bottleneck[0]) if tracked is not None else INF
    if upper <= lower * (1 + REL_TOL):
        how = f"throughput: the min-max DP bottleneck {lower:.4g} ms/token is reached by a feasible plan"
        proven = True
    else:
        cap = upper * (1 + REL_TOL) if np.isfinite(upper) else INF
        exact = milp.solve(
            inst,
            min_bottleneck=True,
            stage_cap=cap,
            incumbent=upper,
            lower_bound=lower,
            time_limit_s=time_limit_s,
        )
        if exact.assign is None and not np.isfinite(upper):
            if exact.status == "infeasible":
                return ExactResult(None, "MILP (HiGHS) proved no plan meets the node-wide limits")
            return ExactResult(None, "MILP time limit before any feasible plan was found", False)
        if exact.assign is not None:
            upper = min(upper, float(score(inst, exact.assign).bottleneck[0]))
        proven = exact.status != "limit"  # "infeasible" here: nothing beats the tracked plan
        how = (
            f"throughput: MILP (HiGHS) minimum bottleneck {upper:.4g} ms/token (node-wide limits bind; "
            f"the per-segment bound was {lower:.4g})"
        )
    result = _latency(inst, upper * (1 + REL_TOL), time_limit_s)
    result.detail = how + "; Phi among such plans: " + result.detail
    result.proven = result.proven and proven
    return result
