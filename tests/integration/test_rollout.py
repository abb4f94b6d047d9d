"""The broadcaster's two-phase rollout against real workers: a new placement
is prepared, committed and the old epoch drained and released; a failed
prepare leaves the old epoch serving and says why."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from support import LocalStack, make_plan, spread, wait_for

from resplit.rpc.channels import sync_channel
from resplit.sdk import Client, Sampling
from resplit.v1 import (
    broadcaster_pb2,
    broadcaster_pb2_grpc,
    common_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

pytestmark = pytest.mark.integration

PHASE = broadcaster_pb2.RolloutPhase


def _get_rollout(stack: LocalStack, name: str) -> broadcaster_pb2.RolloutStatus:
    with sync_channel(stack.broadcaster.address) as channel:
        return broadcaster_pb2_grpc.BroadcasterServiceStub(channel).GetRollout(
            broadcaster_pb2.GetRolloutRequest(deployment=name), timeout=5
        )


def _get_plan(stack: LocalStack, name: str) -> common_pb2.Plan:
    with sync_channel(stack.orchestrator.address) as channel:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(channel).GetPlan(
            orchestrator_pb2.GetPlanRequest(deployment=name), timeout=5
        )


def _hosted(stack: LocalStack, name: str) -> set[tuple[str, int, int, int]]:
    """(node, epoch, start, end) of every segment of ``name`` the workers host."""
    found = set()
    for i, proc in enumerate(stack.worker_procs):
        with sync_channel(proc.address) as channel:
            status = worker_pb2_grpc.WorkerServiceStub(channel).GetStatus(
                worker_pb2.GetStatusRequest(), timeout=5
            )
        found |= {
            (f"worker-{i}", s.epoch, s.units.start, s.units.end)
            for s in status.segments
            if s.deployment == name
        }
    return found


def _param_bytes(stack: LocalStack, name: str) -> int:
    """Parameter bytes the workers hold for ``name``."""
    total = 0
    for proc in stack.worker_procs:
        with sync_channel(proc.address) as channel:
            status = worker_pb2_grpc.WorkerServiceStub(channel).GetStatus(
                worker_pb2.GetStatusRequest(), timeout=5
            )
        total += sum(s.param_bytes for s in status.segments if s.deployment == name)
    return total


def _generate(stack: LocalStack, name: str) -> list:
    with Client(stack.orchestrator.address) as client:
        return list(client.generate_ids([5, 6, 7], client.route(name), Sampling(max_new_tokens=3)))


def test_rollout_moves_to_a_new_placement_and_releases_the_old(stack, tiny_models):
    first = stack.deploy("rolled", tiny_models["llama"], spread(6, 2))
    assert _get_rollout(stack, "rolled").epoch == first.epoch

    answer = stack.rollout(make_plan("rolled", [(0, 2, 0), (2, 4, 2), (4, 6, 1)]))
    assert answer.phase == PHASE.ROLLOUT_PHASE_COMMITTED
    new = answer.committed.epoch
    assert new > first.epoch
    assert answer.times.prepare_ms > 0 and answer.times.commit_ms > 0

    plan = _get_plan(stack, "rolled")
    assert plan.epoch == new
    assert [(s.units.start, s.units.end, s.node_id) for s in plan.segments] == [
        (0, 2, "worker-0"),
        (2, 4, "worker-2"),
        (4, 6, "worker-1"),
    ]
    expected = {("worker-0", new, 0, 2), ("worker-2", new, 2, 4), ("worker-1", new, 4, 6)}
    # No session runs on the old epoch: it is drained and released at once.
    wait_for(lambda: _hosted(stack, "rolled") == expected, 15, what="the old epoch to be released")
    wait_for(
        lambda: _get_rollout(stack, "rolled").phase == PHASE.ROLLOUT_PHASE_RELEASED,
        10,
        what="the rollout to be recorded RELEASED",
    )
    assert len(_generate(stack, "rolled")) == 3

    # Rolling out the committed plan again is a no-op.
    again = stack.rollout(plan)
    assert again.phase == PHASE.ROLLOUT_PHASE_COMMITTED and again.committed.epoch == new
    assert "unchanged" in again.reason

    with urllib.request.urlopen(f"http://127.0.0.1:{stack.broadcaster.http_port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    assert 'resplit_rollouts_total{outcome="committed"}' in metrics
    assert 'resplit_rollout_phase_seconds_count{phase="prepare"}' in metrics


def test_failed_prepare_keeps_the_old_epoch_serving(stack, tiny_models):
    first = stack.deploy("steady", tiny_models["llama"], spread(6, 2))
    with pytest.raises(grpc.RpcError) as info:
        stack.rollout(make_plan("steady", [(0, 1, 0), (1, 5, 2), (5, 6, 0)]), prepare_deadline_s=0.001)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    details = info.value.details()
    assert "prepare of steady epoch" in details and "aborted" in details
    assert f"epoch {first.epoch} keeps serving" in details

    assert _get_plan(stack, "steady").epoch == first.epoch
    assert len(_generate(stack, "steady")) == 3
    status = _get_rollout(stack, "steady")
    assert status.phase == PHASE.ROLLOUT_PHASE_ABORTED and status.epoch > first.epoch
    assert "could not load units" in status.reason

    # Refusals before any worker is asked.
    cases = [
        (make_plan("steady", [(0, 4, 0)]), grpc.StatusCode.INVALID_ARGUMENT),
        (make_plan("steady", [(0, 3, 2), (3, 6, 0)]), grpc.StatusCode.FAILED_PRECONDITION),  # privacy
        (make_plan("steady", [(0, 3, 0), (3, 6, 7)]), grpc.StatusCode.FAILED_PRECONDITION),  # no such node
        (make_plan("steady", [(0, 6, 0)], epoch=first.epoch), grpc.StatusCode.FAILED_PRECONDITION),  # stale
        (make_plan("ghost", [(0, 6, 0)]), grpc.StatusCode.NOT_FOUND),
    ]
    for plan, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            stack.rollout(plan)
        assert info.value.code() == code, info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        _get_rollout(stack, "ghost")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _deploy_held(stack: LocalStack, name: str, model_dir) -> tuple[common_pb2.Plan, int]:
    """Deploy ``name`` over two workers: (its plan, the parameter bytes they hold for it)."""
    plan = stack.deploy(name, model_dir, spread(6, 2))
    held = _param_bytes(stack, name)
    assert held > 0
    return plan, held


def test_release_frees_a_deployments_segments_on_its_workers(stack, tiny_models):
    plan, held = _deploy_held(stack, "released", tiny_models["llama"])
    with sync_channel(stack.broadcaster.address) as channel:
        stub = broadcaster_pb2_grpc.BroadcasterServiceStub(channel)
        answer = stub.Release(broadcaster_pb2.ReleaseRequest(deployment="released"), timeout=30)
        assert answer.released == plan and answer.freed_bytes == held
        assert _hosted(stack, "released") == set() and _param_bytes(stack, "released") == 0
        status = _get_rollout(stack, "released")
        assert (status.epoch, status.phase) == (plan.epoch, PHASE.ROLLOUT_PHASE_RELEASED)
        for name, code in [("", grpc.StatusCode.INVALID_ARGUMENT), ("ghost", grpc.StatusCode.NOT_FOUND)]:
            with pytest.raises(grpc.RpcError) as info:
                stub.Release(broadcaster_pb2.ReleaseRequest(deployment=name), timeout=30)
            assert info.value.code() == code, info.value.details()
    # The plan is the orchestrator's to forget: Undeploy still finds it and finishes.
    with sync_channel(stack.orchestrator.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        stub.Undeploy(orchestrator_pb2.UndeployRequest(deployment="released"), timeout=30)


def test_undeploy_frees_the_workers_memory_through_the_broadcaster(stack, tiny_models):
    plan, held = _deploy_held(stack, "undeployed", tiny_models["llama"])
    with sync_channel(stack.orchestrator.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        stub.Undeploy(orchestrator_pb2.UndeployRequest(deployment="undeployed"), timeout=30)
    assert _param_bytes(stack, "undeployed") == 0
    # The broadcaster did it: its record of the deployment is the release, with what it freed.
    status = _get_rollout(stack, "undeployed")
    assert (status.epoch, status.phase) == (plan.epoch, PHASE.ROLLOUT_PHASE_RELEASED)
    assert status.reason == f"undeployed: 2 of 2 segment(s) released, {held} parameter bytes freed"
