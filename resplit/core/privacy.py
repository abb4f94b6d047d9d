"""Privacy and placement checks every plan passes before any worker is asked.

Privacy-critical units (the embedding, ``private_depth`` blocks after it, and
the head) must sit on trusted nodes: raw input and output never leave them.
Shared by the orchestrator (before it proposes a plan) and the broadcaster
(before it rolls one out), so both refuse the same plans for the same reasons.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..v1 import common_pb2
from .units import NodeDown, PlanError, check_segments


class PrivacyError(PlanError):
    """A privacy-critical unit placed on an untrusted node."""


def privacy_critical(num_units: int, private_depth: int) -> set[int]:
    """The embedding, ``private_depth`` blocks after it, and the head."""
    return set(range(0, min(private_depth, num_units - 2) + 1)) | {num_units - 1}


def check_placement(
    segments: Sequence[common_pb2.Segment],
    nodes: Sequence[common_pb2.Node],
    num_units: int,
    private_depth: int = 0,
    extra_trusted: Sequence[str] = (),
) -> None:
    """Raise PlanError (NodeDown, PrivacyError) unless the plan can be served as is:
    the split covers the model, every node is registered and up, and every
    privacy-critical unit is on a trusted node."""
    check_segments(segments, num_units)
    by_id = {n.node_id: n for n in nodes}
    critical = privacy_critical(num_units, private_depth)
    for segment in segments:
        node = by_id.get(segment.node_id)
        where = f"units [{segment.units.start}, {segment.units.end})"
        if node is None:
            raise PlanError(f"{where}: node {segment.node_id!r} is not registered")
        if node.state != common_pb2.NODE_STATE_UP:
            raise NodeDown(f"{where}: node {segment.node_id!r} is down")
        units = set(range(segment.units.start, segment.units.end))
        if units & critical and not (node.trusted or node.node_id in extra_trusted):
            raise PrivacyError(
                f"{where} include privacy-critical units {sorted(units & critical)} "
                f"but node {node.node_id!r} is not trusted"
            )


__all__ = ["NodeDown", "PlanError", "PrivacyError", "check_placement", "privacy_critical"]
