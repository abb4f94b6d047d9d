"""The orchestrator's one commit path (lock -> epoch -> rollout -> event) over a fake
store and a fake broadcaster, its pure parts, and refusals by error type."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from resplit.core.privacy import check_placement
from resplit.core.units import NodeDown, PlanError
from resplit.v1 import broadcaster_pb2, common_pb2
from services.orchestrator.commit import Change, CommitError, Commits, refused
from services.orchestrator.config import OrchestratorSettings
from services.orchestrator.core.commit import logged, outcome_of, stamped
from services.orchestrator.core.decide import Outcome
from services.orchestrator.rollouts import RolloutFailed

KEEP, RESPLIT = common_pb2.DECISION_OUTCOME_KEEP, common_pb2.DECISION_OUTCOME_RESPLIT

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


# -- the commit path, over a fake store and a fake broadcaster ---------------


class FakeStore:
    """The state a commit reads and writes; the broadcaster's side commits plans into it."""

    def __init__(self) -> None:
        self.plans: dict[str, common_pb2.Plan] = {}
        self.counter = 0
        self.epochs_drawn = 0
        self.events: list[common_pb2.DecisionEvent] = []
        self.changes: list[tuple[str, float, str]] = []
        self.deployments: dict[str, common_pb2.Deployment] = {}
        self.deleted: list[str] = []

    async def get_plan(self, name):
        return self.plans.get(name)

    async def next_epoch(self, name, floor=0):
        self.epochs_drawn += 1
        committed = self.plans[name].epoch if name in self.plans else 0
        self.counter = max(self.counter, committed, floor) + 1
        return self.counter

    async def append_event(self, event):
        self.events.append(event)
        return f"{len(self.events)}-0"

    async def record_change(self, name, at, event_id):
        self.changes.append((name, at, event_id))

    async def put_deployment(self, spec):
        self.deployments[spec.name] = spec

    async def get_deployment(self, name):
        return self.deployments.get(name)

    async def delete_deployment(self, name):
        self.deleted.append(name)
        self.deployments.pop(name, None)
        self.plans.pop(name, None)


class FakeBroadcaster:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.rolled: list[common_pb2.Plan] = []
        self.released: list[str] = []
        self.fail: RolloutFailed | None = None
        self.gate: asyncio.Event | None = None
        self.rolling = asyncio.Event()

    async def rollout(self, plan, deployment, prepare_deadline_s, drain_deadline_s=0.0):
        self.rolled.append(plan)
        self.spec = deployment
        self.deadlines = (prepare_deadline_s, drain_deadline_s)
        self.rolling.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.store.plans[plan.deployment] = plan
        return broadcaster_pb2.RolloutResponse(committed=plan, phase=broadcaster_pb2.ROLLOUT_PHASE_COMMITTED)

    async def release(self, name):
        self.released.append(name)
        if self.fail is not None:
            raise self.fail
        return broadcaster_pb2.ReleaseResponse(released=self.store.plans[name], freed_bytes=1)


SPEC = common_pb2.Deployment(name="d", num_units=NUM_UNITS)


def _plan(*triples: tuple[int, int, str], epoch: int = 0) -> common_pb2.Plan:
    return common_pb2.Plan(deployment="d", epoch=epoch, segments=_segments(*triples))


@pytest.fixture
def commits():
    store = FakeStore()
    broadcaster = FakeBroadcaster(store)
    settings = OrchestratorSettings(prepare_deadline_s=7, drain_deadline_s=3)
    return Commits(store, broadcaster, settings), store, broadcaster


def _operator(reason: str = "operator: t") -> common_pb2.DecisionEvent:
    return common_pb2.DecisionEvent(deployment="d", reason=reason)


async def test_a_change_gets_the_next_epoch_is_rolled_out_and_logged(commits):
    commits, store, broadcaster = commits
    store.plans["d"] = _plan((0, 3, "edge"), (3, 6, "cloud"), epoch=3)
    store.counter = 5  # epochs 4 and 5 went to rollouts that aborted
    change = Change(SPEC, _plan((0, 2, "edge"), (2, 6, "cloud")), "operator: t", _operator())
    result = await commits.commit("d", change)
    assert result.failure is None and result.plan.epoch == 6 and store.epochs_drawn == 1
    (rolled,) = broadcaster.rolled
    assert (rolled.deployment, rolled.epoch, rolled.reason) == ("d", 6, "operator: t") and rolled.created_at
    assert broadcaster.deadlines == (7, 3)
    event = result.event
    assert store.events == [event]
    assert (event.outcome, event.previous.epoch, event.chosen.epoch) == (RESPLIT, 3, 6)
    assert list(event.candidates) == [rolled] and event.reason == "operator: t"
    assert store.changes == [("d", event.timestamp, "1-0")]


