"""Monitor transport: E(t) from Redis, served and streamed.

Node agents (in the workers) write their metrics and link estimates to Redis
directly, so the data plane never waits on the monitor; ReportMetrics is the
same write for agents that cannot reach Redis. Each cycle the monitor
assembles E(t) (services.monitor.core.environment) and appends it to a
time series with retention. Ready while Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc

from resplit.core.cancel import raise_if_cancelling
from resplit.core.smoothing import Ewma
from resplit.state import StateStore
from resplit.state.keys import latency_field
from resplit.v1 import common_pb2, monitor_pb2, monitor_pb2_grpc

from .config import MonitorSettings
from .core.environment import SIGNALS, assemble, validate_latency, validate_metrics

log = logging.getLogger(__name__)
MIN_WATCH_INTERVAL_S = 0.05


class MonitorService:
    name = "monitor"
    service_names = [monitor_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name]

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.store = StateStore(settings.redis_url)
        self.latency: dict[tuple[str, str], Ewma] = {}
        self.last_cycle_ms = 0.0
        #: The first hops' samples are read from this stream id on (start: from now).
        self._first_hop_after = f"{int(time.time() * 1000)}-0"
        self._task: asyncio.Task[None] | None = None

    async def environment(self) -> common_pb2.Environment:
        """E(t) now, from Redis."""
        s = self.settings
        nodes = await self.store.list_nodes(include_down=True)
        metrics = await self.store.latest_metrics([n.node_id for n in nodes])
        links = await self.store.list_links([n.node_id for n in nodes], s.link_max_age_s)
        latency = await self.store.latency_ewma()
        return assemble(nodes, metrics, links, latency, time.time(), s.stale_after_s)

    async def cycle(self) -> common_pb2.Environment:
        """One monitoring cycle: assemble E(t) and append it to its series."""
        start = time.perf_counter()
        await self.fold_first_hops()
        env = await self.environment()
        await self.store.put_environment(env, self.settings.environment_keep)
        self.last_cycle_ms = (time.perf_counter() - start) * 1000
        return env

    async def add_latency(
        self, deployment: str, latency_ms: float, t: float, signal: str = "request"
    ) -> float:
        (value,) = await self.add_latencies([(deployment, signal, latency_ms, t)])
        return value

    async def add_latencies(self, samples: list[tuple[str, str, float, float]]) -> list[float]:
        """Fold (deployment, signal, ms, unix time) samples into their EWMAs and store them
        all in one Redis round trip (one each made the monitor's work grow with the rate)."""
        seeds: dict[str, float] | None = None
        rows, values = [], []
        for deployment, signal, ms, t in samples:
            ewma = self.latency.get((deployment, signal))
            if ewma is None:
                ewma = self.latency[(deployment, signal)] = Ewma(self.settings.latency_window_s)
                if seeds is None:
                    seeds = await self.store.latency_ewma()
                seed = seeds.get(latency_field(deployment, signal))
                if seed is not None:  # a restarted monitor continues the average it left in Redis
                    ewma.update(seed, t)
            value = ewma.update(ms, t)
            rows.append((deployment, signal, ms, value))
            values.append(value)
        await self.store.put_latencies(rows, self.settings.retention_s)
        return values

    async def fold_first_hops(self) -> None:
        """The first hops' TTFT / TPOT / request samples since the last cycle, into the EWMAs."""
        samples, self._first_hop_after = await self.store.first_hop_latency(self._first_hop_after)
        valid = [x for x in samples if x[1] in SIGNALS and not validate_latency(x[0], x[2])]
        if valid:
            await self.add_latencies(valid)

    async def _loop(self) -> None:
        while True:
            try:
                await self.cycle()
            except Exception as exc:  # Redis away: keep cycling, readiness reports it
                raise_if_cancelling(exc)  # unless it is a cancel in disguise (resplit/core/cancel.py)
                log.warning("monitoring cycle failed: %s", exc)
            await asyncio.sleep(self.settings.cycle_s)

    def register(self, server: grpc.aio.Server) -> None:
        monitor_pb2_grpc.add_MonitorServiceServicer_to_server(MonitorServicer(self), server)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def check_ready(self) -> tuple[bool, str]:
        return await self.store.ping()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.store.close()


class MonitorServicer(monitor_pb2_grpc.MonitorServiceServicer):
    def __init__(self, core: MonitorService) -> None:
        self.core = core

    async def ListNodes(
        self, request: monitor_pb2.ListNodesRequest, context
    ) -> monitor_pb2.ListNodesResponse:
        nodes = await self.core.store.list_nodes(include_down=request.include_down)
        return monitor_pb2.ListNodesResponse(nodes=nodes)

    async def GetEnvironment(self, request, context) -> common_pb2.Environment:
        return await self.core.environment()

    async def WatchEnvironment(self, request: monitor_pb2.WatchEnvironmentRequest, context):
        interval = request.interval_s or self.core.settings.cycle_s
        if interval < MIN_WATCH_INTERVAL_S or interval > 3600:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"interval_s must be within [{MIN_WATCH_INTERVAL_S}, 3600] (or 0 for the monitoring cycle), "
                f"got {request.interval_s}",
            )
        while True:
            yield await self.core.environment()
            await asyncio.sleep(interval)

    async def ReportMetrics(self, request: common_pb2.NodeMetrics, context) -> monitor_pb2.ReportAck:
        problem = validate_metrics(request)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if not request.timestamp:
            request.timestamp = time.time()
        await self.core.store.put_metrics(request, self.core.settings.retention_s)
        return monitor_pb2.ReportAck()

    async def ReportLatency(self, request: monitor_pb2.LatencySample, context) -> monitor_pb2.ReportAck:
        problem = validate_latency(request.deployment, request.latency_ms)
        signal = request.signal or "request"
        if not problem and signal not in SIGNALS:
            problem = f"signal must be one of {', '.join(SIGNALS)} (or empty: request), got {signal!r}"
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        t = request.timestamp or time.time()
        await self.core.add_latency(request.deployment, request.latency_ms, t, signal)
        return monitor_pb2.ReportAck()
