"""Worker transport: the WorkerService servicer and its wiring.

The data plane (Forward) lives in forward.py, live migration in
migration.py; this file wires segment loading, epochs, status and link
probes.
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
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import torch
from prometheus_client import Counter

from resplit.core.devices import lookup
from resplit.core.emulation import EmulatedDevice
from resplit.models import preload
from resplit.state import StateStore
from resplit.v1 import common_pb2, worker_pb2, worker_pb2_grpc

from .agent import Agent
from .config import WorkerSettings
from .core import errors
from .core.heartbeat import Heartbeat
from .core.hosting import Hosted, Hosting
from .core.identity import describe_node
from .core.loading import decode_path, huge_page_share, load_hosted, resolve_device
from .core.metrics import ComputeTimes
from .core.passive import PassiveLinks
from .core.privacy import check_trusted, ends_with_head
from .core.sessions import Limits, SessionTable
from .core.threads import StepThreads, dedicate_threads, runs_inline
from .forward import Channels, ForwardHandler, status_of
from .migration import Migrator

log = logging.getLogger(__name__)

STEPS = Counter("resplit_worker_steps_total", "Segment steps run, by the thread that ran them", ["thread"])
_ON_LOOP, _ON_COMPUTE = STEPS.labels("loop"), STEPS.labels("compute")


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, worker: WorkerCore) -> None:
        self.worker = worker

    async def Forward(self, request_iterator: AsyncIterator[worker_pb2.ForwardRequest], context):
        await self.worker.forward.run(request_iterator, context)

    async def LoadSegment(
        self, request: worker_pb2.LoadSegmentRequest, context
    ) -> worker_pb2.LoadSegmentResponse:
        worker = self.worker
        start = time.perf_counter()
        existing = worker.hosting.get(
            request.deployment, request.epoch, request.units.start, request.units.end
        )
        try:  # before anything is loaded or re-filed
            await self._check_trusted(request, existing)
        except errors.NotTrusted as exc:
            log.warning("LoadSegment refused: %s", exc)
            await context.abort(status_of(exc), str(exc))
        if existing is not None:  # never lower what an earlier load said
            existing.private_depth = max(existing.private_depth, request.private_depth)
        if existing is None:
            existing = worker.reuse(request)
        if existing is None:
            try:
                existing = await worker.on_loader(
                    lambda: load_hosted(
                        request.deployment,
                        request.epoch,
                        request.units.start,
                        request.units.end,
                        request.model_dir,
                        request.dtype,
                        request.compression,
                        worker.device,
                        worker.emulated,
                        worker.settings.lean_decode,
                        worker.settings.huge_pages,
                    )
                )
            except errors.WorkerError as exc:
                log.warning("LoadSegment refused: %s", exc)
                await context.abort(status_of(exc), str(exc))
            existing.private_depth = request.private_depth
            try:  # the model itself says where its head is; config.json may have been unclear
                check_trusted(
                    worker.settings.trusted,
                    request.deployment,
                    existing.start,
                    existing.end,
                    existing.private_depth,
                    existing.segment.has_head,
                )
            except errors.NotTrusted as exc:
                log.warning("LoadSegment refused: %s", exc)
                await context.abort(status_of(exc), str(exc))
            worker.hosting.add(existing)
            log.info(
                "loaded %s epoch %d units [%d, %d): %.1f MB (%s); decode steps %s",
                request.deployment,
                request.epoch,
                request.units.start,
                request.units.end,
                existing.param_bytes / 1e6,
                huge_page_share(existing.segment),
                decode_path(existing.segment),
            )
        worker.refresh_hosted()
        return worker_pb2.LoadSegmentResponse(
            param_bytes=existing.param_bytes,
            load_ms=(time.perf_counter() - start) * 1e3,
            device=str(existing.device),
        )

    async def _check_trusted(self, request: worker_pb2.LoadSegmentRequest, existing: Hosted | None) -> None:
        """Raise NotTrusted if this (untrusted) worker is asked for privacy-critical units."""
        worker = self.worker
        if worker.settings.trusted:
            return
        units, depth = request.units, request.private_depth
        if existing is not None:
            has_head, depth = existing.segment.has_head, max(depth, existing.private_depth)
        else:  # config.json only, on the loader thread; the weights are not touched
            has_head = await worker.on_loader(lambda: ends_with_head(request.model_dir, units.end))
        check_trusted(False, request.deployment, units.start, units.end, depth, has_head)

    async def CommitEpoch(
        self, request: worker_pb2.CommitEpochRequest, context
    ) -> worker_pb2.CommitEpochResponse:
        try:
            self.worker.hosting.commit(request.deployment, request.epoch)
        except errors.WorkerError as exc:
            await context.abort(status_of(exc), str(exc))
        hosting = self.worker.hosting
        return worker_pb2.CommitEpochResponse(
            active_epoch=hosting.active_epoch(request.deployment),
            latest_epoch=hosting.latest_epoch(request.deployment),
        )

    async def ReleaseSegment(self, request: worker_pb2.ReleaseSegmentRequest, context):
        try:
            freed = self.worker.hosting.release(
                request.deployment, request.epoch, request.units.start, request.units.end
            )
        except errors.WorkerError as exc:
            await context.abort(status_of(exc), str(exc))
        self.worker.refresh_hosted()
        return worker_pb2.ReleaseSegmentResponse(freed_bytes=freed)

    async def ExportSession(self, request: worker_pb2.ExportSessionRequest, context):
        try:
            async for chunk in self.worker.migrator.stream(request):
                yield chunk
        except errors.WorkerError as exc:
            await context.abort(status_of(exc), str(exc))

    async def GetStatus(self, request, context) -> worker_pb2.WorkerStatus:
        worker = self.worker
        segments = [
            worker_pb2.HostedSegment(
                deployment=h.deployment,
                epoch=h.epoch,
                units=common_pb2.UnitRange(start=h.start, end=h.end),
                param_bytes=h.param_bytes,
                sessions=h.sessions,
            )
            for h in worker.hosting
        ]
        return worker_pb2.WorkerStatus(node=worker.node, segments=segments, sessions=len(worker.sessions))

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
        # Emulated compute has nothing heavy to run; a thread pool only adds wake-up latency.
        threads = settings.torch_threads or (1 if settings.emulate else torch.get_num_threads())
        self.device = resolve_device(settings.device)
        self.hosting = Hosting()
        self.sessions = SessionTable(
            Limits(settings.max_sessions, settings.max_tokens, settings.idle_timeout_s)
        )
        self.channels = Channels(settings.max_message_bytes)
        self._compute = ThreadPoolExecutor(1, thread_name_prefix="compute")
        threads = dedicate_threads(self._compute, threads)
        self.step_threads = StepThreads(threads, settings.decode_threads or threads)
        # An emulated step sleeps for its compute time: never on the event loop.
        self.inline_decode = settings.inline_decode and not settings.emulate
        log.info(
            "compute thread: %d torch intra-op threads (%d for decode steps), 1 elsewhere; "
            "a lone session's single-threaded decode steps %s",
            threads,
            self.step_threads.decode,
            "on the event loop" if self.inline_decode else "on the compute thread too",
        )
        self.compute_times = ComputeTimes()
        self._agent: Agent | None = None
        self._agent_task: asyncio.Task[None] | None = None
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="loader")
        self.migrator = Migrator(
            self.sessions,
            self.channels,
            self.node.node_id,
            settings.chunk_bytes,
            settings.migration_timeout_s,
        )
        self.passive = PassiveLinks()
        self.forward = ForwardHandler(
            self.hosting,
            self.sessions,
            self.channels,
            self.on_compute,
            settings.chunk_bytes,
            self.migrator,
            trusted=settings.trusted,
            passive=self.passive,
            node_id=self.node.node_id if settings.local_tokens else "",
        )

    async def on_compute(self, fn, segment: str = "all", tokens: int = 0):
        """Run one step's torch work, timed where it runs (queueing excluded) for the node
        agent, per segment ("start-end"); ``tokens``: the step's new tokens in all.

        Steps run one at a time on the compute thread, which holds the process's one
        OpenMP team (see core/threads.py) and gives a step the intra-op threads its
        size calls for; a lone session's single-threaded decode step runs right here
        instead (:func:`runs_inline`), saving the two thread handoffs."""
        times, steps = self.compute_times, self.step_threads
        inline = self.inline_decode and runs_inline(
            steps, tokens, sessions=self.sessions.clients(), in_flight=times.in_flight
        )

        def timed():
            if not inline:
                steps.use(tokens)
            start = time.perf_counter()
            try:
                return fn()
            finally:
                times.record(segment, (time.perf_counter() - start) * 1000)

        (_ON_LOOP if inline else _ON_COMPUTE).inc()
        times.in_flight += 1
        try:
            if inline:
                return timed()
            return await asyncio.get_running_loop().run_in_executor(self._compute, timed)
        finally:
            times.in_flight -= 1

    def reuse(self, request: worker_pb2.LoadSegmentRequest) -> Hosted | None:
        """The same units of the same model loaded at another epoch, re-filed under this one:
        preparing an unchanged segment costs nothing and both epochs share the weights."""
        same = self.hosting.same_weights(
            request.deployment, request.units.start, request.units.end, request.model_dir, request.dtype
        )
        if same is None or request.epoch < 1:
            return None
        hosted = dataclasses.replace(
            same,
            epoch=request.epoch,
            compression=request.compression,
            sessions=0,
            private_depth=request.private_depth,
        )
        self.hosting.add(hosted)
        log.info(
            "%s epoch %d units [%d, %d): weights shared with epoch %d",
            request.deployment,
            request.epoch,
            hosted.start,
            hosted.end,
            same.epoch,
        )
        return hosted

    async def on_loader(self, fn):
        """Run segment loading on its own thread, so serving goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._loader, fn)

    def refresh_hosted(self) -> None:
        del self.node.hosted[:]
        for hosted in self.hosting:
            self.node.hosted.add(start=hosted.start, end=hosted.end)

    def register(self, server: grpc.aio.Server) -> None:
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(WorkerServicer(self), server)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.heartbeat.run())
        if self.settings.agent_interval_s > 0:
            self._agent = Agent(
                self.settings,
                self.node.node_id,
                self.store,
                self.compute_times,
                lambda: self._compute._work_queue.qsize(),
                self.emulated.utilization if self.emulated else None,
                passive=self.passive,
            )
            self._agent_task = asyncio.create_task(self._agent.run())

    async def check_ready(self) -> tuple[bool, str]:
        if self.heartbeat.registered:
            return True, f"registered as {self.node.node_id}"
        return False, f"not registered yet: {self.heartbeat.last_error or 'registering'}"

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
        await self.channels.close()
        self._compute.shutdown(wait=False, cancel_futures=True)
        self._loader.shutdown(wait=False, cancel_futures=True)