async def test_a_failed_rollout_is_logged_as_keep_and_returned(commits):
    commits, store, broadcaster = commits
    store.plans["d"] = _plan((0, 3, "edge"), (3, 6, "cloud"), epoch=1)
    broadcaster.fail = RolloutFailed(grpc.StatusCode.UNAVAILABLE, "worker w2 gone")
    change = Change(SPEC, _plan((0, 3, "edge"), (3, 6, "edge")), "operator: t", _operator())
    result = await commits.commit("d", change)
    assert result.plan is None and result.failure.code == grpc.StatusCode.UNAVAILABLE
    assert (result.event.outcome, result.event.HasField("chosen")) == (KEEP, False)
    assert result.event.reason == "operator: t; migrate to epoch 2 failed: worker w2 gone"
    assert store.changes == [] and store.plans["d"].epoch == 1
    with pytest.raises(CommitError) as info:
        result.or_raise()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


async def test_a_deploy_stores_its_spec_once_committed_and_logs_nothing(commits):
    commits, store, broadcaster = commits
    broadcaster.fail = RolloutFailed(grpc.StatusCode.DEADLINE_EXCEEDED, "prepare aborted")
    deploy = Change(SPEC, _plan((0, 6, "edge")), "deploy", store_spec=True)
    assert (await commits.commit("d", deploy)).failure.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert store.deployments == {}
    broadcaster.fail = None
    result = await commits.commit("d", deploy)
    assert (result.plan.epoch, result.plan.reason, result.event) == (2, "deploy", None)
    assert store.deployments == {"d": SPEC} and store.events == [] and store.changes == []


async def test_a_keep_is_logged_without_an_epoch_or_a_rollout(commits):
    commits, store, broadcaster = commits
    store.plans["d"] = _plan((0, 6, "edge"), epoch=1)
    result = await commits.commit("d", Change(SPEC, None, event=_operator("no gain")))
    assert result.plan is None and result.failure is None
    assert (result.event.outcome, result.event.previous.epoch, result.event.reason) == (KEEP, 1, "no gain")
    assert store.epochs_drawn == 0 and broadcaster.rolled == [] and store.changes == []


async def test_the_proposal_is_made_under_the_lock_on_the_plan_in_force(commits):
    """A change proposed while another one of the deployment is rolling out sees its plan."""
    commits, store, broadcaster = commits
    store.plans["d"] = _plan((0, 6, "edge"), epoch=1)
    broadcaster.gate = asyncio.Event()
    seen: list[int] = []

    async def propose(current):
        seen.append(current.epoch)
        return Change(SPEC, _plan((0, 3, "edge"), (3, 6, "cloud")), "resplit: t", _operator("t"))

    first = asyncio.create_task(commits.commit("d", Change(SPEC, _plan((0, 6, "edge")), "deploy")))
    second = asyncio.create_task(commits.commit("d", propose))
    await broadcaster.rolling.wait()
    for _ in range(20):  # every chance to run: the second must wait for the first
        await asyncio.sleep(0)
    assert seen == []
    broadcaster.gate.set()
    a, b = await asyncio.gather(first, second)
    assert seen == [2] and (a.plan.epoch, b.plan.epoch) == (2, 3)
    assert b.event.previous.epoch == 2


async def test_the_fallback_stands_in_when_the_store_has_no_plan(commits):
    commits, _store, _ = commits
    fallback = _plan((0, 6, "edge"), epoch=4)
    result = await commits.commit("d", Change(SPEC, _plan((0, 6, "cloud")), "r", _operator()), fallback)
    assert result.plan.epoch == 5 and result.event.previous == fallback
    assert result.event.outcome == common_pb2.DECISION_OUTCOME_MIGRATE


