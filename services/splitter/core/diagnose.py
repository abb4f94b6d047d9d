"""Why a problem has no plan, in one sentence naming the constraint that fails.

Cheap counting checks come first (they name units, nodes and GiB); when none
of them explains it, constraints are relaxed one at a time and the exact
solver re-run: the first relaxation that makes a plan appear is the culprit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from . import exact, instance
from .problem import GIB, Link, Mode, Node, Problem


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def _units(first: int, last: int) -> str:
    return f"unit {first}" if first == last else f"units {first}-{last}"


def feasible(problem: Problem, mode: Mode) -> bool:
    return exact.solve(instance.build(problem, mode)).assign is not None


def diagnose(
    problem: Problem, mode: Mode, is_feasible: Callable[[Problem, Mode], bool] = feasible
) -> str | None:
    """The reason no plan exists, or None when one does."""
    return _counting(problem, mode) or _relaxing(problem, mode, is_feasible)


def _counting(problem: Problem, mode: Mode) -> str | None:
    units = problem.model.units
    n = len(units)
    mem = [problem.unit_memory_bytes(u) for u in units]
    usable = [x for x in problem.nodes if x.usable]
    if not usable:
        return "capacity (4): every node is saturated (utilization 1.0), none can take work"
    hard = not problem.policy.soft_privacy
    trusted = [x for x in usable if problem.is_trusted(x)]
    depth = min(problem.policy.private_depth, n - 2)
    critical = ", ".join([_units(0, depth), f"the head (unit {n - 1})"])
    if hard and not trusted:
        return (
            f"privacy (5): no usable trusted node, but {critical} must run on one "
            "(mark a node trusted or list it in policy.trusted_node_ids)"
        )
    if hard:
        reason = _trusted_memory(problem, mem, trusted, depth)
        if reason:
            return reason
    biggest = max(usable, key=lambda x: x.memory_bytes)
    for i, unit in enumerate(units):
        if mem[i] > biggest.memory_bytes:
            return (
                f"capacity (4): unit {i} ({unit.kind or 'unit'}) needs {_gib(mem[i])}, "
                f"the largest usable node {biggest.node_id!r} has {_gib(biggest.memory_bytes)}"
            )
    if mode is Mode.PLACEMENT_ONLY and problem.current is not None:
        for seg in problem.current.segments:
            size = sum(mem[seg.start : seg.end])
            if size > biggest.memory_bytes:
                return (
                    f"capacity (4): the fixed segment [{seg.start}, {seg.end}) needs {_gib(size)}, "
                    f"the largest usable node {biggest.node_id!r} has {_gib(biggest.memory_bytes)} "
                    "(RESPLIT may cut it)"
                )
    total = sum(x.memory_bytes for x in usable)
    if sum(mem) > total:
        return f"capacity (4): the model needs {_gib(sum(mem))}, the usable nodes have {_gib(total)} together"
    return None


def _trusted_memory(problem: Problem, mem: list[int], trusted: list[Node], depth: int) -> str | None:
    """Constraint (5) against memory: can the trusted nodes hold the privacy-critical units?"""
    n = len(mem)
    biggest = max(trusted, key=lambda x: x.memory_bytes)
    for i in problem.critical_units():
        if mem[i] > biggest.memory_bytes:
            kind = problem.model.units[i].kind or "unit"
            return (
                f"privacy (5): no trusted node has memory for unit {i} ({kind}, {_gib(mem[i])}); "
                f"the largest trusted node {biggest.node_id!r} has {_gib(biggest.memory_bytes)}"
            )
    need, room = sum(mem[: depth + 1]), sum(x.memory_bytes for x in trusted)
    if need > room:
        where = (
            f"the only trusted node {biggest.node_id!r} has {_gib(room)}"
            if len(trusted) == 1
            else f"the trusted nodes have {_gib(room)} together"
        )
        units = _units(0, depth)
        return f"privacy (5): no trusted node has memory for {units} (they need {_gib(need)}; {where})"
    if need + mem[n - 1] > room:
        return (
            f"privacy (5): the trusted nodes have {_gib(room)} together, but {_units(0, depth)} and the head "
            f"(unit {n - 1}) need {_gib(need + mem[n - 1])}"
        )
    return None


def _relaxing(problem: Problem, mode: Mode, is_feasible: Callable[[Problem, Mode], bool]) -> str | None:
    if is_feasible(problem, mode):
        return None
    work = problem.workload
    if work.request_rate > 0:
        calm = dataclasses.replace(problem, workload=dataclasses.replace(work, request_rate=0.0))
        if is_feasible(calm, mode):
            return (
                f"capacity (4): at {work.request_rate:g} requests/s every plan drives a hosting node to "
                "utilization >= 1 (its queue would grow without bound)"
            )
    ids = [x.node_id for x in problem.nodes]
    present = {(x.src, x.dst) for x in problem.links}
    missing = [(a, b) for a in ids for b in ids if a != b and (a, b) not in present]
    if missing:
        meshed = dataclasses.replace(
            problem, links=(*problem.links, *(Link(a, b, 1e6, 0.0) for a, b in missing))
        )
        if is_feasible(meshed, mode):
            shown = ", ".join(f"{a}->{b}" for a, b in missing[:6]) + (" ..." if len(missing) > 6 else "")
            return (
                "links: the nodes that can hold the model are not connected by a chain of links "
                f"(missing: {shown})"
            )
    if not problem.policy.soft_privacy:
        everyone = tuple(dataclasses.replace(x, trusted=True) for x in problem.nodes)
        if is_feasible(dataclasses.replace(problem, nodes=everyone), mode):
            n = problem.num_units
            depth = min(problem.policy.private_depth, n - 2)
            return (
                f"privacy (5): {_units(0, depth)} and the head (unit {n - 1}) cannot all sit on trusted "
                "nodes within their memory next to the rest of the model"
            )
    return "capacity (4): no assignment of the units fits into the nodes' memory"
