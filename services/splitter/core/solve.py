"""Solve one problem with the requested solver; the one entry point server.py calls.

Every answer is re-scored by the reference cost model (``costmodel.evaluate``)
and checked against constraints (3)-(5): the breakdown a caller sees is the
same whichever solver produced the plan.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import exact, instance
from .brute import TooLarge, brute_force
from .costmodel import Breakdown, evaluate
from .diagnose import diagnose
from .greedy import greedy
from .problem import Mode, Plan, Problem, ProblemError, SolverKind

__all__ = ["Infeasible", "Solution", "TooLarge", "evaluate_current", "solve"]


class Infeasible(Exception):
    """No plan satisfies the constraints; ``reason`` names the one that fails."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Solution:
    plan: Plan
    cost: Breakdown
    solver: SolverKind
    solve_ms: float
    #: How it was solved and whether it is proven optimal.
    detail: str
    proven: bool


def solve(
    problem: Problem,
    mode: Mode = Mode.RESPLIT,
    kind: SolverKind = SolverKind.EXACT,
    time_limit_s: float | None = None,
) -> Solution:
    """Best plan for ``problem``; raises :class:`Infeasible`, :class:`ProblemError` or :class:`TooLarge`."""
    if mode is Mode.PLACEMENT_ONLY and problem.current is None:
        raise ProblemError(
            "PLACEMENT_ONLY keeps the current boundaries: problem.current (the plan in force) is required"
        )
    started = time.perf_counter()
    inst = instance.build(problem, mode)
    proven = kind is not SolverKind.GREEDY
    if kind is SolverKind.EXACT:
        result = exact.solve(inst, time_limit_s)
        assign, detail, proven = result.assign, result.detail, result.proven
    elif kind is SolverKind.BRUTE_FORCE:
        assign = brute_force(inst)
        detail = "brute force: every assignment of units to nodes scored"
    else:
        assign = greedy(inst)
        detail = (
            "greedy: units in order, each on the cheapest node that still has room (baseline, not optimal)"
        )
    elapsed_ms = (time.perf_counter() - started) * 1e3
    if assign is None:
        reason = diagnose(problem, mode)
        if reason is None:
            raise Infeasible(f"{kind.value} found no plan, but one exists: solve with EXACT")
        raise Infeasible(reason)
    plan = inst.plan_of(assign)
    checked = evaluate(problem, plan)
    if not checked.feasible:
        raise RuntimeError(f"solver {kind.value} returned a plan that breaks {checked.violations}")
    return Solution(plan, checked.breakdown, kind, elapsed_ms, detail, proven)


def evaluate_current(problem: Problem) -> Solution:
    """SOLVE_MODE_EVALUATE: the cost of ``problem.current`` as it stands, nothing chosen.

    Raises :class:`ProblemError` without a current plan and :class:`Infeasible`
    (naming every broken constraint) when the plan cannot run under these nodes
    and links, e.g. a segment on a node that is gone or a saturated node.
    """
    if problem.current is None:
        raise ProblemError("EVALUATE scores the plan in force: problem.current is required")
    started = time.perf_counter()
    checked = evaluate(problem, problem.current)
    if not checked.feasible:
        raise Infeasible("the current plan breaks " + "; ".join(checked.violations))
    elapsed_ms = (time.perf_counter() - started) * 1e3
    return Solution(
        problem.current,
        checked.breakdown,
        SolverKind.EXACT,
        elapsed_ms,
        "evaluate: the current plan scored by the reference cost model (nothing chosen)",
        True,
    )
