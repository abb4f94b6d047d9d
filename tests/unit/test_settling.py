"""Adaptation that settles: the latency signal the trigger compares, the cost of a
change (live KV caches that move), flapping, and the first hop's latency samples."""

from __future__ import annotations

import asyncio

import pytest

from resplit.v1 import common_pb2, splitter_pb2
from services.monitor.core.environment import assemble
from services.orchestrator.core.decide import (
    Candidate,
    Measured,
    Outcome,
    Recent,
    Switch,
    decide,
    layout,
    recent_plans,
    violations,
)
from services.orchestrator.core.policy import default_policy, latency_bounds
from services.orchestrator.core.switching import live_tokens, moved_bytes, segment_key, switch_cost
from services.orchestrator.core.triggers import describe, should_reconfigure
from services.worker.core.latency import FirstHopLatency

THETA = common_pb2.Thresholds(l_max_ms=150, u_max=0.85, b_min_mbps=50, t_cool_s=30)


def _plan(*segments: tuple[int, int, str], phi: float = 0.0) -> common_pb2.Plan:
    plan = common_pb2.Plan(deployment="d")
    for a, b, node in segments:
        plan.segments.add(units=common_pb2.UnitRange(start=a, end=b), node_id=node)
    plan.predicted.phi = plan.predicted.latency_ms = phi
    return plan


CURRENT = _plan((0, 2, "edge"), (2, 6, "mec"), (6, 8, "edge"), phi=200)
MIGRATED = _plan((0, 2, "edge"), (2, 6, "cloud"), (6, 8, "edge"), phi=120)


def _bounds(signal: int, generative: bool = True, tpot_max: float = 0.0) -> list[tuple[str, float]]:
    policy = default_policy()
    policy.latency_signal = signal
    policy.thresholds.tpot_max_ms = tpot_max
    return latency_bounds(policy, generative)


def test_the_policy_names_the_signal_ttft_for_decoders_and_the_request_for_encoders():
    assert _bounds(common_pb2.LATENCY_SIGNAL_UNSPECIFIED) == [("ttft", 150)]
    assert _bounds(common_pb2.LATENCY_SIGNAL_UNSPECIFIED, generative=False) == [("request", 150)]
    assert _bounds(common_pb2.LATENCY_SIGNAL_TPOT) == [("tpot", 150)]
    assert _bounds(common_pb2.LATENCY_SIGNAL_TTFT_AND_TPOT) == [("ttft", 150), ("tpot", 50)]
    assert _bounds(common_pb2.LATENCY_SIGNAL_TTFT_AND_TPOT, tpot_max=20) == [("ttft", 150), ("tpot", 20)]
    # an encoder has no first token: whatever the policy says, its request is the signal
    assert _bounds(common_pb2.LATENCY_SIGNAL_TTFT, generative=False) == [("request", 150)]


def _env(ttft=0.0, tpot=0.0, request=0.0) -> common_pb2.Environment:
    env = common_pb2.Environment()
    for node in ("edge", "mec", "cloud"):
        env.nodes.add(node_id=node, state=common_pb2.NODE_STATE_UP)
    env.latency_signals["d"].CopyFrom(
        common_pb2.LatencySignals(ttft_ms=ttft, tpot_ms=tpot, request_ms=request)
    )
    env.latency_ewma_ms["d"] = request
    return env


def test_the_trigger_compares_the_named_signal_not_the_whole_request():
    """The paper scenario's churn: a 32-token request always above 150 ms, its TTFT below."""
    env = _env(ttft=60, tpot=20, request=700)
    ttft = _bounds(common_pb2.LATENCY_SIGNAL_TTFT)
    assert should_reconfigure(env, "d", CURRENT, THETA, bounds=ttft) == []
    fired = should_reconfigure(env, "d", CURRENT, THETA, bounds=_bounds(common_pb2.LATENCY_SIGNAL_REQUEST))
    assert [describe(t) for t in fired] == ["latency request 700 > 150"]
    both = _bounds(common_pb2.LATENCY_SIGNAL_TTFT_AND_TPOT, tpot_max=10)
    fired = should_reconfigure(_env(ttft=200, tpot=20), "d", CURRENT, THETA, bounds=both)
    assert [describe(t) for t in fired] == ["latency ttft 200 > 150", "latency tpot 20 > 10"]
    assert should_reconfigure(_env(), "d", CURRENT, THETA, bounds=both) == []  # no sample yet: no fire


