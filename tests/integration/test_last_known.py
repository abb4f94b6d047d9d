"""The orchestrator's memory of Redis (services/orchestrator/memory.py, decisions.py)
against a real Redis: what it writes back after Redis loses its data, and what it never
writes back. No services: a StateStore and the memory, so each test takes well under a second."""

from __future__ import annotations

import pytest
import redis

from resplit.state import StateStore
from resplit.v1 import common_pb2
from services.orchestrator.keep import MemoryFile
from services.orchestrator.memory import LastKnown

pytestmark = pytest.mark.integration


def _plan(name: str, epoch: int) -> common_pb2.Plan:
    plan = common_pb2.Plan(deployment=name, epoch=epoch)
    plan.segments.add(units=common_pb2.UnitRange(start=0, end=2), node_id="worker-0")
    return plan


async def _deployed(store: StateStore, name: str, epoch: int = 1) -> None:
    await store.put_deployment(common_pb2.Deployment(name=name, model_dir="/m"))
    await store.put_plan(_plan(name, epoch))


async def test_an_undeploy_during_a_sync_is_not_undone(store):
    """Undeploy lands while a sync awaits Redis after listing the deployment: neither that
    sync nor a later one writes it back (the soak's resurrected second deployment)."""
    await _deployed(store, "second")
    memory = LastKnown(store)
    await memory.sync()
    list_deployments = store.list_deployments

    async def listed_then_undeployed():
        found = await list_deployments()
        memory.forget("second")  # Undeploy, as the servicer does it, then the delete
        await store.delete_deployment("second")
        return found

    store.list_deployments = listed_then_undeployed
    await memory.sync()
    store.list_deployments = list_deployments
    await memory.sync()
    assert await store.get_deployment("second") is None and await store.get_plan("second") is None
    assert "second" not in memory.deployments and "second" not in memory.plans
    memory.remember(common_pb2.Deployment(name="second"), _plan("second", 2))  # deployed again
    assert memory.plans["second"].epoch == 2


async def test_the_decision_log_comes_back_after_redis_loses_it(store, redis_server):
    await _deployed(store, "soak")
    ids = [
        await store.append_event(common_pb2.DecisionEvent(deployment="soak", reason=f"change {i}"))
        for i in range(5)
    ]
    await store.put_measured_latency("soak", ids[-1], 12.5)
    memory = LastKnown(store)
    memory.events.kept = 4  # bounded: the newest 4
    await memory.sync()
    with redis.Redis.from_url(redis_server.url) as raw:
        raw.flushall()  # as a Redis that restarts empty
    await store.append_event(common_pb2.DecisionEvent(deployment="soak", reason="after the loss"))
    assert await memory.sync() == ["soak"]  # the deployment and its plan are written back too
    events = await store.read_events("soak", limit=100)
    assert [e.reason for e in events] == ["change 1", "change 2", "change 3", "change 4", "after the loss"]
    assert events[3].measured_latency_ms == 12.5
    await memory.sync()  # nothing lost now: nothing written twice
    assert len(await store.read_events("soak", limit=100)) == 5


async def test_an_orchestrator_restarted_while_redis_is_empty_gives_back_what_its_file_kept(
    store, redis_server, tmp_path
):
    """The soak's lost deployments: an orchestrator restarted, and Redis emptied before its
    first read. With --memory-file the new process starts from what the old one saw."""
    await _deployed(store, "soak", epoch=3)
    before = LastKnown(store, file=MemoryFile(str(tmp_path / "memory.json")))
    await before.sync()
    before.forget("gone")  # an undeployed name stays undeployed across the restart too
    with redis.Redis.from_url(redis_server.url) as raw:
        raw.flushall()
    after = LastKnown(store, file=MemoryFile(str(tmp_path / "memory.json")))  # a new process
    assert await after.sync() == ["soak"]
    assert (await store.get_plan("soak")).epoch == 3 and after.epochs["soak"] == 3
    assert await store.get_deployment("soak") is not None and "gone" in after._forgotten
