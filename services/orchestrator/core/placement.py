"""Deciding and checking where segments go, before any worker is asked.

The default plan is the paper's {S1, S2, S3}: the embedding with the first
blocks and the last blocks with the head on a trusted node (raw input and
output never leave it), the middle on the most capable node. Every plan,
default or given, passes the same checks: the split covers the model, every
node is registered and up, and privacy-critical units sit on trusted nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from resplit.core.privacy import PrivacyError, check_placement, privacy_critical
from resplit.core.units import PlanError
from resplit.v1 import common_pb2


class NoNodesError(PlanError):
    """No suitable node is registered and up."""


def capability(node: common_pb2.Node) -> tuple[int, int, int]:
    """How capable a node is for the middle segment: GPU memory, then memory, then cores."""
    return (node.capacity.gpu_memory_bytes, node.capacity.memory_bytes, node.capacity.cpu_cores)


def default_segments(nodes: Sequence[common_pb2.Node], num_units: int) -> list[common_pb2.Segment]:
    """{S1, S2, S3} over a trusted node and the most capable other node."""
    up = [n for n in nodes if n.state == common_pb2.NODE_STATE_UP]
    trusted = sorted((n for n in up if n.trusted), key=lambda n: n.node_id)
    if not trusted:
        raise NoNodesError("no trusted worker is up to hold the embedding and the head")
    edge = trusted[0]
    others = [n for n in up if n.node_id != edge.node_id]
    blocks = num_units - 2
    if not others or blocks < 3:
        return [common_pb2.Segment(units=common_pb2.UnitRange(start=0, end=num_units), node_id=edge.node_id)]
    middle = max(others, key=lambda n: (capability(n), n.node_id))
    edge_blocks = max(1, blocks // 8)
    cuts = [0, 1 + edge_blocks, num_units - 1 - edge_blocks, num_units]
    owners = [edge.node_id, middle.node_id, edge.node_id]
    return [
        common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=owner)
        for a, b, owner in zip(cuts[:-1], cuts[1:], owners, strict=True)
    ]


__all__ = [
    "NoNodesError",
    "PlanError",
    "PrivacyError",
    "capability",
    "check_placement",
    "default_segments",
    "privacy_critical",
]
