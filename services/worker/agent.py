"""The node agent: this worker's metrics and its outgoing links, into Redis.

Why in the worker and why straight to Redis: the agent measures the node it
runs in (its cgroup, its network namespace), and links are probed from the
sending side so a shaped egress is what gets measured. It runs as its own
asyncio task with timeouts on every call; a slow or missing Redis or peer
delays the next report, never a Forward step.

Links are also measured passively: the bandwidth of the real activation
transfers to the next hops (core/passive.py) feeds the same estimates.
Probing is rate-limited twice: a link is probed at most once per
``probe_interval_s`` with ``probe_bytes``, and one cycle sends at most
``probe_budget_bytes`` in all (peers wait their turn, oldest first).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc

from resplit.core.cancel import raise_if_cancelling
from resplit.core.smoothing import LinkEstimator
from resplit.rpc.channels import aio_channel
from resplit.state import StateStore
from resplit.v1 import common_pb2, worker_pb2, worker_pb2_grpc

from .config import WorkerSettings
from .core.latency import FirstHopLatency
from .core.metrics import ComputeTimes, CpuSampler, Gpu, collect, segment_load
from .core.passive import PassiveLinks
from .core.probing import probe_mbps

log = logging.getLogger(__name__)


def node_utilization_of(report: common_pb2.NodeMetrics) -> float:
    """The node's utilization as the orchestrator reads it: the busier of CPU and GPU."""
    return max(report.cpu_utilization, report.gpu_utilization)


CHUNK = 64 * 1024
CALL_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 2.0  # an RTT above this is no link to route over; do not hold the cycle longer


