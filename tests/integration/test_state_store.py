"""The Redis state store against a real Redis server of the test's own."""

from __future__ import annotations

import asyncio
import time

import pytest

from resplit.state.store import StaleEpochError
from resplit.v1 import common_pb2

pytestmark = pytest.mark.integration


def _node(node_id: str, trusted: bool = False) -> common_pb2.Node:
    return common_pb2.Node(
        node_id=node_id,
        address=f"127.0.0.1:{6000 + len(node_id)}",
        trusted=trusted,
        capacity=common_pb2.NodeCapacity(memory_bytes=2**30, cpu_cores=2, device_profile="cpu"),
        role="worker",
    )


def _plan(name: str, epoch: int, *nodes: str) -> common_pb2.Plan:
    plan = common_pb2.Plan(deployment=name, epoch=epoch, reason=f"test epoch {epoch}")
    for i, node_id in enumerate(nodes):
        plan.segments.add(units=common_pb2.UnitRange(start=i, end=i + 1), node_id=node_id)
    return plan


async def _state_of(store, node_id: str) -> int:
    return {n.node_id: n.state for n in await store.list_nodes()}[node_id]


async def test_registered_node_is_up_then_down_after_heartbeat_ttl(store):
    registered = time.monotonic()
    await store.register_node(_node("edge-1", trusted=True), ttl_s=1.0)
    [node] = await store.list_nodes()
    assert node.trusted and node.capacity.memory_bytes == 2**30
    if node.state != common_pb2.NODE_STATE_UP:  # only a listing later than the TTL may read DOWN
        assert time.monotonic() - registered >= 1.0
    while await _state_of(store, "edge-1") == common_pb2.NODE_STATE_UP:
        assert time.monotonic() - registered < 30, "the heartbeat key never expired"
        await asyncio.sleep(0.05)
    assert time.monotonic() - registered >= 1.0, "DOWN before its TTL ran out"  # Redis never expires early
    assert await store.list_nodes(include_down=False) == []


async def test_heartbeat_keeps_a_node_up_past_its_ttl(store):
    """Four beats 0.5 s apart with a 2 s TTL (well inside it, even on a loaded machine): UP
    the whole 2 s+ after registering; then the node stays UP as long as it beats."""
    await store.register_node(_node("edge-2"), ttl_s=2.0)
    for _ in range(5):
        await asyncio.sleep(0.5)
        assert await store.heartbeat("edge-2", ttl_s=2.0)
        assert await _state_of(store, "edge-2") == common_pb2.NODE_STATE_UP
    [node] = await store.list_nodes()
    assert node.state == common_pb2.NODE_STATE_UP
    assert time.time() - node.last_heartbeat < 2.0


async def test_registry_age_counts_from_its_first_node_since_redis_was_emptied(store):
    assert await store.registry_age_s() == 0.0  # empty: every node still to come
    await store.register_node(_node("edge-1"), ttl_s=30)
    await asyncio.sleep(0.3)
    await store.register_node(_node("edge-2"), ttl_s=30)  # a later node does not reset it
    assert 0.3 <= await store.registry_age_s() < 30
    await store.redis.flushall()
    assert await store.registry_age_s() == 0.0


async def test_heartbeat_reports_a_forgotten_node_and_mark_down_is_immediate(store):
    assert not await store.heartbeat("never-registered", ttl_s=5)
    await store.register_node(_node("edge-3"), ttl_s=30)
    await store.mark_down("edge-3")
    [node] = await store.list_nodes()
    assert node.state == common_pb2.NODE_STATE_DOWN


async def test_plan_epochs_only_increase(store):
    await store.put_plan(_plan("llama", 2, "edge-1"))
    for stale in (2, 1):
        with pytest.raises(StaleEpochError, match="epoch 2 is already committed"):
            await store.put_plan(_plan("llama", stale, "edge-9"))
    assert (await store.get_plan("llama")).segments[0].node_id == "edge-1"
    await store.put_plan(_plan("llama", 3, "edge-2"))
    assert (await store.get_plan("llama")).epoch == 3
    assert await store.get_plan("unknown") is None


async def test_next_epoch_is_monotonic_and_above_the_committed_epoch(store, redis_server):
    first = await store.next_epoch("m")
    second = await store.next_epoch("m")
    assert (first, second) == (1, 2)
    await store.put_plan(_plan("m", 10, "a"))
    assert await store.next_epoch("m") == 11
    # A counter lost (e.g. Redis restarted and re-seeded only from the plan) never goes back.
    await store.redis.delete("resplit:deploy:m:epoch")
    assert await store.next_epoch("m") == 11
    assert await store.next_epoch("m", floor=50) == 51