async def test_release_goes_through_the_broadcaster_then_forgets(commits):
    commits, store, broadcaster = commits
    with pytest.raises(CommitError) as info:
        await commits.release("d")
    assert info.value.code == grpc.StatusCode.NOT_FOUND and broadcaster.released == []
    store.plans["d"] = _plan((0, 6, "edge"), epoch=2)
    broadcaster.fail = RolloutFailed(grpc.StatusCode.UNAVAILABLE, "broadcaster at x is unreachable")
    with pytest.raises(CommitError) as info:
        await commits.release("d")
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and store.deleted == []  # try again later
    broadcaster.fail = None
    assert (await commits.release("d")).epoch == 2
    assert broadcaster.released == ["d", "d"] and store.deleted == ["d"] and "d" not in store.plans


async def test_release_of_a_plan_the_broadcaster_no_longer_has_still_forgets(commits):
    commits, store, broadcaster = commits
    store.plans["d"] = _plan((0, 6, "edge"), epoch=2)
    broadcaster.fail = RolloutFailed(grpc.StatusCode.NOT_FOUND, "deployment 'd' has no committed plan")
    assert (await commits.release("d")).epoch == 2
    assert store.deleted == ["d"]


# -- the pure parts ---------------------------------------------------------


def test_a_rolled_out_plan_is_a_resplit_when_boundaries_move_else_a_migration():
    before = _plan((0, 3, "edge"), (3, 6, "cloud"))
    assert outcome_of(before, _plan((0, 2, "edge"), (2, 6, "cloud"))) is Outcome.RESPLIT
    assert outcome_of(before, _plan((0, 3, "cloud"), (3, 6, "edge"))) is Outcome.MIGRATE
    assert outcome_of(before, before) is Outcome.MIGRATE  # the same plan again: a new epoch


def test_stamped_keeps_the_proposal_and_sets_what_the_commit_decides():
    proposed = _plan((0, 6, "edge"))
    proposed.predicted.phi = 1.5
    plan = stamped(proposed, "d", 9, "migrate: x", 100.0)
    assert (plan.epoch, plan.reason, plan.created_at, plan.predicted.phi) == (9, "migrate: x", 100.0, 1.5)
    assert proposed.epoch == 0


def test_logged_keeps_the_proposers_candidates_and_triggers():
    template = common_pb2.DecisionEvent(
        deployment="d", triggers=[common_pb2.Trigger(name="latency")], reason="L > L_max"
    )
    candidate = _plan((0, 2, "edge"), (2, 6, "cloud"))
    template.candidates.append(candidate)
    previous = _plan((0, 3, "edge"), (3, 6, "cloud"), epoch=1)
    plan = stamped(candidate, "d", 2, "resplit: latency", 5.0)
    event = logged(template, previous, 6.0, plan, plan)
    assert list(event.candidates) == [candidate] and [t.name for t in event.triggers] == ["latency"]
    assert (event.timestamp, event.outcome, event.reason, event.chosen) == (6.0, RESPLIT, "L > L_max", plan)
    assert template.timestamp == 0 and not template.HasField("previous")


async def test_a_change_after_a_swap_rolls_out_the_swapped_blocks_and_says_so(commits):
    """The loop read the record before a swap committed: its change still rolls out the
    swapped blocks (the record's unit sources, read under the lock), and its plan carries
    the swap's LayerChange forward, so every later route says the weights changed."""
    commits, store, broadcaster = commits
    store.plans["d"] = _plan((0, 6, "edge"), epoch=1)
    swapped = common_pb2.Deployment()
    swapped.CopyFrom(SPEC)
    swapped.unit_sources.add(unit=2, model_dir="/other")
    layers = common_pb2.LayerChange(first_unit=2, sessions=common_pb2.SESSION_POLICY_REPLAY)
    swap = Change(
        swapped, common_pb2.Plan(segments=_segments((0, 6, "edge")), layers=layers), "swap", _operator(), True
    )
    first = (await commits.commit("d", swap)).plan
    assert first.layers.epoch == first.epoch == 2 and store.deployments["d"] == swapped
    later = Change(SPEC, _plan((0, 3, "edge"), (3, 6, "cloud")), "migrate", _operator())
    second = (await commits.commit("d", later)).plan
    assert list(broadcaster.spec.unit_sources) == list(swapped.unit_sources)
    assert second.epoch == 3 and second.layers == first.layers
