"""Alg. 1's decision: keep, migrate, resplit, in the paper's order, with hysteresis and T_cool."""

from __future__ import annotations

import asyncio
import itertools
import math

from resplit.v1 import common_pb2
from services.orchestrator.core.decide import Candidate, Measured, Outcome, decide

THETA = common_pb2.Thresholds(l_max_ms=150, u_max=0.85, b_min_mbps=50, t_cool_s=30)
LATENCY = common_pb2.Trigger(name="latency", value=200, threshold=150, subject="d")
NODE_DOWN = common_pb2.Trigger(name="node_down", subject="mec")


def _plan(*segments: tuple[int, int, str], phi: float = 0.0, latency: float | None = None) -> common_pb2.Plan:
    plan = common_pb2.Plan(deployment="d")
    for a, b, node in segments:
        plan.segments.add(units=common_pb2.UnitRange(start=a, end=b), node_id=node)
    plan.predicted.phi = phi
    plan.predicted.latency_ms = phi if latency is None else latency
    return plan


CURRENT = _plan((0, 2, "edge"), (2, 6, "mec"), (6, 8, "edge"), phi=200)
MIGRATED = _plan((0, 2, "edge"), (2, 6, "cloud"), (6, 8, "edge"), phi=120)
RESPLIT = _plan((0, 3, "edge"), (3, 7, "cloud"), (7, 8, "edge"), phi=100)


class Splitter:
    """Answers the two solves and counts them (resplit must be lazy)."""

    def __init__(self, migration: Candidate, resplit: Candidate | None = None) -> None:
        self.answers = {"placement-only": migration, "resplit": resplit or Candidate("resplit", None, "n/a")}
        self.asked: list[str] = []

    def ask(self, mode: str):
        async def answer() -> Candidate:
            self.asked.append(mode)
            return self.answers[mode]

        return answer


def _decide(
    splitter: Splitter,
    triggers=(LATENCY,),
    current=CURRENT,
    current_phi: float = 200.0,
    hysteresis: float = 0.05,
    measured: Measured | None = None,
    last_change: float | None = None,
    now: float = 1000.0,
):
    return asyncio.run(
        decide(
            list(triggers),
            current,
            current_phi,
            splitter.ask("placement-only"),
            splitter.ask("resplit"),
            THETA,
            hysteresis,
            measured or Measured(),
            last_change,
            now,
        )
    )


def test_no_trigger_keeps_and_asks_the_splitter_nothing():
    splitter = Splitter(Candidate("placement-only", MIGRATED))
    decision = _decide(splitter, triggers=())
    assert (decision.outcome, decision.chosen, decision.reason) == (Outcome.KEEP, None, "no trigger fired")
    assert splitter.asked == []


def test_a_migration_that_meets_every_constraint_is_applied_without_resplit():
    splitter = Splitter(Candidate("placement-only", MIGRATED), Candidate("resplit", RESPLIT))
    decision = _decide(splitter)
    assert decision.outcome is Outcome.MIGRATE and decision.chosen is MIGRATED
    assert splitter.asked == ["placement-only"]
    assert "Phi 200 -> 120" in decision.reason


def test_migration_above_l_max_invokes_split_revision():
    slow = _plan((0, 2, "edge"), (2, 6, "cloud"), (6, 8, "edge"), phi=160)
    splitter = Splitter(Candidate("placement-only", slow), Candidate("resplit", RESPLIT))
    decision = _decide(splitter)
    assert decision.outcome is Outcome.RESPLIT and decision.chosen is RESPLIT
    assert splitter.asked == ["placement-only", "resplit"]
    assert [c.mode for c in decision.candidates] == ["placement-only", "resplit"]
    assert "migration cannot meet predicted L 160 ms > L_max 150" in decision.reason


def test_migration_onto_a_busy_node_or_a_slow_link_invokes_split_revision():
    splitter = Splitter(Candidate("placement-only", MIGRATED), Candidate("resplit", RESPLIT))
    busy = _decide(splitter, measured=Measured(utilization={"cloud": 0.9}))
    assert busy.outcome is Outcome.RESPLIT and "U 0.90 on cloud > U_max 0.85" in busy.reason
    slow = _decide(splitter, measured=Measured(bandwidth_mbps={("cloud", "edge"): 10}))
    assert slow.outcome is Outcome.RESPLIT and "B 10 Mb/s on cloud->edge < B_min 50" in slow.reason


def test_an_infeasible_migration_invokes_split_revision():
    splitter = Splitter(Candidate("placement-only", None, "(4) capacity"), Candidate("resplit", RESPLIT))
    decision = _decide(splitter)
    assert decision.outcome is Outcome.RESPLIT and "no feasible migration ((4) capacity)" in decision.reason


