"""Units, segments and routes: the validation every plan goes through.

A split is an ordered list of contiguous unit ranges covering ``[0, n)``
exactly once (``n = L + 2``: embedding, L blocks, head). Everything that
accepts a plan from outside (an operator, Redis, the wire) checks it here, so
the rules live in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..v1 import common_pb2


class PlanError(ValueError):
    """A split, placement or route that breaks the rules; the message says which."""


class NodeDown(PlanError):
    """A plan names a node that is registered but down: the plan itself is sound and
    could be served once the node is back (callers answer FAILED_PRECONDITION)."""


def check_segments(segments: Sequence[common_pb2.Segment], num_units: int) -> None:
    """Raise :class:`PlanError` unless ``segments`` cover ``[0, num_units)`` in order."""
    if num_units < 3:
        raise PlanError(f"a model has at least 3 units (embedding, one block, head), got {num_units}")
    if not segments:
        raise PlanError("a split needs at least one segment")
    expected = 0
    for i, segment in enumerate(segments):
        start, end = segment.units.start, segment.units.end
        if start != expected:
            raise PlanError(
                f"segment {i} starts at unit {start}, expected {expected} (segments must be contiguous)"
            )
        if end <= start:
            raise PlanError(f"segment {i} [{start}, {end}) is empty")
        expected = end
    if expected != num_units:
        raise PlanError(f"segments end at unit {expected}, but the model has {num_units} units")


def route_of(plan: common_pb2.Plan, nodes: Iterable[common_pb2.Node]) -> common_pb2.Route:
    """The hops of ``plan`` with each node's address; every node must be UP. The plan's
    last change of layer weights goes with it: a session decides from it whether its
    cache may move to the new hops."""
    by_id: Mapping[str, common_pb2.Node] = {n.node_id: n for n in nodes}
    route = common_pb2.Route(deployment=plan.deployment, epoch=plan.epoch)
    if plan.HasField("layers"):
        route.layers.CopyFrom(plan.layers)
    for segment in plan.segments:
        node = by_id.get(segment.node_id)
        where = f"node {segment.node_id!r} of units [{segment.units.start}, {segment.units.end})"
        if node is None:
            raise PlanError(f"{where} is not registered")
        if node.state != common_pb2.NODE_STATE_UP:
            raise NodeDown(f"{where} is down")
        route.hops.add(units=segment.units, node_id=node.node_id, address=node.address)
    return route
