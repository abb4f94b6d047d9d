"""Splitter transport. The solver lands with the splitter issue; until then
Solve and ProfileModel answer UNIMPLEMENTED. It needs nothing but itself, so
it is ready as soon as it listens."""

from __future__ import annotations

import grpc

from resplit.rpc.errors import not_yet
from resplit.v1 import splitter_pb2, splitter_pb2_grpc

from .config import SplitterSettings

SOLVER = "the splitter issue (exact split + placement solver)"


class SplitterServicer(splitter_pb2_grpc.SplitterServiceServicer):
    async def Solve(self, request, context):
        await not_yet(context, "SplitterService.Solve", SOLVER)

    async def ProfileModel(self, request, context):
        await not_yet(context, "SplitterService.ProfileModel", SOLVER)


class SplitterCore:
    name = "splitter"
    service_names = [splitter_pb2.DESCRIPTOR.services_by_name["SplitterService"].full_name]

    def __init__(self, settings: SplitterSettings) -> None:
        self.settings = settings

    def register(self, server: grpc.aio.Server) -> None:
        splitter_pb2_grpc.add_SplitterServiceServicer_to_server(SplitterServicer(), server)

    async def start(self) -> None:
        return None

    async def check_ready(self) -> tuple[bool, str]:
        return True, "solver ready (no dependencies)"

    async def stop(self) -> None:
        return None
