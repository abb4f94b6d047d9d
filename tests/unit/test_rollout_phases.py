"""The broadcaster's rollout state machine over fake workers and a fake store."""

from __future__ import annotations

import asyncio

import pytest

from resplit.v1 import broadcaster_pb2, common_pb2, worker_pb2
from services.broadcaster.core.rollout import (
    RolloutError,
    Rollouts,
    RolloutSettings,
    WorkerCallError,
)

PHASE = broadcaster_pb2.RolloutPhase
NUM_UNITS = 6


def _node(i: int, trusted: bool = False, up: bool = True) -> common_pb2.Node:
    return common_pb2.Node(
        node_id=f"w{i}",
        address=f"10.0.0.{i}:1",
        trusted=trusted,
        state=common_pb2.NODE_STATE_UP if up else common_pb2.NODE_STATE_DOWN,
    )


def _plan(*segments: tuple[int, int, int], epoch: int = 0) -> common_pb2.Plan:
    return common_pb2.Plan(
        deployment="d",
        epoch=epoch,
        segments=[
            common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=f"w{w}")
            for a, b, w in segments
        ],
    )


class StaleEpoch(ValueError):
    pass


class FakePlans:
    def __init__(self, nodes: list[common_pb2.Node]) -> None:
        self.nodes = nodes
        self.deployments = {
            "d": common_pb2.Deployment(name="d", model_dir="/m", num_units=NUM_UNITS, compression="none")
        }
        self.plans: dict[str, common_pb2.Plan] = {}
        self.counter = 0
        self.rollouts: dict[str, broadcaster_pb2.RolloutStatus] = {}
        self.published: list[common_pb2.Route] = []

    async def get_deployment(self, name):
        return self.deployments.get(name)

    async def get_plan(self, deployment):
        return self.plans.get(deployment)

    async def list_nodes(self, include_down=True):
        return [n for n in self.nodes if include_down or n.state == common_pb2.NODE_STATE_UP]

    async def next_epoch(self, deployment, floor=0):
        committed = self.plans[deployment].epoch if deployment in self.plans else 0
        self.counter = max(self.counter, committed, floor) + 1
        return self.counter

    async def put_plan(self, plan):
        current = self.plans.get(plan.deployment)
        if current is not None and plan.epoch <= current.epoch:
            raise StaleEpoch(f"epoch {current.epoch} is already committed")
        self.plans[plan.deployment] = plan

    async def publish_route(self, route):
        self.published.append(route)
        return 1

    async def put_rollout(self, status):
        self.rollouts[status.deployment] = status

    async def get_rollout(self, deployment):
        return self.rollouts.get(deployment)


class FakeWorkers:
    """Workers keyed by address; each hosts {(deployment, epoch, start, end): sessions}."""

    def __init__(self) -> None:
        self.hosted: dict[str, dict[tuple, int]] = {}
        self.calls: list[tuple[str, str, tuple]] = []
        self.fail_load: dict[str, WorkerCallError] = {}
        self.fail_commit: dict[str, WorkerCallError] = {}
        self.dead: set[str] = set()

    def _check(self, address):
        if address in self.dead:
            raise WorkerCallError("UNAVAILABLE", "connection refused")

    async def load(self, address, request, deadline_s):
        key = (request.deployment, request.epoch, request.units.start, request.units.end)
        self.calls.append(("load", address, key))
        self._check(address)
        if address in self.fail_load:
            raise self.fail_load[address]
        self.hosted.setdefault(address, {})[key] = 0
        return worker_pb2.LoadSegmentResponse(param_bytes=1)

    async def commit(self, address, request, deadline_s):
        self.calls.append(("commit", address, (request.deployment, request.epoch)))
        self._check(address)
        if address in self.fail_commit:
            raise self.fail_commit[address]
        return worker_pb2.CommitEpochResponse(active_epoch=request.epoch)

    async def release(self, address, request, deadline_s):
        key = (request.deployment, request.epoch, request.units.start, request.units.end)
        self.calls.append(("release", address, key))
        self._check(address)
        if self.hosted.get(address, {}).pop(key, None) is None:
            raise WorkerCallError("NOT_FOUND", "not hosted")
        return worker_pb2.ReleaseSegmentResponse(freed_bytes=1)

    async def status(self, address, deadline_s):
        self._check(address)
        return worker_pb2.WorkerStatus(
            segments=[
                worker_pb2.HostedSegment(
                    deployment=d, epoch=e, units=common_pb2.UnitRange(start=a, end=b), sessions=n
                )
                for (d, e, a, b), n in self.hosted.get(address, {}).items()
            ]
        )

    def keys(self, address):
        return set(self.hosted.get(address, {}))

    def of(self, kind):
        return [c for c in self.calls if c[0] == kind]


