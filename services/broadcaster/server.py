"""Broadcaster transport (the paper's RB): Rollout runs the two-phase rollout
of ``core.rollout`` against the workers, Release frees a deployment's segments
on them (an undeploy); GetRollout reads the record from Redis. Ready while
Redis answers."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc

from resplit.state import StateStore
from resplit.v1 import broadcaster_pb2, broadcaster_pb2_grpc

from .config import BroadcasterSettings
from .core.rollout import RolloutError, Rollouts, RolloutSettings
from .metrics import PrometheusObserver
from .workers import GrpcWorkers

T = TypeVar("T")


def _code(name: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, name, grpc.StatusCode.UNKNOWN)


async def _answer(call: Awaitable[T], context: grpc.aio.ServicerContext) -> T:
    """``call``'s answer; a RolloutError becomes its status."""
    try:
        return await call
    except RolloutError as exc:
        await context.abort(_code(exc.code), str(exc))


class BroadcasterServicer(broadcaster_pb2_grpc.BroadcasterServiceServicer):
    def __init__(self, rollouts: Rollouts) -> None:
        self.rollouts = rollouts

    async def Rollout(
        self, request: broadcaster_pb2.RolloutRequest, context
    ) -> broadcaster_pb2.RolloutResponse:
        return await _answer(self.rollouts.rollout(request), context)

    async def Release(
        self, request: broadcaster_pb2.ReleaseRequest, context
    ) -> broadcaster_pb2.ReleaseResponse:
        return await _answer(self.rollouts.release(request.deployment), context)

    async def GetRollout(
        self, request: broadcaster_pb2.GetRolloutRequest, context
    ) -> broadcaster_pb2.RolloutStatus:
        return await _answer(self.rollouts.get(request.deployment), context)


class BroadcasterService:
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
