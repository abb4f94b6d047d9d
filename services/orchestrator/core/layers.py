"""The pure half of a layer swap (``resplit layers swap`` / ``merge``): which blocks a
request names, the deployment record it turns into, and the plan it proposes.

A swap is a plan change like any other: the same segments on the same nodes at the
next epoch, with the deployment's ``unit_sources`` changed (the workers of the blocks
that changed load the new weights beside the old ones; the others re-file theirs)
and the plan's ``layers`` saying from which unit on the weights changed and what
sessions that began before do. ``services/orchestrator/layers.py`` commits it.
"""

from __future__ import annotations

from collections.abc import Sequence

from resplit.core.units import PlanError
from resplit.v1 import common_pb2

#: What a session that began before a swap does when the request does not say: drain.
DEFAULT_SESSIONS = common_pb2.SESSION_POLICY_DRAIN
POLICY_NAMES = {common_pb2.SESSION_POLICY_DRAIN: "drain", common_pb2.SESSION_POLICY_REPLAY: "replay"}


def requested_units(ranges: Sequence[common_pb2.UnitRange], num_units: int) -> list[int]:
    """The block units (1..L) the ranges cover, sorted; PlanError for an empty or bad range."""
    if not ranges:
        raise PlanError("name the blocks to swap (units A:B, blocks are 1..L)")
    blocks = num_units - 2
    units: set[int] = set()
    for r in ranges:
        if r.end <= r.start:
            raise PlanError(f"units [{r.start}, {r.end}) are empty")
        if r.start < 1 or r.end > blocks + 1:
            raise PlanError(
                f"units [{r.start}, {r.end}) are not all transformer blocks: only blocks 1..{blocks} "
                f"can be swapped (0 is the embedding, {blocks + 1} the head)"
            )
        units.update(range(r.start, r.end))
    return sorted(units)


def session_policy(value: int) -> int:
    """The request's session policy, DRAIN when unspecified; PlanError for an unknown one."""
    if value == common_pb2.SESSION_POLICY_UNSPECIFIED:
        return DEFAULT_SESSIONS
    if value not in POLICY_NAMES:
        raise PlanError(f"unknown session policy {value}")
    return value


def swapped(
    spec: common_pb2.Deployment, units: Sequence[int], source_dir: str
) -> tuple[common_pb2.Deployment, list[int]]:
    """(the deployment record with ``units`` read from ``source_dir``, the units whose
    source changed). ``source_dir`` equal to the model's own directory swaps them back."""
    current = {s.unit: s.model_dir for s in spec.unit_sources}
    changed = [u for u in units if current.get(u, spec.model_dir) != source_dir]
    for unit in units:
        current[unit] = source_dir
    record = common_pb2.Deployment()
    record.CopyFrom(spec)
    del record.unit_sources[:]
    for unit in sorted(current):
        if current[unit] != spec.model_dir:
            record.unit_sources.add(unit=unit, model_dir=current[unit])
    return record, changed


def swap_plan(in_force: common_pb2.Plan, changed: Sequence[int], sessions: int) -> common_pb2.Plan:
    """The plan a swap proposes: the segments in force, ``layers`` from the first changed
    unit (its epoch is set at commit)."""
    return common_pb2.Plan(
        segments=in_force.segments,
        layers=common_pb2.LayerChange(first_unit=min(changed), sessions=sessions),
    )


def describe(units: Sequence[int], source_dir: str, sessions: int) -> str:
    """``swap blocks 2-3, 5 from DIR (sessions: drain)`` for the plan's reason and the log."""
    spans: list[list[int]] = []
    for unit in sorted(units):
        if spans and spans[-1][1] == unit - 1:
            spans[-1][1] = unit
        else:
            spans.append([unit, unit])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
    return f"swap blocks {text} from {source_dir} (sessions: {POLICY_NAMES[sessions]})"


__all__ = ["DEFAULT_SESSIONS", "describe", "requested_units", "session_policy", "swap_plan", "swapped"]
