"""The cost model on a problem small enough to compute by hand, and the constraint checks."""

from __future__ import annotations

import dataclasses

import pytest

from services.splitter.core.costmodel import evaluate
from services.splitter.core.problem import (
    GIB,
    Link,
    Model,
    Node,
    Plan,
    Policy,
    Problem,
    ProblemError,
    Segment,
    Unit,
    Workload,
    validate,
)

MIB = 2**20


def _problem(**changes) -> Problem:
    units = (
        Unit(0, "embedding", 1 * MIB, 0, 0.0, 1000),
        Unit(1, "block", 2 * MIB, 0, 1e9, 1000),
        Unit(2, "head", 1 * MIB, 0, 2e9, 4),
    )
    base = Problem(
        model=Model("hand", "llama", "float16", units),
        nodes=(Node("A", 10 * MIB, 1e12, 0.5, trusted=True), Node("B", 10 * MIB, 2e12, 0.0)),
        links=(Link("A", "B", 8.0, 10.0), Link("B", "A", 8.0, 10.0)),
        policy=Policy(alpha=1.0, beta=100.0),
        workload=Workload(prompt_tokens=10, generate_tokens=3, request_rate=1.0),
    )
    return dataclasses.replace(base, **changes)


S1_S2_S3 = Plan((Segment(0, 1, "A"), Segment(1, 2, "B"), Segment(2, 3, "A")))


def test_every_term_matches_the_hand_computation():
    """A (trusted, u=0.5, 1 TFLOP/s) hosts embedding and head, B (2 TFLOP/s) the block; 8 Mb/s, 10 ms links.

    block on B: prefill 10 tokens x 1 GFLOP / 2 TFLOP/s = 5 ms, decode 0.5 ms;
    head on A: prefill 20 ms, decode 2 ms, both doubled by M/M/1 at u = 0.5;
    each hop, forward only (A is the one trusted node, so the head runs where unit 0 does
    and the token stays there): RTT/2 5 ms + 10 x 1000 B x 8 / 8 Mb/s = 15 ms prefill, 6 ms decode.
    """
    cost = evaluate(_problem(), S1_S2_S3)
    assert cost.feasible, cost.violations
    b = cost.breakdown
    assert b.prefill_ms == pytest.approx(5 + 2 * 20 + 2 * 15)
    assert b.decode_ms_per_token == pytest.approx(0.5 + 2 * 2 + 2 * 6)
    assert b.latency_ms == pytest.approx(75 + 2 * 16.5)  # 3 tokens: prefill + 2 decode steps
    assert b.compute_ms == pytest.approx(6 + 24)
    assert b.queueing_ms == pytest.approx(24)
    assert b.transfer_ms == pytest.approx(2 * 15 + 2 * 2 * 6)
    assert b.compute_ms + b.queueing_ms + b.transfer_ms == pytest.approx(b.latency_ms)
    assert b.utilization == pytest.approx(0.5 + 1.0 * 0.024)  # A: background + 1 req/s x 24 ms
    assert b.privacy == 0.0
    assert b.bottleneck_ms == pytest.approx(4.0)  # A's decode stage: 2 ms x 2 (M/M/1)
    assert b.throughput_tps == pytest.approx(250.0)
    assert b.phi == pytest.approx(b.latency_ms + 100 * b.utilization)
    assert cost.memory_bytes == {"A": 2 * MIB, "B": 2 * MIB}


def test_a_head_away_from_unit_0_pays_the_rings_closing_link_once_per_step():
    """B trusted too, the head on B: each step's token goes from B straight back to A (RTT/2 +
    the 4-byte result: 5.004 ms), on top of the one forward hop A -> B. The paper's placement
    (head with unit 0 on A) pays no closing link: the same transfer as with A trusted alone."""
    trusting_b = _problem(policy=Policy(alpha=1.0, beta=100.0, trusted_node_ids=frozenset({"B"})))
    head_on_b = evaluate(trusting_b, Plan((Segment(0, 2, "A"), Segment(2, 3, "B"))))
    assert head_on_b.feasible, head_on_b.violations
    # the hop into the head carries unit 1's activation (1000 B/token): 15 ms prefill, 6 ms decode
    assert head_on_b.breakdown.transfer_ms == pytest.approx((15 + 5.004) + 2 * (6 + 5.004))
    home = evaluate(trusting_b, S1_S2_S3).breakdown
    assert home.transfer_ms == pytest.approx(2 * 15 + 2 * 2 * 6)