class Observed:
    def __init__(self) -> None:
        self.phases: list[str] = []
        self.outcomes: list[str] = []

    def phase(self, phase, seconds):
        self.phases.append(phase)

    def outcome(self, outcome):
        self.outcomes.append(outcome)


@pytest.fixture
def env():
    nodes = [_node(0, trusted=True), _node(1, trusted=True), _node(2), _node(3)]
    plans, workers, observed = FakePlans(nodes), FakeWorkers(), Observed()
    rollouts = Rollouts(workers, plans, RolloutSettings(drain_deadline_s=5.0, poll_s=0.01), observed)
    return rollouts, plans, workers, observed


def _request(plan, **kw) -> broadcaster_pb2.RolloutRequest:
    return broadcaster_pb2.RolloutRequest(plan=plan, **kw)


A0, A1, A2, A3 = (f"10.0.0.{i}:1" for i in range(4))


async def _first(rollouts, workers):
    answer = await rollouts.rollout(_request(_plan((0, 3, 0), (3, 6, 1))))
    await rollouts.wait_idle()
    workers.calls.clear()
    return answer.committed


async def test_first_rollout_prepares_commits_and_stores(env):
    rollouts, plans, workers, observed = env
    answer = await rollouts.rollout(_request(_plan((0, 2, 0), (2, 4, 2), (4, 6, 0))))
    assert answer.phase == PHASE.ROLLOUT_PHASE_COMMITTED
    assert answer.committed.epoch == 1
    assert plans.plans["d"].epoch == 1
    assert plans.published[-1].epoch == 1 and len(plans.published[-1].hops) == 3
    assert workers.keys(A0) == {("d", 1, 0, 2), ("d", 1, 4, 6)}
    assert workers.keys(A2) == {("d", 1, 2, 4)}
    assert {c[1] for c in workers.of("commit")} == {A0, A2}
    await rollouts.wait_idle()
    assert plans.rollouts["d"].phase == PHASE.ROLLOUT_PHASE_RELEASED
    assert "prepare" in observed.phases and observed.outcomes == ["committed"]


async def test_prepare_failure_releases_new_loads_and_aborts(env):
    rollouts, plans, workers, observed = env
    old = await _first(rollouts, workers)
    workers.fail_load[A3] = WorkerCallError("FAILED_PRECONDITION", "out of memory")
    with pytest.raises(RolloutError) as info:
        await rollouts.rollout(_request(_plan((0, 2, 0), (2, 4, 3), (4, 6, 1))))
    error = info.value
    assert error.code == "FAILED_PRECONDITION"
    assert "prepare of d epoch 2 aborted: worker w3" in str(error)
    assert "could not load units [2, 4): out of memory" in str(error)
    assert f"epoch {old.epoch} keeps serving" in str(error)
    # What loaded for epoch 2 is released; epoch 1 is untouched and still committed.
    assert workers.keys(A0) == {("d", 1, 0, 3)}
    assert workers.keys(A1) == {("d", 1, 3, 6)}
    assert {c[2][1] for c in workers.of("release")} == {2}
    assert not workers.of("commit")
    assert plans.plans["d"].epoch == old.epoch
    status = plans.rollouts["d"]
    assert status.phase == PHASE.ROLLOUT_PHASE_ABORTED and status.epoch == 2
    assert "out of memory" in status.reason
    assert observed.outcomes[-1] == "aborted"