def test_split_revision_keeping_the_boundaries_is_a_migration():
    slow = _plan((0, 2, "edge"), (2, 6, "cloud"), (6, 8, "edge"), phi=160)
    same_cuts = _plan((0, 2, "edge"), (2, 6, "gpu"), (6, 8, "edge"), phi=155)
    decision = _decide(Splitter(Candidate("placement-only", slow), Candidate("resplit", same_cuts)))
    assert decision.outcome is Outcome.MIGRATE and decision.chosen is same_cuts


def test_when_both_miss_the_constraints_the_cheaper_one_is_taken():
    slow = _plan((0, 2, "edge"), (2, 6, "cloud"), (6, 8, "edge"), phi=170)
    slower = _plan((0, 3, "edge"), (3, 7, "cloud"), (7, 8, "edge"), phi=180)
    decision = _decide(Splitter(Candidate("placement-only", slow), Candidate("resplit", slower)))
    assert decision.outcome is Outcome.MIGRATE and decision.chosen is slow


def test_no_feasible_plan_keeps_and_says_why():
    splitter = Splitter(Candidate("placement-only", None, "privacy"), Candidate("resplit", None, "memory"))
    decision = _decide(splitter)
    assert decision.outcome is Outcome.KEEP and decision.chosen is None
    assert "no feasible plan (placement-only: privacy; resplit: memory)" in decision.reason


def test_the_best_plan_being_the_current_one_keeps():
    same = _plan((0, 2, "edge"), (2, 6, "mec"), (6, 8, "edge"), phi=120)
    decision = _decide(Splitter(Candidate("placement-only", same)))
    assert decision.outcome is Outcome.KEEP and "already the best" in decision.reason


def test_hysteresis_blocks_a_small_gain():
    barely = _plan((0, 2, "edge"), (2, 6, "cloud"), (6, 8, "edge"), phi=145)
    decision = _decide(Splitter(Candidate("placement-only", barely)), current_phi=150, hysteresis=0.05)
    assert decision.outcome is Outcome.KEEP and decision.reason.startswith("hysteresis")
    enough = _decide(Splitter(Candidate("placement-only", barely)), current_phi=150, hysteresis=0.03)
    assert enough.outcome is Outcome.MIGRATE


def test_a_worse_plan_is_never_applied_even_without_hysteresis():
    worse = _plan((0, 2, "edge"), (2, 6, "cloud"), (6, 8, "edge"), phi=140)
    decision = _decide(Splitter(Candidate("placement-only", worse)), current_phi=130, hysteresis=0.0)
    assert decision.outcome is Outcome.KEEP


def test_an_infeasible_current_plan_bypasses_hysteresis():
    barely = _plan((0, 2, "edge"), (2, 6, "cloud"), (6, 8, "edge"), phi=145)
    decision = _decide(Splitter(Candidate("placement-only", barely)), current_phi=math.inf, hysteresis=0.5)
    assert decision.outcome is Outcome.MIGRATE and "infeasible now" in decision.reason


def test_cool_down_blocks_a_change_until_t_cool_passed():
    splitter = Splitter(Candidate("placement-only", MIGRATED))
    blocked = _decide(splitter, last_change=990.0, now=1000.0)
    assert blocked.outcome is Outcome.KEEP and blocked.chosen is None
    assert "cool-down: 10.0 s since the last change < T_cool 30 s" in blocked.reason
    assert _decide(splitter, last_change=970.0, now=1000.0).outcome is Outcome.MIGRATE


def test_node_down_bypasses_hysteresis_and_cool_down():
    barely = _plan((0, 2, "edge"), (2, 6, "cloud"), (6, 8, "edge"), phi=199)
    decision = _decide(
        Splitter(Candidate("placement-only", barely)),
        triggers=(NODE_DOWN,),
        hysteresis=0.5,
        last_change=999.0,
        now=1000.0,
    )
    assert decision.outcome is Outcome.MIGRATE and decision.chosen is barely
    assert "down" in decision.reason


def test_flapping_conditions_change_the_plan_at_most_once_per_t_cool():
    """The best plan alternates every cycle (Delta t = 5 s); changes stay T_cool apart."""
    a = _plan((0, 2, "edge"), (2, 6, "mec"), (6, 8, "edge"), phi=100)
    b = _plan((0, 2, "edge"), (2, 6, "cloud"), (6, 8, "edge"), phi=100)
    current, last_change, changes = a, None, []
    for cycle in range(60):
        now = cycle * 5.0
        other = b if current is a else a
        decision = _decide(
            Splitter(Candidate("placement-only", other)),
            current=current,
            current_phi=200.0,
            last_change=last_change,
            now=now,
        )
        if decision.outcome is not Outcome.KEEP:
            current, last_change = decision.chosen, now
            changes.append(now)
    assert len(changes) == 10
    assert all(b - a >= THETA.t_cool_s for a, b in itertools.pairwise(changes))