def test_before_any_request_the_plans_prediction_stands_in_for_the_signal():
    """A fresh deployment need not wait for traffic to leave a plan the model says breaks L_max."""
    ttft = _bounds(common_pb2.LATENCY_SIGNAL_TTFT)
    fired = should_reconfigure(_env(), "d", CURRENT, THETA, bounds=ttft, predicted={"ttft": 480.0})
    assert [describe(t) for t in fired] == ["latency ttft (predicted: no request measured yet) 480 > 150"]
    assert should_reconfigure(_env(), "d", CURRENT, THETA, bounds=ttft, predicted={"ttft": 40.0}) == []
    # once a request is measured, the measurement decides, whatever the model says
    measured = _env(ttft=60, tpot=20)
    assert should_reconfigure(measured, "d", CURRENT, THETA, bounds=ttft, predicted={"ttft": 480.0}) == []


def test_a_candidate_is_checked_on_the_predicted_signal():
    plan = _plan((0, 8, "edge"), phi=700)
    plan.predicted.prefill_ms, plan.predicted.decode_ms_per_token = 90, 19
    assert violations(plan, THETA, Measured(), [("ttft", 150)]) == []
    assert violations(plan, THETA, Measured(), [("ttft", 150), ("tpot", 10)]) == [
        "predicted TPOT 19 ms > TPOT_max 10"
    ]
    assert violations(plan, THETA, Measured()) == ["predicted L 700 ms > L_max 150"]


def test_the_monitor_assembles_each_signal_per_deployment():
    env = assemble([], {}, [], {"d": 700.0, "d|ttft": 60.0, "d|tpot": 20.0, "e|ttft": 5.0}, 1.0)
    assert dict(env.latency_ewma_ms) == {"d": 700.0}
    assert env.latency_signals["d"] == common_pb2.LatencySignals(ttft_ms=60, tpot_ms=20, request_ms=700)
    assert env.latency_signals["e"].ttft_ms == 5.0 and env.latency_signals["e"].request_ms == 0.0


def test_the_first_hop_names_each_step_by_what_it_measures():
    latency = FirstHopLatency()
    latency.step("d", generative=True, prompt=True, ms=80.0, now=1.0, session="s1")
    latency.step("d", generative=True, prompt=False, ms=12.0, now=1.1, session="s1")
    latency.step("enc", generative=False, prompt=True, ms=9.0, now=1.2, session="s2")
    assert [(s.deployment, s.signal, s.ms) for s in latency.drain()] == [
        ("d", "ttft", 80.0),
        ("enc", "request", 9.0),
        ("d", "tpot", 12.0),
    ]
    assert latency.drain() == []


def test_a_sessions_decode_steps_make_one_tpot_sample_per_drain():
    """Samples grow with sessions, not tokens: each session's steps since the last drain
    are its mean, stamped with its first step's time (never mixed across a plan change)."""
    latency = FirstHopLatency()
    for i in range(100):
        latency.step("d", generative=True, prompt=False, ms=10.0 + i % 2, now=5.0 + i, session="a")
    latency.step("d", generative=True, prompt=False, ms=40.0, now=7.5, session="b")
    latency.step("e", generative=True, prompt=True, ms=90.0, now=7.6, session="c")
    drained = latency.drain()
    assert [(s.deployment, s.signal, s.ms, s.timestamp) for s in drained] == [
        ("e", "ttft", 90.0, 7.6),
        ("d", "tpot", 10.5, 5.0),
        ("d", "tpot", 40.0, 7.5),
    ]
    latency.step("d", generative=True, prompt=False, ms=30.0, now=200.0, session="a")
    assert [(s.ms, s.timestamp) for s in latency.drain()] == [(30.0, 200.0)]


UNITS = [splitter_pb2.UnitProfile(index=i, kv_bytes_per_token=1000 * (1 <= i <= 6)) for i in range(8)]


def _with_kv(env: common_pb2.Environment, node: str, start: int, end: int, tokens: int) -> None:
    env.metrics.add(node_id=node).segment_kv_tokens[segment_key("d", start, end)] = tokens


def test_the_change_cost_counts_the_live_sessions_kv_bytes_that_move():
    env = _env()
    _with_kv(env, "edge", 0, 2, 100)
    _with_kv(env, "mec", 2, 6, 100)
    tokens = live_tokens(env, "d", CURRENT)
    assert tokens == {0: 100, 1: 100, 2: 0}  # edge reports no session on its 6-8 segment
    moved = moved_bytes(CURRENT, MIGRATED, tokens, UNITS)
    assert moved == {("mec", "cloud"): 4 * 100 * 1000}  # units 2..5 leave mec; edge keeps its own
    # 400 kB over 8 Mb/s = 400 ms of stall, over 4 requests ahead: 100 per request
    cost = switch_cost(moved, {("mec", "cloud"): 8.0}, alpha=1.0, requests_ahead=4)
    assert cost.cost == pytest.approx(100.0) and "0.4 MB of live KV cache" in cost.why
    assert switch_cost({}, {}, 1.0, 1.0) == Switch()


