"""Worker transport: the WorkerService servicer and its wiring.

Ping, GetStatus and ProbeBandwidth are real. The data plane (Forward,
LoadSegment, CommitEpoch, ReleaseSegment, Export/ImportSession) answers
UNIMPLEMENTED until the data-plane issue lands. Readiness: SERVING once the
worker has registered; after that it stays SERVING through Redis outages,
because the data plane never waits on the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc

from resplit.rpc.errors import not_yet
from resplit.state import StateStore
from resplit.v1 import worker_pb2, worker_pb2_grpc

from .config import WorkerSettings
from .core.heartbeat import Heartbeat
from .core.identity import describe_node

DATA_PLANE = "the worker data-plane issue"
MIGRATION = "the orchestrator/broadcaster issue (live migration)"


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, worker: WorkerCore) -> None:
        self.worker = worker

    async def Forward(self, request_iterator: AsyncIterator[worker_pb2.ForwardRequest], context) -> None:
        await not_yet(context, "WorkerService.Forward", DATA_PLANE)

    async def LoadSegment(self, request, context):
        await not_yet(context, "WorkerService.LoadSegment", DATA_PLANE)

    async def CommitEpoch(self, request, context):
        await not_yet(context, "WorkerService.CommitEpoch", DATA_PLANE)

    async def ReleaseSegment(self, request, context):
        await not_yet(context, "WorkerService.ReleaseSegment", DATA_PLANE)

    async def ExportSession(self, request, context) -> None:
        await not_yet(context, "WorkerService.ExportSession", MIGRATION)

    async def ImportSession(self, request_iterator, context):
        await not_yet(context, "WorkerService.ImportSession", MIGRATION)

    async def GetStatus(self, request, context) -> worker_pb2.WorkerStatus:
        return worker_pb2.WorkerStatus(node=self.worker.node, sessions=0)

    async def Ping(self, request: worker_pb2.PingRequest, context) -> worker_pb2.PingResponse:
        return worker_pb2.PingResponse(payload=request.payload, node_id=self.worker.node.node_id)

    async def ProbeBandwidth(self, request_iterator, context) -> worker_pb2.ProbeResult:
        total, first = 0, None
        async for chunk in request_iterator:
            first = first if first is not None else time.perf_counter()
            total += len(chunk.data)
        seconds = 0.0 if first is None else time.perf_counter() - first
        return worker_pb2.ProbeResult(bytes=total, seconds=seconds)


class WorkerCore:
    """The worker process: registry membership plus the servicer."""

    name = "worker"
    service_names = [worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name]

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.node = describe_node(
            settings.resolved_node_id,
            settings.address,
            settings.trusted,
            settings.memory_bytes,
            settings.device_profile,
            settings.network_mbps,
        )
        self.store = StateStore(settings.redis_url)
        node_id, ttl = self.node.node_id, settings.heartbeat_ttl_s
        self.heartbeat = Heartbeat(
            register=lambda: self.store.register_node(self.node, ttl),
            beat=lambda: self.store.heartbeat(node_id, ttl),
            interval_s=settings.heartbeat_interval_s,
        )
        self._task: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> None:
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(self), server)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.heartbeat.run())

    async def check_ready(self) -> tuple[bool, str]:
        if self.heartbeat.registered:
            return True, f"registered as {self.node.node_id}"
        return False, f"not registered yet: {self.heartbeat.last_error or 'registering'}"

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.store.mark_down(self.node.node_id), 2.0)
        await self.store.close()