def test_no_link_from_the_head_back_to_unit_0_breaks_the_plan():
    one_way = _problem(
        links=(Link("A", "B", 8.0, 10.0),),
        policy=Policy(alpha=1.0, beta=100.0, trusted_node_ids=frozenset({"B"})),
    )
    cost = evaluate(one_way, Plan((Segment(0, 2, "A"), Segment(2, 3, "B"))))
    assert cost.violations == ["links: no link from 'B' to 'A' (the head returns results there)"]


def test_memory_over_capacity_breaks_constraint_4():
    small = _problem(nodes=(Node("A", MIB + MIB // 2, 1e12, 0.5, trusted=True), Node("B", 10 * MIB, 2e12)))
    violations = evaluate(small, S1_S2_S3).violations
    assert violations == ["(4) capacity: node 'A' would hold 0.00 GiB but has 0.00 GiB"]


def test_overload_breaks_constraint_4():
    busy = _problem(workload=Workload(prompt_tokens=10, generate_tokens=3, request_rate=100.0))
    (violation,) = evaluate(busy, S1_S2_S3).violations
    assert violation.startswith("(4) capacity: node 'A' would run at utilization 2.90")


def test_an_untrusted_head_breaks_constraint_5_unless_privacy_is_soft():
    exposed = Plan((Segment(0, 1, "A"), Segment(1, 3, "B")))
    assert evaluate(_problem(), exposed).violations == ["(5) privacy: unit 2 (head) on untrusted node 'B'"]
    soft = _problem(policy=Policy(alpha=1.0, gamma=1000.0, soft_privacy=True))
    cost = evaluate(soft, exposed)
    assert cost.feasible
    assert cost.breakdown.privacy == pytest.approx(0.5)  # one of the two critical units (0, head)
    assert cost.breakdown.phi == pytest.approx(cost.breakdown.latency_ms + 500.0)


def test_a_missing_link_makes_the_hop_impossible():
    one_way = _problem(links=(Link("A", "B", 8.0, 10.0),))
    assert evaluate(one_way, S1_S2_S3).violations == ["links: no link from 'B' to 'A' (the hop into unit 2)"]


def test_a_plan_must_cover_every_unit_once():
    gap = Plan((Segment(0, 1, "A"), Segment(2, 3, "A")))
    assert evaluate(_problem(), gap).violations[0].startswith("(3) unique assignment")


def test_migration_counts_what_moves_off_the_current_nodes():
    before = Plan((Segment(0, 3, "B"),))
    moved = _problem(current=before, policy=Policy(alpha=1.0, migration_weight=1000.0))
    cost = evaluate(moved, S1_S2_S3).breakdown
    assert cost.migration_gib == pytest.approx(2 * MIB / GIB)  # embedding and head moved to A
    assert cost.phi == pytest.approx(cost.latency_ms + 1000.0 * 2 * MIB / GIB)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nodes": (Node("A", 10, -1.0, 0.0),)}, "node 'A': flops_per_s must be > 0"),
        ({"nodes": (Node("A", 10, 1e9), Node("A", 10, 1e9))}, r"nodes\[1\].node_id 'A' appears twice"),
        ({"links": (Link("A", "C", 1.0, 1.0),)}, "unknown node 'C'"),
        ({"policy": Policy(private_depth=5)}, "private_depth is 5, but the model has only 1 blocks"),
        ({"policy": Policy(beta=float("nan"))}, "policy.beta must be a finite number"),
        ({"workload": Workload(prompt_tokens=0)}, "workload.prompt_tokens must be >= 1"),
        ({"nodes": (Node("A", 10, 1e9, utilization=1.5),)}, r"utilization must be in \[0, 1\]"),
    ],
)
def test_malformed_problems_name_the_field(change, message):
    with pytest.raises(ProblemError, match=message):
        validate(_problem(**change))