async def test_decision_events_are_appended_and_read_back_in_order(store):
    for i in range(5):
        event = common_pb2.DecisionEvent(
            deployment="llama",
            timestamp=float(i),
            outcome=common_pb2.DECISION_OUTCOME_KEEP,
            reason=f"cycle {i}",
        )
        event.triggers.add(name="latency", value=100.0 + i, threshold=150.0)
        await store.append_event(event)
    events = await store.read_events("llama", limit=3)
    assert [e.reason for e in events] == ["cycle 2", "cycle 3", "cycle 4"]
    assert events[-1].triggers[0].value == 104.0
    assert await store.read_events("other") == []


async def test_deployments_round_trip(store):
    await store.put_deployment(common_pb2.Deployment(name="b", model_dir="/m/b", num_units=8))
    await store.put_deployment(common_pb2.Deployment(name="a", model_dir="/m/a", num_units=6))
    assert [d.name for d in await store.list_deployments()] == ["a", "b"]
    assert (await store.get_deployment("b")).num_units == 8
    assert await store.get_deployment("c") is None


async def test_published_routes_reach_a_subscriber(store):
    received: list[common_pb2.Route] = []

    watch = await store.watch_routes("llama")  # subscribed once this returns: nothing is missed

    async def listen() -> None:
        async for route in watch:
            received.append(route)
            if len(received) == 2:
                return

    route = common_pb2.Route(deployment="llama", epoch=1)
    route.hops.add(units=common_pb2.UnitRange(start=0, end=3), node_id="edge-1", address="127.0.0.1:1")
    assert await store.publish_route(route) == 1  # before anyone iterates: already subscribed
    route.epoch = 2
    await store.publish_route(route)
    try:
        await asyncio.wait_for(listen(), 5)
    finally:
        await watch.aclose()
    assert [r.epoch for r in received] == [1, 2]
    assert received[0].hops[0].address == "127.0.0.1:1"


async def test_store_reconnects_after_redis_restarts(store, redis_server):
    await store.register_node(_node("edge-1"), ttl_s=30)
    redis_server.stop()
    ok, reason = await store.ping()
    assert not ok and "unreachable" in reason
    redis_server.start()  # same port, empty: nothing persisted

    async def reachable() -> bool:
        return (await store.ping())[0]

    deadline = time.monotonic() + 10
    while not await reachable():
        assert time.monotonic() < deadline, "store never reconnected"
        await asyncio.sleep(0.1)
    assert await store.list_nodes() == []
    assert not await store.heartbeat("edge-1", ttl_s=30)  # tells the node to register again


async def test_transactional_writes_survive_a_redis_restart_under_pooled_connections(store, redis_server):
    """Several connections sit in the pool when Redis restarts; each write that draws one
    of them must still land (redis-py retries single commands, not pipelines)."""
    await asyncio.gather(*(store.put_deployment(common_pb2.Deployment(name=f"d{i}")) for i in range(6)))
    redis_server.stop()
    redis_server.start()  # same port, empty
    await asyncio.gather(*(store.put_deployment(common_pb2.Deployment(name=f"e{i}")) for i in range(6)))
    await store.register_node(_node("edge-2"), ttl_s=30)
    assert sorted(d.name for d in await store.list_deployments()) == [f"e{i}" for i in range(6)]
    assert [n.node_id for n in await store.list_nodes()] == ["edge-2"]


async def test_a_burst_of_commands_opens_at_most_the_pool_bound(store, redis_server):
    """64 commands at once, twice, around a restart: at most MAX_CONNECTIONS sockets to
    Redis (an unbounded pool kept one per command in flight: the soak's growing file count)."""
    import redis as sync_redis

    from resplit.state.store import MAX_CONNECTIONS

    async def burst() -> None:
        await asyncio.gather(*(store.list_nodes() for _ in range(64)))

    def clients() -> int:
        with sync_redis.Redis.from_url(redis_server.url) as raw:
            return len(raw.client_list()) - 1  # less this one

    await burst()
    assert 1 <= clients() <= MAX_CONNECTIONS
    redis_server.stop()
    redis_server.start()
    await burst()
    assert 1 <= clients() <= MAX_CONNECTIONS