async def test_prepare_deadline_keeps_the_worker_code(env):
    rollouts, _plans, workers, _ = env
    await _first(rollouts, workers)
    workers.fail_load[A2] = WorkerCallError("DEADLINE_EXCEEDED", "Deadline Exceeded")
    with pytest.raises(RolloutError) as info:
        await rollouts.rollout(_request(_plan((0, 3, 0), (3, 5, 2), (5, 6, 1)), prepare_deadline_s=0.5))
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert "prepare deadline 0.5 s" in str(info.value)
    await rollouts.close()


async def test_commit_failure_aborts(env):
    rollouts, plans, workers, _ = env
    old = await _first(rollouts, workers)
    workers.fail_commit[A2] = WorkerCallError("UNAVAILABLE", "gone")
    with pytest.raises(RolloutError) as info:
        await rollouts.rollout(_request(_plan((0, 2, 0), (2, 4, 2), (4, 6, 1))))
    assert info.value.code == "UNAVAILABLE"
    assert "commit of d epoch 2 aborted: worker w2" in str(info.value)
    assert plans.plans["d"].epoch == old.epoch
    assert not [k for k in workers.keys(A2) if k[1] == 2]


async def test_repeat_of_the_committed_plan_is_idempotent(env):
    rollouts, _plans, workers, observed = env
    old = await _first(rollouts, workers)
    again = await rollouts.rollout(_request(_plan((0, 3, 0), (3, 6, 1), epoch=old.epoch)))
    assert again.phase == PHASE.ROLLOUT_PHASE_COMMITTED
    assert again.committed == old
    assert not workers.calls
    assert observed.outcomes[-1] == "unchanged"


async def test_stale_epoch_is_refused(env):
    rollouts, plans, workers, _ = env
    old = await _first(rollouts, workers)
    with pytest.raises(RolloutError) as info:
        await rollouts.rollout(_request(_plan((0, 2, 0), (2, 6, 1), epoch=old.epoch)))
    assert info.value.code == "FAILED_PRECONDITION"
    assert "stale epoch" in str(info.value)
    assert not workers.calls
    assert plans.plans["d"] == old


async def test_validation_refusals(env):
    rollouts, plans, workers, _ = env
    cases = [
        (_plan((0, 3, 0)), "INVALID_ARGUMENT", "segments end at unit 3"),
        (_plan((0, 3, 0), (3, 6, 9)), "FAILED_PRECONDITION", "'w9' is not registered"),
        (_plan((0, 3, 2), (3, 6, 0)), "FAILED_PRECONDITION", "privacy-critical"),
    ]
    for plan, code, text in cases:
        with pytest.raises(RolloutError) as info:
            await rollouts.rollout(_request(plan))
        assert (info.value.code, text in str(info.value)) == (code, True), str(info.value)
    plans.nodes[3] = _node(3, up=False)
    with pytest.raises(RolloutError) as info:
        await rollouts.rollout(_request(_plan((0, 3, 0), (3, 5, 3), (5, 6, 0))))
    assert info.value.code == "FAILED_PRECONDITION" and "'w3' is down" in str(info.value)
    unknown = _plan((0, 6, 0))
    unknown.deployment = "nope"
    with pytest.raises(RolloutError) as info:
        await rollouts.rollout(_request(unknown))
    assert info.value.code == "NOT_FOUND"
    with pytest.raises(RolloutError) as info:
        await rollouts.rollout(_request(common_pb2.Plan()))
    assert info.value.code == "INVALID_ARGUMENT"
    assert not workers.calls


