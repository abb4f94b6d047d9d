"""The exact MILP (HiGHS) for when the chain DP's certificate fails.

Formulation: the DP's own graph, as a flow. Nodes are "a segment starts at cut t
on node k" and "a segment ends at cut t on node k"; columns are

* ``z[t, t', k]`` binary: segment [cut t, cut t') on node k (only segments that
  pass their own limits: privacy (5), memory, stability, stage caps);
* ``h[t, j, k]`` continuous: the hop at cut t from node j to node k (only where a
  link exists). Flow conservation makes h integral once z is.

and the rows the DP cannot express, summed over *all* segments a node hosts:
memory ``sum mem(seg) z <= M_n`` and stability ``u_n + sum load(seg) z < 1``
(constraint 4), ``U >= u_n + sum load z`` for the beta term, and for throughput
the stage rows per node and per directed link. Its LP relaxation is the
Dantzig-Wolfe master of ``lagrange.py``, as strong as the best memory prices.

Columns that cannot be in an optimal plan are left out first: the priced DP
tables bound the cheapest plan through each z and h from below (valid for every
feasible plan), and anything above a known feasible plan's Phi goes. What HiGHS
then proves optimal is optimal for the full problem.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import highspy
import numpy as np

from . import dp
from .instance import INF, REL_TOL, Instance

MIB = 1024.0**2
#: rho < 1 as rho <= 1 - margin, far above HiGHS's 1e-9 feasibility tolerance.
STABILITY_MARGIN = 1e-7
_quiet = False


def new_highs() -> highspy.Highs:
    """A silent HiGHS; its C++ constructor prints a banner once per process, so swallow that one."""
    global _quiet
    if _quiet:
        solver = highspy.Highs()
    else:
        with _stdout_to_devnull():
            solver = highspy.Highs()
        _quiet = True
    solver.setOptionValue("output_flag", False)
    # One thread everywhere: the scheduler is per process and refuses a later change (and the
    # service machine has 2 cores shared with everything else).
    solver.setOptionValue("threads", 1)
    return solver


@contextlib.contextmanager
def _stdout_to_devnull():
    try:
        fd = os.dup(1)
    except OSError:  # no stdout at all
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


@dataclass
class MilpResult:
    assign: np.ndarray | None
    #: Objective HiGHS reports (Phi, or the bottleneck for min_bottleneck).
    objective: float
    #: "optimal", "infeasible" (proven) or "limit" (time limit; assign is the best found, if any).
    status: str
    #: HiGHS's lower bound on the objective when it stopped.
    bound: float
    columns: int
    rows: int


class _Builder:
    """Collects columns and sparse row entries, then hands HiGHS one CSC matrix."""

    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.integer: list[bool] = []
        self.row_lower: list[float] = []
        self.row_upper: list[float] = []
        self.entries: list[tuple[int, int, float]] = []
        #: Objective of a known feasible solution: HiGHS prunes every branch that cannot beat it.
        self.cutoff: float | None = None

    def column(self, cost: float, lower: float, upper: float, integer: bool = False) -> int:
        self.cost.append(cost)
        self.lower.append(lower)
        self.upper.append(upper)
        self.integer.append(integer)
        return len(self.cost) - 1

    def row(self, terms: list[tuple[int, float]], lower: float, upper: float) -> None:
        index = len(self.row_lower)
        self.row_lower.append(lower)
        self.row_upper.append(upper)
        self.entries.extend((index, col, coef) for col, coef in terms)

    def solve(self, time_limit_s: float | None) -> tuple[highspy.Highs, str]:
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = len(self.cost), len(self.row_lower)
        lp.col_cost_ = np.array(self.cost)
        lp.col_lower_, lp.col_upper_ = np.array(self.lower), np.array(self.upper)
        lp.row_lower_, lp.row_upper_ = np.array(self.row_lower), np.array(self.row_upper)
        entries = np.array(self.entries, dtype=float).reshape(-1, 3)
        order = np.lexsort((entries[:, 0], entries[:, 1]))
        rows, cols, values = (
            entries[order, 0].astype(np.int32),
            entries[order, 1].astype(int),
            entries[order, 2],
        )
        starts = np.zeros(lp.num_col_ + 1, dtype=np.int32)
        starts[1:] = np.cumsum(np.bincount(cols, minlength=lp.num_col_))
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = starts, rows, values
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = lp.num_col_, lp.num_row_
        lp.integrality_ = [
            highspy.HighsVarType.kInteger if flag else highspy.HighsVarType.kContinuous
            for flag in self.integer
        ]
        solver = new_highs()
        solver.passModel(lp)
        for name, value in (
            ("mip_rel_gap", 0.0),
            ("mip_abs_gap", 1e-9),
            ("mip_feasibility_tolerance", 1e-9),
            ("primal_feasibility_tolerance", 1e-9),
            ("random_seed", 0),
            # Trust pseudo-costs after 2 observations instead of 8: strong branching dominated the
            # run time on the near-symmetric clusters of bench/splitter_scale.py.
            ("mip_pscost_minreliable", 2),
        ):
            solver.setOptionValue(name, value)
        if time_limit_s is not None:
            solver.setOptionValue("time_limit", float(time_limit_s))
        if self.cutoff is not None:
            # A good plan is known (and HiGHS's setSolution returned stale values in 1.16 when
            # presolve finished the problem): prune against its objective, spend no time on heuristics.
            solver.setOptionValue("objective_bound", float(self.cutoff))
            solver.setOptionValue("mip_heuristic_effort", 0.0)
        solver.run()
        return solver, solver.modelStatusToString(solver.getModelStatus())


def solve(
    inst: Instance,
    *,
    stage_cap: float = INF,
    incumbent: float = INF,
    bounds: tuple[Instance, float] | None = None,
    lower_bound: float = -INF,
    min_bottleneck: bool = False,
    time_limit_s: float | None = None,
) -> MilpResult:
    """Minimise Phi (or, ``min_bottleneck``, the slowest stage) exactly.

    ``incumbent`` is the objective (Phi, or the bottleneck) of a known feasible plan; when nothing
    beats it HiGHS answers "infeasible" and that plan is optimal. ``bounds`` = (an instance whose
    DP value minus ``offset`` is a valid lower bound on Phi - the Lagrangian-priced one -,
    offset); columns whose bound exceeds the incumbent cannot be in an optimal plan and are left
    out. ``lower_bound`` (a proven bound on the objective) is handed to HiGHS as a row.
    """
    count = inst.num_nodes
    caps = dp.Caps(stage=stage_cap)
    pre = dp.prefix(inst)
    points = np.array([0, *inst.cuts, inst.n])
    last = len(points) - 1
    tables, limit = None, INF
    if np.isfinite(incumbent) and not min_bottleneck:
        bound_inst, offset = bounds if bounds is not None else (inst, 0.0)
        tables = dp.tables(bound_inst, caps)
        bound_pre = dp.prefix(bound_inst)
        limit = incumbent + abs(incumbent) * REL_TOL + 1e-9 - inst.beta * inst.u_floor + offset
    b = _Builder()
    segments: dict[tuple[int, int, int], int] = {}
    for t in range(last):
        ends = np.arange(t + 1, t + 2) if inst.allow_same else np.arange(t + 1, last + 1)
        ok = dp._segment_ok(inst, pre, np.full(len(ends), points[t]), points[ends], caps)
        if tables is not None:
            through = tables.arrive[t][None, :] + (bound_pre.cost[points[ends]] - bound_pre.cost[points[t]])
            ok &= through + tables.leave[ends] <= limit
        cost = pre.cost[points[ends]] - pre.cost[points[t]]
        for e, k in zip(*np.nonzero(ok), strict=True):
            value = 0.0 if min_bottleneck else float(cost[e, k])
            segments[(t, int(ends[e]), int(k))] = b.column(value, 0.0, 1.0, integer=True)
    hops: dict[tuple[int, int, int], int] = {}
    for t in range(1, last):
        cut = int(points[t])
        matrix = dp._hop_matrix(inst, cut, caps)
        ok = np.isfinite(matrix)
        if tables is not None:
            ok &= tables.finish[t][:, None] + bound_inst.hop_cost[cut] + tables.start[t][None, :] <= limit
        for j, k in zip(*np.nonzero(ok), strict=True):
            hops[(t, int(j), int(k))] = b.column(0.0 if min_bottleneck else float(matrix[j, k]), 0.0, 1.0)
    _flow_rows(b, segments, hops, last, count)
    u_col, b_col = _node_rows(inst, b, segments, hops, pre, points, stage_cap, min_bottleneck)
    # Without a U column, beta * U is the constant beta * u_floor that the MILP objective leaves out.
    constant = 0.0 if u_col is not None or min_bottleneck else inst.beta * inst.u_floor
    if b_col is not None and np.isfinite(lower_bound):
        b.lower[b_col] = lower_bound * (1 - 1e-9)
    elif np.isfinite(lower_bound):
        # Phi >= the Lagrangian bound: HiGHS's own LP bound starts where the DP's left off.
        rhs = lower_bound - constant - abs(lower_bound) * 1e-9 - 1e-9
        b.row([(c, v) for c, v in enumerate(b.cost) if v != 0], rhs, INF)
    if np.isfinite(incumbent):
        b.cutoff = incumbent - constant + abs(incumbent) * REL_TOL + 1e-9
    solver, status = b.solve(time_limit_s)
    info = solver.getInfo()
    verdict = {"Optimal": "optimal", "Infeasible": "infeasible"}.get(status, "limit")
    if verdict == "limit" and status != "Time limit reached":
        raise RuntimeError(f"HiGHS ended with status {status!r}")
    if info.primal_solution_status != 2:  # kSolutionStatusFeasible
        return MilpResult(None, INF, verdict, float(info.mip_dual_bound), len(b.cost), len(b.row_lower))
    values = np.array(solver.getSolution().col_value)
    assign = np.full(inst.n, -1)
    for (t, t2, k), col in segments.items():
        if values[col] > 0.5:
            assign[points[t] : points[t2]] = k
    if (assign < 0).any() or abs(float(np.dot(b.cost, values)) - info.objective_function_value) > 1e-6 * max(
        1.0, abs(info.objective_function_value)
    ):
        raise RuntimeError("HiGHS returned column values that do not match its objective")
    objective = float(info.objective_function_value)
    return MilpResult(assign, objective, verdict, float(info.mip_dual_bound), len(b.cost), len(b.row_lower))


def _flow_rows(
    b: _Builder,
    segments: dict[tuple[int, int, int], int],
    hops: dict[tuple[int, int, int], int],
    last: int,
    count: int,
) -> None:
    """One path from cut 0 to the last: segments end where hops leave, hops arrive where segments start."""
    ending: dict[tuple[int, int], list[tuple[int, float]]] = {}
    starting: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for (t, t2, k), col in segments.items():
        starting.setdefault((t, k), []).append((col, -1.0))
        ending.setdefault((t2, k), []).append((col, 1.0))
    for (t, j, k), col in hops.items():
        ending.setdefault((t, j), []).append((col, -1.0))
        starting.setdefault((t, k), []).append((col, 1.0))
    b.row([term for k in range(count) for term in starting.get((0, k), [])], -1.0, -1.0)
    for t in range(1, last):
        for k in range(count):
            for table in (ending, starting):
                if (t, k) in table:
                    b.row(table[(t, k)], 0.0, 0.0)


def _node_rows(
    inst: Instance,
    b: _Builder,
    segments: dict[tuple[int, int, int], int],
    hops: dict[tuple[int, int, int], int],
    pre: dp.Prefix,
    points: np.ndarray,
    stage_cap: float,
    min_bottleneck: bool,
) -> tuple[int | None, int | None]:
    """Constraint (4) over all of a node's segments, the U epigraph, and stage rows.

    Returns the columns of U (latency objective with a varying U) and of the bottleneck (throughput).
    """
    per_node: dict[int, list[tuple[int, float, float, float]]] = {}
    for (t, t2, k), col in segments.items():
        a, e = points[t], points[t2]
        per_node.setdefault(k, []).append(
            (col, pre.mem[e] - pre.mem[a], pre.load[e][k] - pre.load[a][k], pre.stage[e][k] - pre.stage[a][k])
        )
    u_col = b.column(inst.beta, inst.u_floor, INF) if inst.u_varies and not min_bottleneck else None
    b_col = b.column(1.0, 0.0, INF) if min_bottleneck else None
    for k, cols in per_node.items():
        if len(cols) > 1:
            # Integer bytes: <= M + 0.5 B in MiB keeps HiGHS's tolerance far below one byte.
            b.row([(c, m / MIB) for c, m, _, _ in cols], -INF, (inst.capacity[k] + 0.5) / MIB)
        loads = [(c, load) for c, _, load, _ in cols if load > 0]
        if len(loads) > 1:
            b.row(loads, -INF, 1.0 - inst.base_util[k] - STABILITY_MARGIN)
        if u_col is not None and loads:
            b.row([*loads, (u_col, -1.0)], -INF, -float(inst.base_util[k]))
        stages = [(c, stage) for c, _, _, stage in cols]
        if b_col is not None:
            b.row([*stages, (b_col, -1.0)], -INF, 0.0)
        elif np.isfinite(stage_cap) and len(stages) > 1:
            b.row(stages, -INF, stage_cap)
    links: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for (t, j, k), col in hops.items():
        if j != k:
            links.setdefault((j, k), []).append((col, float(inst.hop_stage[points[t], j, k])))
    for terms in links.values():
        if b_col is not None:
            b.row([*terms, (b_col, -1.0)], -INF, 0.0)
        elif np.isfinite(stage_cap) and len(terms) > 1:
            b.row(terms, -INF, stage_cap)
    return u_col, b_col
