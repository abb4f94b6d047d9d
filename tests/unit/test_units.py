"""Split validation and route construction (pure logic)."""

from __future__ import annotations

import pytest

from resplit.core.units import PlanError, check_segments, route_of
from resplit.v1 import common_pb2


def _segments(*bounds: tuple[int, int]) -> list[common_pb2.Segment]:
    return [
        common_pb2.Segment(units=common_pb2.UnitRange(start=s, end=e), node_id=f"n{s}") for s, e in bounds
    ]


def test_a_covering_contiguous_split_is_valid():
    check_segments(_segments((0, 2), (2, 5), (5, 8)), 8)
    check_segments(_segments((0, 8)), 8)


@pytest.mark.parametrize(
    ("bounds", "units", "message"),
    [
        ([(0, 2), (3, 8)], 8, "segment 1 starts at unit 3, expected 2"),
        ([(0, 2), (2, 2), (2, 8)], 8, "segment 1 [2, 2) is empty"),
        ([(0, 2), (2, 7)], 8, "segments end at unit 7, but the model has 8 units"),
        ([(1, 8)], 8, "segment 0 starts at unit 1, expected 0"),
        ([], 8, "at least one segment"),
        ([(0, 2)], 2, "at least 3 units"),
    ],
)
def test_broken_splits_are_refused_with_the_reason(bounds, units, message):
    with pytest.raises(PlanError, match=message.replace("[", r"\[").replace(")", r"\)")):
        check_segments(_segments(*bounds), units)


def _node(node_id: str, up: bool = True) -> common_pb2.Node:
    state = common_pb2.NODE_STATE_UP if up else common_pb2.NODE_STATE_DOWN
    return common_pb2.Node(node_id=node_id, address=f"{node_id}:50060", state=state)


def test_route_carries_addresses_in_segment_order():
    plan = common_pb2.Plan(deployment="d", epoch=4, segments=_segments((0, 3), (3, 6)))
    route = route_of(plan, [_node("n3"), _node("n0")])
    assert route.epoch == 4
    assert [h.address for h in route.hops] == ["n0:50060", "n3:50060"]


def test_route_through_a_down_node_is_refused():
    plan = common_pb2.Plan(deployment="d", epoch=1, segments=_segments((0, 3), (3, 6)))
    with pytest.raises(PlanError, match=r"node 'n3' of units \[3, 6\) is down"):
        route_of(plan, [_node("n0"), _node("n3", up=False)])
