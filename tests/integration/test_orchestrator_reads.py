"""The orchestrator's read path against real Redis and real workers: plans,
routes (with live worker addresses), route watching, events, and clear errors."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from resplit.launcher.processes import ServiceProcess
from resplit.rpc.channels import sync_channel
from resplit.state import StateStore
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(module_redis):
    """One orchestrator and two workers for the module; each test uses its own deployment name."""
    orchestrator = ServiceProcess("orchestrator", module_redis.url).start()
    workers = [ServiceProcess("worker", module_redis.url, ["--node-id", f"w{i}"]).start() for i in range(2)]
    try:
        for proc in (orchestrator, *workers):
            proc.wait_health("SERVING")
        yield orchestrator, workers
    finally:
        for proc in (orchestrator, *workers):
            proc.kill()


@pytest.fixture
def redis_server(module_redis):
    return module_redis


def _commit(redis_url: str, plan: common_pb2.Plan, route: common_pb2.Route | None = None) -> None:
    async def go() -> None:
        store = StateStore(redis_url)
        try:
            await store.put_plan(plan)
            if route is not None:
                await store.publish_route(route)
        finally:
            await store.close()

    asyncio.run(go())


def _plan(epoch: int, *node_ids: str, name: str = "tiny") -> common_pb2.Plan:
    plan = common_pb2.Plan(deployment=name, epoch=epoch)
    plan.segments.add(units=common_pb2.UnitRange(start=0, end=2), node_id=node_ids[0])
    plan.segments.add(units=common_pb2.UnitRange(start=2, end=4), node_id=node_ids[1])
    return plan


def test_unknown_and_empty_deployment_get_clear_statuses(stack):
    orchestrator, _ = stack
    with sync_channel(orchestrator.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.GetPlan(orchestrator_pb2.GetPlanRequest(deployment="nope"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'nope' has no plan" in info.value.details()
        with pytest.raises(grpc.RpcError) as info:
            stub.GetRoute(orchestrator_pb2.GetRouteRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert stub.ListDeployments(orchestrator_pb2.ListDeploymentsRequest(), timeout=5).deployments == []


def test_plan_and_route_come_from_redis_and_the_registry(stack, redis_server):
    orchestrator, workers = stack
    _commit(redis_server.url, _plan(1, "w0", "w1"))
    with sync_channel(orchestrator.address) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        plan = stub.GetPlan(orchestrator_pb2.GetPlanRequest(deployment="tiny"), timeout=5)
        route = stub.GetRoute(orchestrator_pb2.GetRouteRequest(deployment="tiny"), timeout=5)
    assert plan.epoch == 1 and [s.node_id for s in plan.segments] == ["w0", "w1"]
    assert [h.address for h in route.hops] == [workers[0].address, workers[1].address]
    assert [(h.units.start, h.units.end) for h in route.hops] == [(0, 2), (2, 4)]


def test_route_to_an_unregistered_node_is_unavailable(stack, redis_server):
    orchestrator, _ = stack
    _commit(redis_server.url, _plan(1, "w0", "ghost", name="ghostly"))
    with sync_channel(orchestrator.address) as channel, pytest.raises(grpc.RpcError) as info:
        orchestrator_pb2_grpc.OrchestratorServiceStub(channel).GetRoute(
            orchestrator_pb2.GetRouteRequest(deployment="ghostly"), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "'ghost'" in info.value.details() and "not registered" in info.value.details()


def test_watch_route_sends_the_current_route_then_newer_epochs_only(stack, redis_server):
    orchestrator, workers = stack
    _commit(redis_server.url, _plan(1, "w0", "w1", name="watched"))
    received: list[common_pb2.Route] = []
    with sync_channel(orchestrator.address) as channel:
        stream = orchestrator_pb2_grpc.OrchestratorServiceStub(channel).WatchRoute(
            orchestrator_pb2.WatchRouteRequest(deployment="watched"), timeout=20
        )
        first = next(stream)
        received.append(first)

        def publish() -> None:
            stale = common_pb2.Route(deployment="watched", epoch=1)
            newer = common_pb2.Route(deployment="watched", epoch=2)
            newer.hops.add(
                units=common_pb2.UnitRange(start=0, end=4), node_id="w1", address=workers[1].address
            )
            _commit(redis_server.url, _plan(2, "w1", "w1", name="watched"), stale)
            _commit(redis_server.url, _plan(3, "w1", "w1", name="watched"), newer)

        threading.Thread(target=publish).start()
        received.append(next(stream))
        stream.cancel()
    assert [r.epoch for r in received] == [1, 2]
    assert received[1].hops[0].node_id == "w1"
