"""The one commit path of the orchestrator: every plan change goes lock -> epoch ->
rollout -> event here, whoever proposed it.

* the control loop (loop.py): a decision of Alg. 1, logged as a decision event;
* an operator's ApplyPlan (deployer.py): logged as an ``operator: ...`` event;
* Deploy (deployer.py): not logged; the deployment record is stored once committed;
* SwapLayers (layers.py): the same segments with new weights for some blocks, logged as
  an ``operator: swap ...`` event naming who asked; the record is stored once committed;
* Undeploy (deployer.py): ``release`` - the broadcaster frees the plan's segments
  on its workers, then the deployment and its plan are forgotten.

One lock per deployment, so no two changes of a deployment interleave here, and
the plan a change replaces is read under it. Epochs are assigned here and nowhere
else in the orchestrator: above every epoch the deployment has had (the store's
counter) and above the plan it replaces. The broadcaster only rolls out what it is
given. The pure parts (the plan a change becomes, its event) are in core/commit.py.

Every refusal carries the gRPC status it is answered with, chosen by the type of
the error, never by its wording.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import grpc

from resplit.core.privacy import PrivacyError
from resplit.core.units import NodeDown, PlanError
from resplit.state import StateStore
from resplit.v1 import common_pb2

from .config import OrchestratorSettings
from .core.commit import logged, stamped
from .rollouts import Broadcaster, RolloutFailed

log = logging.getLogger(__name__)


class CommitError(Exception):
    """A plan change refused or not committed; ``code`` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def refused(exc: PlanError, prefix: str = "") -> CommitError:
    """A plan that cannot be served, as a CommitError: FAILED_PRECONDITION when the
    cluster is what stands in its way (a node down, a privacy-critical unit on an
    untrusted node), INVALID_ARGUMENT when the plan itself is wrong (a gap in the
    split, a node nobody registered)."""
    code = (
        grpc.StatusCode.FAILED_PRECONDITION
        if isinstance(exc, (NodeDown, PrivacyError))
        else grpc.StatusCode.INVALID_ARGUMENT
    )
    return CommitError(code, f"{prefix}{exc}")


@dataclass(frozen=True)
class Change:
    """One plan change, as its proposer wants it committed.

    ``proposed`` is the plan to roll out (its segments; a solver's predicted cost),
    or None to keep the plan in force (only the event is written). Its deployment,
    epoch, creation time and ``reason`` are set at commit. ``event`` is the decision
    event to log (deployment, triggers, candidates, reason; core/commit.py fills in
    the rest), or None for a change that is not logged (a deploy). ``store_spec``:
    store ``spec`` as the deployment record once the plan is committed (a deploy;
    a refused or aborted one leaves the previous record as it was).
    """

    spec: common_pb2.Deployment
    proposed: common_pb2.Plan | None
    reason: str = ""
    event: common_pb2.DecisionEvent | None = None
    store_spec: bool = False


@dataclass(frozen=True)
class Committed:
    """What became of a change: the plan committed (None when kept or not committed),
    the event logged (None when the change is not logged), and why it failed."""

    plan: common_pb2.Plan | None
    event: common_pb2.DecisionEvent | None = None
    failure: CommitError | None = None

    def or_raise(self) -> common_pb2.Plan:
        """The committed plan, or the failure raised."""
        if self.failure is not None:
            raise self.failure
        assert self.plan is not None
        return self.plan


#: Proposes the change given the plan in force, read under the deployment's lock.
Propose = Callable[[common_pb2.Plan], Awaitable[Change]]


@dataclass
class Commits:
    """The commit path of every deployment (one per orchestrator)."""

    store: StateStore
    broadcaster: Broadcaster
    settings: OrchestratorSettings
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def _lock(self, deployment: str) -> asyncio.Lock:
        return self.locks.setdefault(deployment, asyncio.Lock())

    async def commit(
        self, name: str, change: Change | Propose, fallback: common_pb2.Plan | None = None
    ) -> Committed:
        """Lock -> epoch -> rollout -> event, for ``change`` or for the change that
        ``change(plan in force)`` proposes (the loop decides under the lock, on the
        plan it would replace). ``fallback`` stands in for the plan in force when the
        store has none (Redis restarted empty). A rollout that fails is not raised:
        it is logged (a keep) and returned as ``failure``."""
        async with self._lock(name):
            previous = await self.store.get_plan(name) or fallback or common_pb2.Plan(deployment=name)
            if not isinstance(change, Change):
                change = await change(previous)
            plan = committed = failure = None
            if change.proposed is not None:
                epoch = await self.store.next_epoch(name, floor=previous.epoch)
                plan = stamped(change.proposed, name, epoch, change.reason, time.time(), previous)
                committed, failure = await self._roll_out(plan, await self._with_sources(change))
            event = None
            if change.event is not None:
                event = logged(change.event, previous, time.time(), plan, committed, str(failure or ""))
                event_id = await self.store.append_event(event)
                if committed is not None:
                    await self.store.record_change(name, event.timestamp, event_id)
        return Committed(committed, event, failure)

    async def _with_sources(self, change: Change) -> Change:
        """``change`` with the unit sources (swapped layers) of the deployment record in
        force, read under the lock: a proposer that read the record before a swap committed
        (the loop, ApplyPlan) must not roll the old weights out again. A change that stores
        its own record (Deploy, SwapLayers) is the record."""
        if change.store_spec:
            return change
        stored = await self.store.get_deployment(change.spec.name)
        if stored is None or list(stored.unit_sources) == list(change.spec.unit_sources):
            return change
        spec = common_pb2.Deployment()
        spec.CopyFrom(change.spec)
        del spec.unit_sources[:]
        spec.unit_sources.extend(stored.unit_sources)
        return replace(change, spec=spec)

    async def _roll_out(
        self, plan: common_pb2.Plan, change: Change
    ) -> tuple[common_pb2.Plan | None, CommitError | None]:
        """(the committed plan, None), or (None, why not)."""
        try:
            reply = await self.broadcaster.rollout(
                plan, change.spec, self.settings.prepare_deadline_s, self.settings.drain_deadline_s
            )
        except RolloutFailed as exc:
            log.warning("rollout of %s epoch %d failed: %s", plan.deployment, plan.epoch, exc)
            return None, CommitError(exc.code, str(exc))
        if change.store_spec:
            await self.store.put_deployment(change.spec)
        log.info("%s: committed epoch %d (%s)", plan.deployment, plan.epoch, plan.reason)
        return (reply.committed if reply.HasField("committed") else plan), None

    async def release(self, name: str) -> common_pb2.Plan:
        """Undeploy: the broadcaster frees the plan's segments on its workers, then the
        deployment and its plan are forgotten (the epoch counter stays, so epochs never
        repeat). The plan released."""
        async with self._lock(name):
            plan = await self.store.get_plan(name)
            if plan is None:
                raise CommitError(grpc.StatusCode.NOT_FOUND, f"deployment {name!r} is not deployed")
            try:
                released = (await self.broadcaster.release(name)).released
            except RolloutFailed as exc:
                if exc.code != grpc.StatusCode.NOT_FOUND:  # its plan went meanwhile: forget the rest
                    raise CommitError(exc.code, f"undeploy of {name!r} failed: {exc}") from None
                released = plan
            await self.store.delete_deployment(name)
        return released


__all__ = ["Change", "CommitError", "Commits", "Committed", "Propose", "refused"]
