"""Re-rolling a plan whose node lost its segments.

Why: a worker that restarts holds nothing, and one that comes back before its heartbeat
runs out (or while the control loop's rollouts fail for another reason) never reads
DOWN, so no trigger fires and the plan in force still routes sessions through a hop
that answers "not hosted" (the 10-minute soak of issue 26: 88 sessions gave up on
NOT_FOUND "deployment not hosted on this worker", 8 more on the same loss hidden as
gRPC's "Internal error from Core"). When a failure report's check finds such a node
(failures.py: it answers its Ping, but its GetStatus lacks a segment the plan gives
it), the plan in force is committed again as a new epoch through the one commit path:
the broadcaster loads what is missing (the other workers share the weights they
hold), sessions move to the new route. At most one re-roll per deployment at a time,
and none for a plan that changed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging

from resplit.state import StateStore
from resplit.v1 import common_pb2

from .commit import Change, Commits

log = logging.getLogger(__name__)


class Repairs:
    def __init__(self, store: StateStore, commits: Commits) -> None:
        self.store = store
        self.commits = commits
        self._running: dict[str, asyncio.Task[None]] = {}

    def request(self, deployment: str, epoch: int, why: str) -> bool:
        """Re-roll ``deployment``'s plan of ``epoch`` in the background; False when one runs already."""
        if deployment in self._running:
            return False
        task = asyncio.create_task(self.reroll(deployment, epoch, why), name=f"repair-{deployment}")
        self._running[deployment] = task
        task.add_done_callback(lambda _: self._running.pop(deployment, None))
        return True

    async def reroll(self, deployment: str, epoch: int, why: str) -> common_pb2.Plan | None:
        """Commit the plan in force again as a new epoch, if it is still ``epoch``; the new plan."""
        spec = await self.store.get_deployment(deployment)
        if spec is None:
            return None

        async def propose(current: common_pb2.Plan) -> Change:
            if current.epoch != epoch or not current.segments:
                return Change(spec, None)  # changed meanwhile (or gone): nothing to repair
            reason = f"repair: {why}"
            event = common_pb2.DecisionEvent(deployment=deployment, reason=reason)
            return Change(spec, common_pb2.Plan(segments=current.segments), reason, event)

        committed = await self.commits.commit(deployment, propose)
        if committed.failure is not None:
            log.warning("re-roll of %s failed: %s", deployment, committed.failure)
        elif committed.plan is not None:
            log.warning("%s: re-rolled epoch %d as %d (%s)", deployment, epoch, committed.plan.epoch, why)
        return committed.plan

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
        self._running.clear()
