"""ReportFailure: a session that lost a hop names the nodes of its route; the
orchestrator checks each one itself and re-plans at once when one is really gone.

Without this, a dead worker is noticed only when its heartbeat TTL runs out and the
deployment's next control cycle comes round (6-11 s with the defaults), longer than
a session waits. A report only starts a check (core/triage.py decides when one is
worth it): the node's own Ping, with a short deadline. A node that does not answer
is marked down in the registry (its heartbeat key is dropped: it reads DOWN until it
heartbeats again) and the control loop is woken, so the ``node_down`` trigger fires
in this moment. A node that answers is left alone, whoever reported it.
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
    ) -> None:
        self.store = store
        self.check_timeout_s = check_timeout_s
        #: Starts the control loop's next cycle of every deployment now (no-op without the loop).
        self.wake = wake
        self.triage = triage or Triage()
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
        channel = self._channels.get(node.address)
        if channel is None:
            channel = self._channels[node.address] = aio_channel(node.address)
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        try:
            reply = await stub.Ping(worker_pb2.PingRequest(), timeout=self.check_timeout_s)
        except grpc.aio.AioRpcError as exc:
            return False, f"Ping {exc.code().name}: {exc.details()}"
        if reply.node_id and reply.node_id != node.node_id:
            return False, f"{node.address} answers as {reply.node_id!r}"
        return True, ""

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