async def test_spec_in_the_request_wins_over_the_store(env):
    rollouts, plans, _workers, _ = env
    plans.deployments.clear()
    spec = common_pb2.Deployment(name="d", model_dir="/other", num_units=NUM_UNITS)
    answer = await rollouts.rollout(_request(_plan((0, 6, 0)), deployment=spec))
    assert answer.committed.epoch == 1
    await rollouts.wait_idle()


async def test_drain_waits_for_sessions_then_releases(env):
    rollouts, plans, workers, observed = env
    await _first(rollouts, workers)
    workers.hosted[A1][("d", 1, 3, 6)] = 2  # two sessions still on the old segment
    await rollouts.rollout(_request(_plan((0, 3, 0), (3, 5, 2), (5, 6, 0))))
    # w1 is outside the new plan: it learns the new epoch.
    assert (A1, ("d", 2)) in {(c[1], c[2]) for c in workers.of("commit")}
    await asyncio.sleep(0.1)
    assert ("d", 1, 3, 6) in workers.keys(A1), "released while sessions were still on it"
    assert plans.rollouts["d"].phase == PHASE.ROLLOUT_PHASE_COMMITTED
    workers.hosted[A1][("d", 1, 3, 6)] = 0
    await asyncio.wait_for(rollouts.wait_idle(), 2)
    assert workers.keys(A1) == set()
    # The unchanged segment on w0 is released for epoch 1 only.
    assert workers.keys(A0) == {("d", 2, 0, 3), ("d", 2, 5, 6)}
    status = plans.rollouts["d"]
    assert status.phase == PHASE.ROLLOUT_PHASE_RELEASED and status.epoch == 2
    assert status.times.release_ms > 50
    assert {"drain", "release"} <= set(observed.phases)


async def test_drain_deadline_releases_anyway(env):
    rollouts, plans, workers, _ = env
    await _first(rollouts, workers)
    workers.hosted[A1][("d", 1, 3, 6)] = 1
    await rollouts.rollout(_request(_plan((0, 3, 0), (3, 5, 2), (5, 6, 0)), drain_deadline_s=0.1))
    await asyncio.wait_for(rollouts.wait_idle(), 2)
    assert ("d", 1, 3, 6) not in workers.keys(A1)
    assert plans.rollouts["d"].phase == PHASE.ROLLOUT_PHASE_RELEASED


async def test_dead_old_worker_does_not_stop_the_release(env):
    rollouts, plans, workers, _ = env
    await _first(rollouts, workers)
    workers.dead.add(A1)
    await rollouts.rollout(_request(_plan((0, 3, 0), (3, 5, 2), (5, 6, 0))))
    await asyncio.wait_for(rollouts.wait_idle(), 2)
    assert plans.rollouts["d"].phase == PHASE.ROLLOUT_PHASE_RELEASED
    assert ("d", 1, 0, 3) not in workers.keys(A0)


def _hold_loads(workers: FakeWorkers) -> tuple[asyncio.Event, asyncio.Event]:
    """Loads wait for the gate; (set once a load is waiting, the gate)."""
    loading, gate = asyncio.Event(), asyncio.Event()
    inner = workers.load

    async def slow_load(address, request, deadline_s):
        loading.set()
        await gate.wait()
        return await inner(address, request, deadline_s)

    workers.load = slow_load
    return loading, gate


async def test_one_rollout_per_deployment_at_a_time(env):
    rollouts, plans, workers, _ = env
    await _first(rollouts, workers)
    _loading, gate = _hold_loads(workers)
    first = asyncio.create_task(rollouts.rollout(_request(_plan((0, 3, 0), (3, 5, 2), (5, 6, 0)))))
    second = asyncio.create_task(rollouts.rollout(_request(_plan((0, 3, 0), (3, 5, 3), (5, 6, 0)))))
    await asyncio.sleep(0.05)
    assert plans.rollouts["d"].epoch == 2  # the second has not started preparing
    gate.set()
    a, b = await asyncio.gather(first, second)
    assert (a.committed.epoch, b.committed.epoch) == (2, 3)
    assert plans.plans["d"].epoch == 3
    await rollouts.wait_idle()


