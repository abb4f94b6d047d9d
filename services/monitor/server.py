"""Monitor transport. ListNodes is real (the registry with heartbeat state);
the telemetry RPCs answer UNIMPLEMENTED until the monitor issue lands.
Ready while Redis answers."""

from __future__ import annotations

import grpc

from resplit.rpc.errors import not_yet
from resplit.state import StateStore
from resplit.v1 import monitor_pb2, monitor_pb2_grpc

from .config import MonitorSettings

TELEMETRY = "the monitor issue (node and link telemetry)"


class MonitorServicer(monitor_pb2_grpc.MonitorServiceServicer):
    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def ListNodes(
        self, request: monitor_pb2.ListNodesRequest, context
    ) -> monitor_pb2.ListNodesResponse:
        nodes = await self.store.list_nodes(include_down=request.include_down)
        return monitor_pb2.ListNodesResponse(nodes=nodes)

    async def GetEnvironment(self, request, context):
        await not_yet(context, "MonitorService.GetEnvironment", TELEMETRY)

    async def WatchEnvironment(self, request, context) -> None:
        await not_yet(context, "MonitorService.WatchEnvironment", TELEMETRY)

    async def ReportMetrics(self, request, context):
        await not_yet(context, "MonitorService.ReportMetrics", TELEMETRY)

    async def ReportLatency(self, request, context):
        await not_yet(context, "MonitorService.ReportLatency", TELEMETRY)


class MonitorCore:
    name = "monitor"
    service_names = [monitor_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name]

    def __init__(self, settings: MonitorSettings) -> None:
        self.store = StateStore(settings.redis_url)

    def register(self, server: grpc.aio.Server) -> None:
        monitor_pb2_grpc.add_MonitorServiceServicer_to_server(MonitorServicer(self.store), server)

    async def start(self) -> None:
        return None

    async def check_ready(self) -> tuple[bool, str]:
        return await self.store.ping()

    async def stop(self) -> None:
        await self.store.close()
