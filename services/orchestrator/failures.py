"""ReportFailure: a session that lost a hop names the nodes of its route; the
orchestrator checks each one itself and re-plans at once when one is really gone.

Without this, a dead worker is noticed only when its heartbeat TTL runs out and the
deployment's next control cycle comes round (6-11 s with the defaults), longer than
a session waits. A report only starts a check (core/triage.py decides when one is
worth it): the node's own Ping, with a short deadline. A node that does not answer
is marked down in the registry (its heartbeat key is dropped: it reads DOWN until it
heartbeats again) and the control loop is woken, so the ``node_down`` trigger fires
in this moment. A node that answers is left alone, whoever reported it, unless it
no longer hosts what the reported deployment's plan gives it (it restarted and came
back before anyone saw it down): then the plan is rolled out again (repairs.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from resplit.rpc.channels import aio_channel
from resplit.state import StateStore
from resplit.v1 import common_pb2, orchestrator_pb2, worker_pb2, worker_pb2_grpc

from .core.triage import Action, Triage

log = logging.getLogger(__name__)

#: The most nodes one report may name (a route is a handful of hops).
MAX_REPORTED_NODES = 16

Verdict = orchestrator_pb2.FailureVerdict


class FailureChecks:
    def __init__(
        self,
        store: StateStore,
        check_timeout_s: float,
        wake: Callable[[], None],
        triage: Triage | None = None,
        repair: Callable[[str, int, str], bool] | None = None,
    ) -> None:
        self.store = store
        self.check_timeout_s = check_timeout_s
        #: Starts the control loop's next cycle of every deployment now (no-op without the loop).
        self.wake = wake
        self.triage = triage or Triage()
        #: Rolls the plan of (deployment, epoch) out again, for the reason given (repairs.py).
        self.repair = repair
        self._channels: dict[str, grpc.aio.Channel] = {}

    def admit(self, reporter: str) -> bool:
        return self.triage.admit(reporter)

    async def report(self, request: orchestrator_pb2.ReportFailureRequest) -> list[Verdict]:
        """One verdict per distinct reported node, in the order named."""
        nodes = {node.node_id: node for node in await self.store.list_nodes()}
        verdicts, found_down = [], False
        for node_id in dict.fromkeys(request.node_ids):
            node = nodes.get(node_id)
            if node is None:
                verdicts.append(Verdict(node_id=node_id, state=Verdict.STATE_UNKNOWN_NODE))
                continue
            action = self.triage.claim(node_id, down=node.state == common_pb2.NODE_STATE_DOWN)
            if action is not Action.VERIFY:
                state = Verdict.STATE_DOWN if action is Action.ALREADY_DOWN else Verdict.STATE_UP
                verdicts.append(Verdict(node_id=node_id, state=state, detail=action.value))
                continue
            alive, detail = False, ""
            try:
                alive, detail = await self._check(node)
                if not alive:
                    await self.store.mark_down(node_id)
                    found_down = True
                elif request.deployment:
                    detail = await self._check_hosting(node, request.deployment)
            finally:
                self.triage.settle(node_id, alive)
            log.log(
                logging.INFO if alive else logging.WARNING,
                "%s reported by %s (%s): %s",
                node_id,
                request.reporter or "an unnamed reporter",
                request.reason or "no reason given",
                "answers, left up" if alive else f"does not answer ({detail}): marked down, re-planning",
            )
            state = Verdict.STATE_UP if alive else Verdict.STATE_DOWN
            verdicts.append(Verdict(node_id=node_id, state=state, detail=detail or "answers"))
        if found_down:
            self.wake()
        return verdicts

    async def _check(self, node: common_pb2.Node) -> tuple[bool, str]:
        """(alive, why not): the node's own Ping within the check deadline."""
        stub = worker_pb2_grpc.WorkerServiceStub(self._channel(node.address))
        try:
            reply = await stub.Ping(worker_pb2.PingRequest(), timeout=self.check_timeout_s)
        except grpc.aio.AioRpcError as exc:
            return False, f"Ping {exc.code().name}: {exc.details()}"
        if reply.node_id and reply.node_id != node.node_id:
            return False, f"{node.address} answers as {reply.node_id!r}"
        return True, ""

    async def _check_hosting(self, node: common_pb2.Node, deployment: str) -> str:
        """A live node of ``deployment``'s plan that lacks a segment of it has the plan rolled
        out again; what was found ("" when nothing is missing)."""
        plan = await self.store.get_plan(deployment)
        ranges = [s.units for s in plan.segments if s.node_id == node.node_id] if plan else []
        if plan is None or not ranges or self.repair is None:
            return ""
        stub = worker_pb2_grpc.WorkerServiceStub(self._channel(node.address))
        try:
            status = await stub.GetStatus(worker_pb2.GetStatusRequest(), timeout=self.check_timeout_s)
        except grpc.aio.AioRpcError:
            return ""  # it answered its Ping a moment ago: the next report checks again
        hosted = {
            (h.units.start, h.units.end)
            for h in status.segments
            if h.deployment == deployment and h.epoch == plan.epoch
        }
        missing = [f"[{r.start}, {r.end})" for r in ranges if (r.start, r.end) not in hosted]
        if not missing:
            return ""
        why = f"{node.node_id} answers but does not host units {', '.join(missing)} of epoch {plan.epoch}"
        started = self.repair(deployment, plan.epoch, why)
        doing = "rolling the plan out again" if started else "a re-roll is running"
        log.warning("%s: %s; %s", deployment, why, doing)
        return f"up, without units {', '.join(missing)} of epoch {plan.epoch}: rolled out again"

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = aio_channel(address)
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
