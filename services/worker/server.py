"""The worker service: the WorkerService servicer (it only delegates) and the process wiring.

The data plane's streams live in transport.py (the step itself in
core/step.py), segment loading in segments.py, where a step runs in
compute.py, live migration in migration.py, every status in statuses.py.
Readiness: SERVING once the worker has registered; after that it stays
SERVING through Redis outages, because the data plane never waits on the
control plane. Torch work runs on one compute thread (segments) and one
loader thread (prepare), so the event loop keeps serving every stream; only a
lone session's single-threaded decode step runs on the loop itself
(core/threads.py, ``runs_inline``), as nothing else waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc
import torch
from prometheus_client import Gauge

from resplit.core.devices import lookup
from resplit.core.emulation import EmulatedDevice
from resplit.kernels.native import describe as decode_kernels
from resplit.models import preload
from resplit.state import StateStore
from resplit.v1 import common_pb2, worker_pb2, worker_pb2_grpc

from .admission import SessionAdmission
from .agent import Agent
from .compute import Compute
from .config import WorkerSettings
from .core import errors
from .core.heartbeat import Heartbeat
from .core.hosting import Hosting
from .core.identity import describe_node
from .core.loading import resolve_device
from .core.passive import PassiveLinks
from .core.sessions import Limits, SessionTable
from .core.waiting import WaitingRoom
from .migration import Migrator
from .segments import Segments
from .statuses import status_of
from .streams import Channels
from .transport import Forwarding

log = logging.getLogger(__name__)
KV_RESERVED = Gauge(
    "resplit_worker_kv_reserved_tokens", "Tokens of KV cache the open sessions have reserved in the budget"
)
KV_BUDGET = Gauge("resplit_worker_kv_budget_tokens", "This worker's KV budget in tokens (0: none)")


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    """Each RPC handed to the part of the worker that does it; a refusal becomes its status."""

    def __init__(self, worker: WorkerService) -> None:
        self.worker = worker

    async def Forward(self, request_iterator: AsyncIterator[worker_pb2.ForwardRequest], context):
        await self.worker.forwarding.run(request_iterator, context)

    async def Lane(self, request_iterator: AsyncIterator[worker_pb2.LaneMessage], context):
        return await self.worker.forwarding.receive_lane(request_iterator)

    async def LoadSegment(
        self, request: worker_pb2.LoadSegmentRequest, context
    ) -> worker_pb2.LoadSegmentResponse:
        try:
            return await self.worker.segments.load(request)
        except errors.WorkerError as exc:
            log.warning("LoadSegment refused: %s", exc)
            await context.abort(status_of(exc), str(exc))

    async def CommitEpoch(
        self, request: worker_pb2.CommitEpochRequest, context
    ) -> worker_pb2.CommitEpochResponse:
        hosting = self.worker.hosting
        try:
            hosting.commit(request.deployment, request.epoch, request.route)
        except errors.WorkerError as exc:
            await context.abort(status_of(exc), str(exc))
        return worker_pb2.CommitEpochResponse(
            active_epoch=hosting.active_epoch(request.deployment),
            latest_epoch=hosting.latest_epoch(request.deployment),
        )

    async def ReleaseSegment(self, request: worker_pb2.ReleaseSegmentRequest, context):
        try:
            return worker_pb2.ReleaseSegmentResponse(freed_bytes=self.worker.segments.release(request))
        except errors.WorkerError as exc:
            await context.abort(status_of(exc), str(exc))

    async def ExportSession(self, request: worker_pb2.ExportSessionRequest, context):
        try:
            async for chunk in self.worker.migrator.stream(request):
                yield chunk
        except errors.WorkerError as exc:
            await context.abort(status_of(exc), str(exc))

    async def GetStatus(self, request, context) -> worker_pb2.WorkerStatus:
        return self.worker.status()

    async def Ping(self, request: worker_pb2.PingRequest, context) -> worker_pb2.PingResponse:
        return worker_pb2.PingResponse(payload=request.payload, node_id=self.worker.node.node_id)

    async def ProbeBandwidth(self, request_iterator, context) -> worker_pb2.ProbeResult:
        total, first = 0, None
        async for chunk in request_iterator:
            first = first if first is not None else time.perf_counter()
            total += len(chunk.data)
        seconds = 0.0 if first is None else time.perf_counter() - first
        return worker_pb2.ProbeResult(bytes=total, seconds=seconds)


class WorkerService:
    """The worker process: registry membership, the node agent and the servicer's parts."""

    name = "worker"
    service_names = [worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name]

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        emulated = lookup(settings.emulate) if settings.emulate else None
        #: --emulate: segments wait what this device would take instead of computing.
        self.emulated = EmulatedDevice(emulated, settings.emulate_load_file) if emulated else None
        self.node = describe_node(
            settings.resolved_node_id,
            settings.address,
            settings.trusted,
            settings.memory_bytes or (emulated.memory_bytes if emulated else 0),
            emulated.name if emulated else settings.device_profile,
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
        # transformers before SERVING: a worker that is up is idle, and its first load or
        # its CPU reports do not carry a one-off import of several seconds.
        preload()
        self.hosting = Hosting()
        self.sessions = SessionTable(
            Limits(
                settings.max_sessions,
                settings.max_tokens,
                settings.idle_timeout_s,
                settings.kv_budget_tokens,
                settings.retry_after_ms,
            )
        )
        KV_RESERVED.set_function(lambda: self.sessions.reserved)
        KV_BUDGET.set(settings.kv_budget_tokens)
        self.channels = Channels(settings.max_message_bytes)
        # Emulated compute has nothing heavy to run; a thread pool only adds wake-up latency.
        # An emulated step sleeps for its compute time: never on the event loop.
        self.compute = Compute(
            settings.torch_threads or (1 if settings.emulate else torch.get_num_threads()),
            settings.decode_threads,
            settings.inline_decode and not settings.emulate,
            self.sessions,
        )
        log.info(
            "compute thread: %d torch intra-op threads (%d for decode steps), 1 elsewhere; "
            "a lone session's single-threaded decode steps %s; decode projections on %s kernels",
            self.compute.threads,
            self.compute.step_threads.decode,
            "on the event loop" if self.compute.inline_decode else "on the compute thread too",
            decode_kernels(),
        )
        self.segments = Segments(
            self.hosting, settings, resolve_device(settings.device), self.emulated, self.refresh_hosted
        )
        self._agent: Agent | None = None
        self._agent_task: asyncio.Task[None] | None = None
        self.migrator = Migrator(
            self.sessions,
            self.channels,
            self.node.node_id,
            settings.chunk_bytes,
            settings.migration_timeout_s,
        )
        self.passive = PassiveLinks()
        self.forwarding = Forwarding(
            self.hosting,
            self.sessions,
            self.channels,
            self.compute,
            settings.chunk_bytes,
            self.migrator,
            trusted=settings.trusted,
            passive=self.passive,
            node=self.node,
            max_batch=settings.max_batch,
            prefill_chunk_tokens=settings.prefill_chunk_tokens,
            batch_gather_ms=settings.batch_gather_ms,
            max_queued_requests=settings.max_queued_requests,
            stalled_write_timeout_s=settings.stalled_write_timeout_s,
        )

    def status(self) -> worker_pb2.WorkerStatus:
        """What this worker hosts and serves right now."""
        segments = [
            worker_pb2.HostedSegment(
                deployment=h.deployment,
                epoch=h.epoch,
                units=common_pb2.UnitRange(start=h.start, end=h.end),
                param_bytes=h.param_bytes,
                sessions=h.sessions,
            )
            for h in self.hosting
        ]
        return worker_pb2.WorkerStatus(node=self.node, segments=segments, sessions=len(self.sessions))

    def refresh_hosted(self) -> None:
        del self.node.hosted[:]
        for hosted in self.hosting:
            self.node.hosted.add(start=hosted.start, end=hosted.end)

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """A new session over --max-sessions waits for a slot or is refused, before its stream
        handler runs."""
        s = self.settings
        room = WaitingRoom(self.sessions, s.max_waiting_sessions, s.admission_wait_ms / 1000)
        return [SessionAdmission(self.sessions, room)]

    def register(self, server: grpc.aio.Server) -> None:
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(self), server)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.heartbeat.run())
        if self.settings.agent_interval_s > 0:
            self._agent = Agent(
                self.settings,
                self.node.node_id,
                self.store,
                self.compute.times,
                self.compute.queued,
                self.emulated.utilization if self.emulated else None,
                passive=self.passive,
                kv_reserved=lambda: self.sessions.reserved,
                latency=self.forwarding.latency,
                segment_kv_tokens=self.sessions.segment_kv_tokens,
            )
            self._agent_task = asyncio.create_task(self._agent.run())

    async def check_ready(self) -> tuple[bool, str]:
        if self.heartbeat.registered:
            return True, f"registered as {self.node.node_id}"
        return False, f"not registered yet: {self.heartbeat.last_error or 'registering'}"

    async def drain(self) -> None:
        """Shutdown began: once the sessions here have ended, end the lanes (transport.py)."""
        await self.forwarding.end_lanes_when_idle()

    async def stop(self) -> None:
        if self._agent_task is not None:
            self._agent_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._agent_task
        if self._agent is not None:
            await self._agent.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.store.mark_down(self.node.node_id), 2.0)
        await self.store.close()
        self.forwarding.lanes.close()
        await self.channels.close()
        self.compute.close()
        self.segments.close()
