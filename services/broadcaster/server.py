"""Broadcaster transport. Rollouts land with the orchestrator/broadcaster
issue; until then they answer UNIMPLEMENTED. Ready while Redis answers."""

from __future__ import annotations

import grpc

from resplit.rpc.errors import not_yet
from resplit.state import StateStore
from resplit.v1 import broadcaster_pb2, broadcaster_pb2_grpc

from .config import BroadcasterSettings

ROLLOUT = "the orchestrator/broadcaster issue (two-phase rollout)"


class BroadcasterServicer(broadcaster_pb2_grpc.BroadcasterServiceServicer):
    async def Rollout(self, request, context):
        await not_yet(context, "BroadcasterService.Rollout", ROLLOUT)

    async def GetRollout(self, request, context):
        await not_yet(context, "BroadcasterService.GetRollout", ROLLOUT)


class BroadcasterCore:
    name = "broadcaster"
    service_names = [broadcaster_pb2.DESCRIPTOR.services_by_name["BroadcasterService"].full_name]

    def __init__(self, settings: BroadcasterSettings) -> None:
        self.store = StateStore(settings.redis_url)

    def register(self, server: grpc.aio.Server) -> None:
        broadcaster_pb2_grpc.add_BroadcasterServiceServicer_to_server(BroadcasterServicer(), server)

    async def start(self) -> None:
        return None

    async def check_ready(self) -> tuple[bool, str]:
        return await self.store.ping()

    async def stop(self) -> None:
        await self.store.close()
