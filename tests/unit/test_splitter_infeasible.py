"""Infeasible problems get one sentence naming the constraint that fails."""

from __future__ import annotations

import dataclasses

import pytest
from splitter_cases import LLAMA3_8B

from resplit.core.profiles import profile
from services.splitter.core.problem import (
    GIB,
    Link,
    Mode,
    Node,
    Plan,
    Policy,
    Problem,
    ProblemError,
    Segment,
    SolverKind,
    Workload,
)
from services.splitter.core.solve import Infeasible, solve

MODEL = profile(LLAMA3_8B, "float16")  # 0.98 GiB embedding and head, 0.41 GiB per block, 15 GiB in all


def _node(
    name: str, gib: float, trusted: bool = False, flops: float = 1e14, utilization: float = 0.0
) -> Node:
    return Node(name, int(gib * GIB), flops, utilization, trusted, "", 1e12)


def _mesh(*names: str) -> tuple[Link, ...]:
    return tuple(Link(a, b, 1000.0, 5.0) for a in names for b in names if a != b)


def _problem(nodes, links=None, **policy) -> Problem:
    names = [n.node_id for n in nodes]
    return Problem(
        MODEL,
        tuple(nodes),
        _mesh(*names) if links is None else links,
        Policy(**{"private_depth": 1, **policy}),
        Workload(128, 16),
    )


def _reason(problem: Problem, mode: Mode = Mode.RESPLIT, kind: SolverKind = SolverKind.EXACT) -> str:
    with pytest.raises(Infeasible) as info:
        solve(problem, mode, kind)
    return info.value.reason


def test_no_trusted_node_has_memory_for_the_private_units():
    problem = _problem([_node("edge", 2.0, trusted=True), _node("cloud", 40)], private_depth=3)
    assert _reason(problem) == (
        "privacy (5): no trusted node has memory for units 0-3 (they need 2.20 GiB; "
        "the only trusted node 'edge' has 2.00 GiB)"
    )


def test_no_trusted_node_at_all():
    assert _reason(_problem([_node("a", 40), _node("b", 40)])) == (
        "privacy (5): no usable trusted node, but units 0-1, the head (unit 33) must run on one "
        "(mark a node trusted or list it in policy.trusted_node_ids)"
    )


def test_a_saturated_trusted_node_is_no_trusted_node():
    problem = _problem([_node("edge", 40, trusted=True, utilization=1.0), _node("cloud", 40)])
    assert _reason(problem).startswith("privacy (5): no usable trusted node")


def test_the_private_units_and_the_head_must_fit_on_the_trusted_nodes_together():
    problem = _problem([_node("edge", 2.0, trusted=True), _node("cloud", 40)])
    assert _reason(problem) == (
        "privacy (5): the trusted nodes have 2.00 GiB together, "
        "but units 0-1 and the head (unit 33) need 2.36 GiB"
    )


def test_the_model_does_not_fit_in_all_memory_together():
    problem = _problem([_node("edge", 4, trusted=True), _node("cloud", 8)])
    assert (
        _reason(problem)
        == "capacity (4): the model needs 14.98 GiB, the usable nodes have 12.00 GiB together"
    )


def test_too_many_requests_overload_every_plan():
    problem = dataclasses.replace(
        _problem([_node("edge", 40, trusted=True), _node("cloud", 40)]), workload=Workload(128, 16, 500.0)
    )
    assert _reason(problem) == (
        "capacity (4): at 500 requests/s every plan drives a hosting node to utilization >= 1 "
        "(its queue would grow without bound)"
    )


def test_nodes_without_links_between_them():
    problem = _problem([_node("edge", 4, trusted=True), _node("cloud", 40)], links=())
    assert _reason(problem) == (
        "links: the nodes that can hold the model are not connected by a chain of links "
        "(missing: edge->cloud, cloud->edge)"
    )


def test_placement_only_cannot_cut_a_fixed_segment():
    current = Plan((Segment(0, 2, "edge"), Segment(2, 33, "a"), Segment(33, 34, "edge")))
    problem = dataclasses.replace(
        _problem([_node("edge", 4, trusted=True), _node("a", 10), _node("b", 10)]), current=current
    )
    assert _reason(problem, Mode.PLACEMENT_ONLY).startswith(
        "capacity (4): the fixed segment [2, 33) needs 12.6"
    )
    assert solve(problem, Mode.RESPLIT).cost.phi > 0  # RESPLIT may cut it: feasible


def test_greedy_dead_ends_but_exact_does_not():
    """Greedy runs to the fast node, which has no link back to the trusted node for the head."""
    nodes = [_node("edge", 40, trusted=True, flops=1e12), _node("fast", 40), _node("relay", 40, flops=1e12)]
    links = (
        Link("edge", "fast", 1000.0, 1.0),
        Link("edge", "relay", 1000.0, 1.0),
        Link("relay", "edge", 1000.0, 1.0),
        Link("fast", "relay", 1000.0, 1.0),
    )
    problem = _problem(nodes, links=links)
    assert (
        _reason(problem, kind=SolverKind.GREEDY) == "greedy found no plan, but one exists: solve with EXACT"
    )
    owners = solve(problem).plan.node_of_units(MODEL.num_units)
    assert owners[0] == owners[-1] == "edge"


def test_placement_only_needs_the_current_plan():
    with pytest.raises(ProblemError, match=r"problem\.current \(the plan in force\) is required"):
        solve(_problem([_node("edge", 40, trusted=True)]), Mode.PLACEMENT_ONLY)