async def test_get_rollout(env):
    rollouts, _plans, workers, _ = env
    with pytest.raises(RolloutError) as info:
        await rollouts.get("d")
    assert info.value.code == "NOT_FOUND"
    with pytest.raises(RolloutError) as info:
        await rollouts.get("")
    assert info.value.code == "INVALID_ARGUMENT"
    await _first(rollouts, workers)
    assert (await rollouts.get("d")).phase == PHASE.ROLLOUT_PHASE_RELEASED


async def test_release_frees_every_segment_of_the_committed_plan(env):
    rollouts, plans, workers, observed = env
    committed = await _first(rollouts, workers)
    answer = await rollouts.release("d")
    assert answer.released == committed and answer.freed_bytes == 2
    assert workers.keys(A0) == set() and workers.keys(A1) == set()
    assert sorted(c[1:] for c in workers.of("release")) == [(A0, ("d", 1, 0, 3)), (A1, ("d", 1, 3, 6))]
    assert not workers.of("load") and not workers.of("commit")
    status = plans.rollouts["d"]
    assert (status.epoch, status.phase) == (1, PHASE.ROLLOUT_PHASE_RELEASED)
    assert status.reason == "undeployed: 2 of 2 segment(s) released, 2 parameter bytes freed"
    assert plans.plans["d"] == committed, "the plan is the caller's to forget"
    assert observed.phases[-1] == "release"


async def test_release_is_best_effort_per_worker(env):
    rollouts, plans, workers, _ = env
    await rollouts.rollout(_request(_plan((0, 2, 0), (2, 4, 2), (4, 6, 1))))
    await rollouts.wait_idle()
    workers.dead.add(A1)
    plans.plans["d"].segments[1].node_id = "gone"  # a node no longer registered
    answer = await rollouts.release("d")
    assert answer.freed_bytes == 1 and workers.keys(A0) == set()
    assert {c[1] for c in workers.of("release")} == {A0, A1}
    assert "1 of 3 segment(s) released" in plans.rollouts["d"].reason


async def test_release_refusals(env):
    rollouts, _plans, workers, _ = env
    for name, code in [("", "INVALID_ARGUMENT"), ("d", "NOT_FOUND"), ("nope", "NOT_FOUND")]:
        with pytest.raises(RolloutError) as info:
            await rollouts.release(name)
        assert info.value.code == code, name
    assert not workers.calls


async def test_release_waits_for_the_rollout_in_flight_and_frees_its_plan(env):
    rollouts, _plans, workers, _ = env
    await _first(rollouts, workers)
    loading, gate = _hold_loads(workers)
    rolling = asyncio.create_task(rollouts.rollout(_request(_plan((0, 3, 0), (3, 5, 2), (5, 6, 0)))))
    await loading.wait()
    releasing = asyncio.create_task(rollouts.release("d"))
    for _ in range(20):  # every chance to run: it must be waiting for the rollout
        await asyncio.sleep(0)
    assert not releasing.done() and not workers.of("release")
    gate.set()
    await rolling
    answer = await releasing
    assert answer.released.epoch == 2
    await rollouts.wait_idle()
    assert workers.keys(A0) == set() and workers.keys(A2) == set()


async def test_a_drain_ending_after_an_undeploy_keeps_its_record(env):
    rollouts, plans, workers, _ = env
    await _first(rollouts, workers)
    workers.hosted[A1][("d", 1, 3, 6)] = 1  # the old epoch drains until this session ends
    await rollouts.rollout(_request(_plan((0, 3, 0), (3, 5, 2), (5, 6, 0))))
    await rollouts.release("d")
    workers.hosted[A1][("d", 1, 3, 6)] = 0
    await asyncio.wait_for(rollouts.wait_idle(), 2)
    assert workers.keys(A0) == workers.keys(A1) == workers.keys(A2) == set()
    status = plans.rollouts["d"]
    assert status.epoch == 2 and status.reason.startswith("undeployed: 3 of 3"), status
