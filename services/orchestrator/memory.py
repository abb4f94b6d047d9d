"""What the orchestrator last saw in Redis, to serve and restore from.

Why: Redis may restart empty. The data plane never notices (workers serve
the plan they hold), but clients ask the orchestrator for routes and the
control loop needs the plan. So the orchestrator keeps the deployments, plans
and nodes it last read, answers route lookups from them while Redis is away,
and writes the deployments and plans back when Redis returns without them —
the epoch counter raised to the plan's epoch with it, so no epoch ever goes
backwards. Workers re-register themselves; the monitor's time series
refill on their own. The decision log is kept and written back too (decisions.py).

An undeployed deployment must never come back: Undeploy leaves a tombstone here
before it deletes anything, and a sync that read the deployment from Redis just
before (it awaits Redis between reading and writing) skips a name with a tombstone
rather than writing it back (the 10-minute soak resurrected an undeployed second
deployment this way, with a plan its workers had released: its sessions then met
"deployment not hosted on this worker" until their deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from resplit.state import StateStore
from resplit.state.store import StaleEpochError
from resplit.v1 import common_pb2

from .decisions import KeptEvents
from .keep import Kept, MemoryFile

log = logging.getLogger(__name__)


class LastKnown:
    def __init__(self, store: StateStore, interval_s: float = 1.0, file: MemoryFile | None = None) -> None:
        self.store = store
        self.interval_s = interval_s
        #: Where this memory outlives the process (keep.py; none: it does not).
        self.file = file or MemoryFile("")
        kept = self.file.load()
        self.deployments: dict[str, common_pb2.Deployment] = kept.deployments
        self.plans: dict[str, common_pb2.Plan] = kept.plans
        self.nodes: list[common_pb2.Node] = []
        self.events = KeptEvents(store)
        #: Names being undeployed or undeployed: never written back, never taken from Redis.
        self._forgotten: set[str] = kept.forgotten
        #: The highest epoch seen of every name, undeployed ones too: a name deployed again
        #: after Redis lost its epoch counter must not start below what its workers saw.
        self.epochs: dict[str, int] = kept.epochs
        self._task: asyncio.Task | None = None

    def save(self) -> None:
        self.file.save(Kept(self.deployments, self.plans, self.epochs, self._forgotten))

    def remember(self, deployment: common_pb2.Deployment | None, plan: common_pb2.Plan | None) -> None:
        if deployment is not None:
            self._forgotten.discard(deployment.name)
            self.deployments[deployment.name] = deployment
        if plan is not None:
            self.epochs[plan.deployment] = max(self.epochs.get(plan.deployment, 0), plan.epoch)
        if plan is not None and plan.deployment in self._forgotten:
            return
        if plan is not None and plan.epoch >= self.plans.get(plan.deployment, common_pb2.Plan()).epoch:
            self.plans[plan.deployment] = plan
        self.save()

    def forget(self, name: str) -> tuple[common_pb2.Deployment | None, common_pb2.Plan | None]:
        """An undeployed deployment must not come back (until deployed again); what was known."""
        self._forgotten.add(name)
        self.events.forget(name)
        known = self.deployments.pop(name, None), self.plans.pop(name, None)
        self.save()
        return known

    def unforget(self, name: str, known: tuple[common_pb2.Deployment | None, common_pb2.Plan | None]) -> None:
        """An Undeploy that failed: the deployment is still there, as it was ``known``."""
        self._forgotten.discard(name)
        self.remember(*known)

    async def sync(self) -> list[str]:
        """Refresh from Redis, restoring what Redis lost; the names restored."""
        listed = {d.name: d for d in await self.store.list_deployments()}
        restored = []
        for name, deployment in listed.items():
            if name not in self._forgotten:
                self.deployments[name] = deployment
        for name, deployment in list(self.deployments.items()):
            if name in self._forgotten:
                continue  # undeployed while this sync awaited Redis
            if name not in listed:
                await self.store.put_deployment(deployment)
                restored.append(name)
                if name in self._forgotten:  # undeployed meanwhile: its Undeploy deletes it
                    continue
            plan = await self.store.get_plan(name)
            known = self.plans.get(name)
            if plan is None and known is not None and name not in self._forgotten:
                # put_plan raises the epoch counter to the plan's epoch too
                with contextlib.suppress(StaleEpochError):  # someone committed a newer one meanwhile
                    await self.store.put_plan(known)
                    restored.append(name)
            elif plan is not None:
                self.remember(None, plan)
            if name not in self._forgotten:
                await self.events.sync(name)
        nodes = await self.store.list_nodes()
        if nodes:
            self.nodes = nodes
        self.save()
        if restored:
            log.warning("Redis had lost %s; restored their deployment and plan", sorted(set(restored)))
        return list(dict.fromkeys(restored))

    async def run(self) -> None:
        while True:
            try:
                await self.sync()
            except (RedisError, OSError) as exc:
                log.debug("state store unreachable, serving what was last known: %s", exc)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="last-known")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
