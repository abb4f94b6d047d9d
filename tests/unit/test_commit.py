"""The orchestrator's one commit path: refusals by error type."""

from __future__ import annotations

import grpc
import pytest

from resplit.core.privacy import check_placement
from resplit.core.units import NodeDown, PlanError
from resplit.v1 import common_pb2
from services.orchestrator.commit import refused

NUM_UNITS = 6


def _node(node_id: str, trusted: bool = True, up: bool = True) -> common_pb2.Node:
    state = common_pb2.NODE_STATE_UP if up else common_pb2.NODE_STATE_DOWN
    return common_pb2.Node(node_id=node_id, address=f"{node_id}:1", trusted=trusted, state=state)


def _segments(*triples: tuple[int, int, str]) -> list[common_pb2.Segment]:
    return [
        common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=node_id)
        for a, b, node_id in triples
    ]


NODES = [_node("edge"), _node("gone", up=False), _node("cloud", trusted=False)]


@pytest.mark.parametrize(
    ("segments", "code", "fragment"),
    [
        (_segments((0, 3, "edge"), (3, 6, "gone")), grpc.StatusCode.FAILED_PRECONDITION, "'gone' is down"),
        (_segments((0, 3, "cloud"), (3, 6, "edge")), grpc.StatusCode.FAILED_PRECONDITION, "not trusted"),
        (_segments((0, 2, "edge"), (3, 6, "edge")), grpc.StatusCode.INVALID_ARGUMENT, "expected 2"),
        # The word "down" in a node's name says nothing about its state.
        (_segments((0, 6, "down-1")), grpc.StatusCode.INVALID_ARGUMENT, "'down-1' is not registered"),
    ],
)
def test_a_refused_plan_gets_its_status_from_the_error_type(segments, code, fragment):
    with pytest.raises(PlanError) as info:
        check_placement(segments, NODES, NUM_UNITS)
    error = refused(info.value, "plan for 'd' refused: ")
    assert error.code == code
    assert str(error).startswith("plan for 'd' refused: ") and fragment in str(error)


def test_a_down_node_is_failed_precondition_whatever_the_message_says():
    assert refused(NodeDown("node 'x' stopped answering")).code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused(PlanError("node 'x' is down")).code == grpc.StatusCode.INVALID_ARGUMENT
