"""Broadcaster transport (the paper's RB): Rollout runs the two-phase rollout
of ``core.rollout`` against the workers; GetRollout reads its record from
Redis. Ready while Redis answers."""

from __future__ import annotations

import grpc

from resplit.state import StateStore
from resplit.v1 import broadcaster_pb2, broadcaster_pb2_grpc

from .config import BroadcasterSettings
from .core.rollout import RolloutError, Rollouts, RolloutSettings
from .metrics import PrometheusObserver
from .workers import GrpcWorkers


def _code(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)


class BroadcasterServicer(broadcaster_pb2_grpc.BroadcasterServiceServicer):
    def __init__(self, rollouts: Rollouts) -> None:
        self.rollouts = rollouts

    async def Rollout(
        self, request: broadcaster_pb2.RolloutRequest, context
    ) -> broadcaster_pb2.RolloutResponse:
        try:
            return await self.rollouts.rollout(request)
        except RolloutError as exc:
            await context.abort(_code(exc.code), str(exc))

    async def GetRollout(
        self, request: broadcaster_pb2.GetRolloutRequest, context
    ) -> broadcaster_pb2.RolloutStatus:
        try:
            return await self.rollouts.get(request.deployment)
        except RolloutError as exc:
            await context.abort(_code(exc.code), str(exc))


class BroadcasterCore:
    name = "broadcaster"
    service_names = [broadcaster_pb2.DESCRIPTOR.services_by_name["BroadcasterService"].full_name]

    def __init__(self, settings: BroadcasterSettings) -> None:
        self.store = StateStore(settings.redis_url)
        self.rollouts = Rollouts(
            GrpcWorkers(),
            self.store,
            RolloutSettings(
                prepare_deadline_s=settings.prepare_deadline_s, drain_deadline_s=settings.drain_deadline_s
            ),
            PrometheusObserver(),
        )

    def register(self, server: grpc.aio.Server) -> None:
        broadcaster_pb2_grpc.add_BroadcasterServiceServicer_to_server(
            BroadcasterServicer(self.rollouts), server
        )

    async def start(self) -> None:
        return None

    async def check_ready(self) -> tuple[bool, str]:
        return await self.store.ping()

    async def stop(self) -> None:
        await self.rollouts.close()
        await self.store.close()