class Agent:
    """Periodic NodeMetrics and Link reports for one worker."""

    def __init__(
        self,
        settings: WorkerSettings,
        node_id: str,
        store: StateStore,
        compute: ComputeTimes,
        queue_depth: Callable[[], int],
        utilization: Callable[[], float] | None = None,
        passive: PassiveLinks | None = None,
        kv_reserved: Callable[[], int] | None = None,
        latency: FirstHopLatency | None = None,
        segment_kv_tokens: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.settings = settings
        self.node_id = node_id
        self.store = store
        self.compute = compute
        self.queue_depth = queue_depth
        #: Tokens of KV cache the open sessions have reserved (the budget is a setting).
        self.kv_reserved = kv_reserved
        #: The first hop's TTFT / TPOT / request samples, written to Redis each cycle.
        self.latency = latency or FirstHopLatency()
        #: KV tokens of the live sessions per hosted segment (what a plan change moves).
        self.segment_kv_tokens = segment_kv_tokens
        #: An emulated device's utilization, reported as the node's (its CPU is idle).
        self.utilization = utilization
        #: Real activation transfers to the next hops, drained into the link estimates each cycle.
        self.passive = passive or PassiveLinks()
        self.cpu = CpuSampler(settings.cpu_source)
        self.gpu = Gpu.open()
        self.bandwidth: dict[str, LinkEstimator] = {}
        self.rtt: dict[str, LinkEstimator] = {}
        self.last_probe: dict[str, float] = {}
        self.links: dict[str, common_pb2.Link] = {}  # peer -> latest estimate of the link to it
        self.probe_bytes_sent = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        log.info("node agent: cpu from %s; gpu: %s", self.cpu.reason, self.gpu.reason or "NVML GPU 0")

    async def run(self) -> None:
        while True:
            start = time.monotonic()
            try:
                await self.cycle()
            except Exception as exc:  # Redis or a peer away: report next cycle
                raise_if_cancelling(exc)  # unless it is a cancel in disguise (resplit/core/cancel.py)
                log.warning("node agent cycle failed: %s", exc)
            await asyncio.sleep(max(self.settings.agent_interval_s - (time.monotonic() - start), 0.05))

    async def cycle(self) -> None:
        report = collect(self.node_id, self.cpu, self.gpu, self.compute, self.queue_depth)
        busy = self.compute.drain_busy()
        if self.utilization is not None:
            report.cpu_utilization = self.utilization()
            own = sum(busy.values())  # an emulated device is busy exactly while its steps run
        else:
            own = self.cpu.own()
        report.segment_load.update(segment_load(busy, min(own, node_utilization_of(report))))
        if self.kv_reserved is not None:
            report.kv_reserved_tokens = self.kv_reserved()
        report.kv_budget_tokens = self.settings.kv_budget_tokens
        if self.segment_kv_tokens is not None:
            report.segment_kv_tokens.update(self.segment_kv_tokens())
        retention = self.settings.metrics_retention_s
        await asyncio.wait_for(self.store.put_metrics(report, retention), CALL_TIMEOUT_S)
        samples = [(x.deployment, x.signal, x.ms, x.timestamp) for x in self.latency.drain()]
        await asyncio.wait_for(self.store.put_first_hop_latency(samples, retention), CALL_TIMEOUT_S)
        await self.passive_links()
        if self.settings.probe_interval_s > 0:
            await self.probe_peers()

    async def passive_links(self) -> None:
        """Fold the bandwidth of real activation transfers into the link estimates."""
        rates = self.passive.drain()
        for peer, mbps in rates.items():
            bw = self.bandwidth.setdefault(peer, LinkEstimator()).update(mbps)
            rtt = self.links[peer].rtt_ms if peer in self.links else 0.0
            self.links[peer] = common_pb2.Link(
                src=self.node_id, dst=peer, bandwidth_mbps=bw, rtt_ms=rtt, timestamp=time.time()
            )
        if rates:
            put = self.store.put_links(
                self.node_id, list(self.links.values()), self.settings.metrics_retention_s
            )
            await asyncio.wait_for(put, CALL_TIMEOUT_S)

    async def probe_peers(self) -> None:
        nodes = await asyncio.wait_for(self.store.list_nodes(include_down=False), CALL_TIMEOUT_S)
        now = time.monotonic()
        due = [
            n
            for n in nodes
            if n.node_id != self.node_id
            # 0.9: a link due a hair after this cycle's start is probed now, not a whole cycle late
            and now - self.last_probe.get(n.node_id, -1e9) >= self.settings.probe_interval_s * 0.9
        ]
        due.sort(key=lambda n: self.last_probe.get(n.node_id, -1e9))
        budget = self.settings.probe_budget_bytes
        fresh = []
        for peer in due:
            if budget < self.settings.probe_bytes:
                break
            budget -= self.settings.probe_bytes
            self.last_probe[peer.node_id] = now
            try:
                fresh.append(await self.probe(peer))
            except (grpc.RpcError, TimeoutError, ValueError) as exc:
                log.info("probe of %s failed: %s", peer.node_id, exc)
        await self._forget_gone({n.node_id: n.address for n in nodes})
        if fresh:
            for link in fresh:
                self.links[link.dst] = link
            put = self.store.put_links(
                self.node_id, list(self.links.values()), self.settings.metrics_retention_s
            )
            await asyncio.wait_for(put, CALL_TIMEOUT_S)

    async def _forget_gone(self, alive: dict[str, str]) -> None:
        """Drop the links, estimators and channels of peers that left the registry."""
        for gone in (set(self.links) | set(self.last_probe)) - set(alive):
            for table in (self.links, self.last_probe, self.bandwidth, self.rtt):
                table.pop(gone, None)
        for address in set(self._channels) - set(alive.values()):
            await self._channels.pop(address).close()

    def _stub(self, address: str) -> worker_pb2_grpc.WorkerServiceStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = aio_channel(address, self.settings.max_message_bytes)
        return worker_pb2_grpc.WorkerServiceStub(channel)

    async def probe(self, peer: common_pb2.Node) -> common_pb2.Link:
        """RTT by Ping, bandwidth by a timed transfer of ``probe_bytes`` (sender side)."""
        stub = self._stub(peer.address)
        t0 = time.perf_counter()
        await stub.Ping(worker_pb2.PingRequest(payload=b"x", sent_at=time.time()), timeout=PING_TIMEOUT_S)
        rtt_s = time.perf_counter() - t0
        size = self.settings.probe_bytes
        block = b"\0" * CHUNK

        def chunks():
            left = size
            while left > 0:
                yield worker_pb2.ProbeChunk(data=block[: min(CHUNK, left)])
                left -= CHUNK

        t0 = time.perf_counter()
        result = await stub.ProbeBandwidth(chunks(), timeout=CALL_TIMEOUT_S * 4)
        elapsed = time.perf_counter() - t0
        self.probe_bytes_sent += int(result.bytes)
        mbps = probe_mbps(int(result.bytes), elapsed, rtt_s)  # ValueError: the peer got nothing
        bw = self.bandwidth.setdefault(peer.node_id, LinkEstimator()).update(mbps)
        rtt = self.rtt.setdefault(peer.node_id, LinkEstimator()).update(rtt_s * 1000)
        return common_pb2.Link(
            src=self.node_id, dst=peer.node_id, bandwidth_mbps=bw, rtt_ms=rtt, timestamp=time.time()
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
