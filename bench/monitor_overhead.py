"""Cost of monitoring: one monitoring cycle for 4, 16 and 64 nodes, and the
bandwidth the link probes consume.

Cycle time: a Redis of its own (free loopback port) is filled with N fake
nodes (registry entries with live heartbeats, one NodeMetrics each, a full
mesh of N(N-1) link estimates and a latency EWMA); then the monitor's own
``MonitorService.cycle()`` (list nodes, latest metrics, links, latency, assemble
E(t), append it to the E(t) series) runs ``--cycles`` times. The paper claims
<= 10 ms per cycle.

Probe bandwidth: from the worker defaults (probe size, per-link interval,
per-cycle budget) per node's egress for each N, and measured with two real
workers on loopback probing each other for ``--probe-seconds``.

Usage: python bench/monitor_overhead.py [--cycles 50] [--probe-seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis
from rich.console import Console
from rich.table import Table

from resplit.launcher.processes import free_port
from resplit.rpc.probe import grpc_health
from resplit.state import StateStore, keys
from resplit.v1 import common_pb2
from services.monitor.config import MonitorSettings
from services.monitor.server import MonitorService
from services.worker.config import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent


def start_redis() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.RedisError:
            time.sleep(0.05)
    client.close()
    return proc, port


async def fill(store: StateStore, n: int) -> int:
    await store.redis.flushdb()
    ids = [f"node-{i}" for i in range(n)]
    for i, node_id in enumerate(ids):
        node = common_pb2.Node(node_id=node_id, address=f"127.0.0.1:{50000 + i}", role="worker")
        node.capacity.cpu_cores = 8
        await store.register_node(node, ttl_s=600)
        report = common_pb2.NodeMetrics(
            node_id=node_id, timestamp=time.time(), cpu_utilization=0.3, rss_bytes=1
        )
        report.segment_compute_ms["0-4"] = 3.0
        await store.put_metrics(report, retention_s=600)
    links = 0
    for src in ids:
        out = [
            common_pb2.Link(src=src, dst=dst, bandwidth_mbps=100, rtt_ms=1, timestamp=time.time())
            for dst in ids
            if dst != src
        ]
        await store.put_links(src, out, retention_s=600)
        links += len(out)
    await store.put_latency("bench", 12.0, 12.0, retention_s=600)
    return links


async def cycle_times(url: str, sizes: list[int], cycles: int) -> list[tuple[int, int, float, float, float]]:
    settings = MonitorSettings(redis_url=url, stale_after_s=0)
    core = MonitorService(settings)
    rows = []
    try:
        for n in sizes:
            links = await fill(core.store, n)
            await core.cycle()  # warm the connection and the scripts
            times = []
            for _ in range(cycles):
                start = time.perf_counter()
                env = await core.cycle()
                times.append((time.perf_counter() - start) * 1000)
            assert len(env.nodes) == n and len(env.links) == links
            times.sort()
            rows.append((n, links, statistics.median(times), times[int(0.95 * (len(times) - 1))], times[-1]))
    finally:
        await core.stop()
    return rows


def probe_budget_mbps(n: int, w: WorkerSettings) -> float:
    """Probe Mbit/s one node sends with the worker defaults and n-1 peers."""
    wanted = (n - 1) * w.probe_bytes / w.probe_interval_s
    capped = w.probe_budget_bytes / w.agent_interval_s
    return min(wanted, capped) * 8 / 1e6


def measured_probe_mbps(port: int, seconds: float, probe_bytes: int, interval_s: float) -> float:
    """Two real workers probing each other on loopback: Mbit/s of probes one node sends."""
    url = f"redis://127.0.0.1:{port}/0"
    redis.Redis(port=port).flushdb()
    procs = []
    try:
        for i in range(2):
            grpc_port = free_port()
            procs.append((grpc_port, subprocess.Popen(
                [sys.executable, "-m", "services.worker", "--port", str(grpc_port), "--http-port",
                 str(free_port()), "--redis-url", url, "--node-id", f"probe-{i}", "--torch-threads", "1",
                 "--agent-interval-s", "0.5", "--probe-interval-s", str(interval_s),
                 "--probe-bytes", str(probe_bytes), "--insecure"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )))  # fmt: skip
        deadline = time.monotonic() + 60
        while not all(grpc_health(f"127.0.0.1:{p}", timeout_s=1) == "SERVING" for p, _ in procs):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not come up")
            time.sleep(0.2)
        client = redis.Redis(port=port)
        series = keys.link_series("probe-0", "probe-1")
        start_count, start = client.xlen(series), time.monotonic()
        time.sleep(seconds)
        probes = client.xlen(series) - start_count
        elapsed = time.monotonic() - start
        client.close()
    finally:
        for _, proc in procs:
            proc.kill()
            proc.wait(10)
    return probes * probe_bytes * 8 / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--probe-seconds", type=float, default=8.0)
    args = parser.parse_args()
    console = Console()
    proc, port = start_redis()
    worker = WorkerSettings()
    try:
        rows = asyncio.run(cycle_times(f"redis://127.0.0.1:{port}/0", [4, 16, 64], args.cycles))
        table = Table(title=f"one monitoring cycle (median of {args.cycles}); paper: <= 10 ms")
        for column in ("nodes", "links", "median ms", "p95 ms", "max ms", "probe Mbit/s per node (defaults)"):
            table.add_column(column, justify="right")
        for n, links, median, p95, worst in rows:
            budget = probe_budget_mbps(n, worker)
            table.add_row(str(n), str(links), f"{median:.2f}", f"{p95:.2f}", f"{worst:.2f}", f"{budget:.2f}")
        console.print(table)
        console.print(
            f"worker defaults: {worker.probe_bytes // 1024} KiB per probe, one probe per link every "
            f"{worker.probe_interval_s:g} s, at most {worker.probe_budget_bytes // 1024} KiB per "
            f"{worker.agent_interval_s:g} s agent cycle"
        )
        measured = measured_probe_mbps(port, args.probe_seconds, worker.probe_bytes, 2.0)
        expected = worker.probe_bytes * 8 / 2.0 / 1e6
        console.print(
            f"measured: two workers, {worker.probe_bytes // 1024} KiB every 2 s per link: "
            f"{measured:.2f} Mbit/s of probes per node (expected {expected:.2f})"
        )
    finally:
        proc.kill()
        proc.wait(10)


if __name__ == "__main__":
    main()