def _decide(switch=None, recent=(), triggers=None):
    async def migration() -> Candidate:
        return Candidate("placement-only", MIGRATED)

    async def resplit() -> Candidate:
        return Candidate("resplit", None, "n/a")

    trigger = common_pb2.Trigger(name="latency", value=200, threshold=150, subject="ttft")
    return asyncio.run(
        decide(
            triggers or [trigger], CURRENT, 200.0, migration, resplit, THETA, 0.05, Measured(), None, 1000.0,
            switch=switch, recent=recent,
        )
    )  # fmt: skip


def test_a_gain_that_does_not_pay_for_moving_the_caches_is_held():
    held = _decide(switch=lambda plan: Switch(90.0, "x MB"))  # gain 80 per request <= 90
    assert held.outcome is Outcome.KEEP and "change cost: predicted Phi gain 80" in held.reason
    paid = _decide(switch=lambda plan: Switch(70.0, "x MB"))
    assert paid.outcome is Outcome.MIGRATE and paid.chosen is MIGRATED


def test_returning_to_a_recent_plan_is_held_as_flapping_unless_a_node_is_down():
    recent = [Recent(layout(MIGRATED), 4, 3.0)]
    held = _decide(recent=recent)
    assert held.outcome is Outcome.KEEP
    assert "flapping: the best plan is the plan of epoch 4, in force 3 cycle(s) ago; held" in held.reason
    down = _decide(recent=recent, triggers=[common_pb2.Trigger(name="node_down", subject="mec")])
    assert down.outcome is Outcome.MIGRATE


def test_recent_plans_are_those_a_change_replaced_within_n_cycles():
    def change(at: float, previous: common_pb2.Plan, epoch: int) -> common_pb2.DecisionEvent:
        event = common_pb2.DecisionEvent(timestamp=at, outcome=common_pb2.DECISION_OUTCOME_MIGRATE)
        event.previous.CopyFrom(previous)
        event.previous.epoch = epoch
        return event

    keep = common_pb2.DecisionEvent(timestamp=99.0, outcome=common_pb2.DECISION_OUTCOME_KEEP)
    keep.previous.CopyFrom(CURRENT)
    events = [change(50.0, MIGRATED, 2), change(95.0, CURRENT, 3), keep]
    found = recent_plans(events, now=100.0, interval_s=1.0, cycles=10)
    assert [(r.epoch, r.layout, r.cycles_ago) for r in found] == [(3, layout(CURRENT), 5.0)]


def test_other_deployments_memory_and_claimed_load_are_taken_off_each_node():
    from services.orchestrator.core.problem import Shared, node_profiles
    from services.orchestrator.core.sharing import Claims, moved_load, other_memory

    units = [splitter_pb2.UnitProfile(param_bytes=100, kv_bytes_per_token=1) for _ in range(8)]
    held = other_memory([(CURRENT, units, 10)])
    assert held == {"edge": 4 * 110, "mec": 4 * 110}
    env = _env()
    for node in ("edge", "mec", "cloud"):
        env.nodes[[n.node_id for n in env.nodes].index(node)].capacity.memory_bytes = 1000
        report = env.metrics.add(node_id=node, cpu_utilization=0.5)
        report.segment_load[segment_key("d", 2, 6)] = 0.3 if node == "mec" else 0.0
    claims = Claims(hold_s=5.0)
    # d's change moves its own load (0.3 on mec) to the cloud: another deployment counts it there
    claims.add(100.0, "d", moved_load(CURRENT, MIGRATED, {"mec": 0.3}))
    assert claims.for_others_of("d", 101.0) == {}
    claimed = claims.for_others_of("e", 101.0)
    assert claimed == pytest.approx({"mec": -0.3, "cloud": 0.3})
    assert claims.for_others_of("e", 106.0) == {}  # measured by then
    nodes = {n.node_id: n for n in node_profiles(env, "e", Shared(held, claimed))}
    assert {k: n.memory_bytes for k, n in nodes.items()} == {"cloud": 1000, "edge": 560, "mec": 560}
    assert {k: round(n.utilization, 6) for k, n in nodes.items()} == {"cloud": 0.8, "edge": 0.5, "mec": 0.2}
    # d itself: its own load on mec does not count against mec (it moves with its plan)
    own = {n.node_id: round(n.utilization, 6) for n in node_profiles(env, "d", Shared())}
    assert own == {"cloud": 0.5, "edge": 0.5, "mec": 0.2}
