"""The monitor with real processes: agents report, links are probed, E(t) is served,
streamed and kept as time series; bad reports are refused; a SIGKILLed worker goes DOWN."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import redis
from support import wait_for

from resplit.launcher.processes import ServiceProcess
from resplit.rpc.channels import sync_channel
from resplit.state import keys
from resplit.v1 import common_pb2, monitor_pb2, monitor_pb2_grpc

pytestmark = pytest.mark.integration
CYCLE = "0.3"
TTL = 2.0
AGENT = ["--agent-interval-s", CYCLE, "--probe-interval-s", CYCLE, "--probe-bytes", "65536"]
BEAT = ["--heartbeat-ttl-s", str(TTL), "--heartbeat-interval-s", "0.4", "--torch-threads", "1"]
KV = [[], ["--kv-budget-tokens", "5000"]]  # mw-1 has a KV budget, mw-0 none


@pytest.fixture(scope="module")
def monitored(module_redis):
    procs = [ServiceProcess("monitor", module_redis.url, ["--cycle-s", CYCLE, "--stale-after-s", "3"])]
    procs += [
        ServiceProcess("worker", module_redis.url, ["--node-id", f"mw-{i}", *AGENT, *BEAT, *KV[i]])
        for i in range(2)
    ]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_health("SERVING", timeout=60)
        yield procs
    finally:
        for proc in procs:
            proc.kill()


def _env(address: str) -> common_pb2.Environment:
    with sync_channel(address) as channel:
        return monitor_pb2_grpc.MonitorServiceStub(channel).GetEnvironment(
            monitor_pb2.GetEnvironmentRequest(), timeout=5
        )


def test_environment_has_both_nodes_their_metrics_and_probed_links(monitored):
    monitor = monitored[0]

    def complete():
        env = _env(monitor.address)
        pairs = {(x.src, x.dst) for x in env.links}
        ok = {"mw-0", "mw-1"} <= {m.node_id for m in env.metrics} and {
            ("mw-0", "mw-1"),
            ("mw-1", "mw-0"),
        } <= pairs
        return env if ok else None

    env = wait_for(complete, 20, interval=0.2, what="metrics and links of both workers in E(t)")
    for report in env.metrics:
        if report.node_id.startswith("mw-"):
            assert 0.0 <= report.cpu_utilization <= 1.0
            assert report.rss_bytes > 10 << 20  # a Python process with torch loaded
            assert report.has_gpu is False or report.gpu_memory_used_bytes > 0
            assert time.time() - report.timestamp < 5
    for link in env.links:
        assert link.bandwidth_mbps > 1.0, link  # loopback: far above 1 Mbit/s
        assert 0.0 < link.rtt_ms < 1000.0, link


def test_metrics_links_and_environment_are_time_series_in_redis(monitored, module_redis):
    client = redis.Redis(port=module_redis.port)
    wait_for(lambda: client.xlen(keys.metrics_series("mw-0")) >= 3, 10, what="metric series")
    wait_for(lambda: client.xlen(keys.link_series("mw-0", "mw-1")) >= 2, 10, what="link series")
    wait_for(lambda: client.xlen(keys.environment_series()) >= 3, 10, what="E(t) series")
    client.close()


def test_report_metrics_and_latency_feed_e_t(monitored, module_redis):
    monitor = monitored[0]
    with sync_channel(monitor.address) as channel:
        stub = monitor_pb2_grpc.MonitorServiceStub(channel)
        report = common_pb2.NodeMetrics(node_id="mw-0", cpu_utilization=0.42, timestamp=time.time() + 60)
        stub.ReportMetrics(report, timeout=5)
        now = time.time()
        for i, ms in enumerate((100.0, 100.0, 200.0)):
            stub.ReportLatency(
                monitor_pb2.LatencySample(deployment="dep-m", latency_ms=ms, timestamp=now + i), timeout=5
            )
    env = _env(monitor.address)
    assert 100.0 < env.latency_ewma_ms["dep-m"] < 200.0  # EWMA, not the last sample
    # The agent overwrites the latest report each cycle; the series keeps this one.
    client = redis.Redis(port=module_redis.port)
    rows = client.xrange(keys.metrics_series("mw-0"))
    client.close()
    reports = [common_pb2.NodeMetrics.FromString(fields[b"m"]) for _, fields in rows]
    assert any(r.cpu_utilization == pytest.approx(0.42) for r in reports)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda s: s.ReportMetrics(common_pb2.NodeMetrics(), timeout=5), "node_id"),
        (
            lambda s: s.ReportMetrics(common_pb2.NodeMetrics(node_id="x", cpu_utilization=3), timeout=5),
            "cpu_utilization",
        ),
        (lambda s: s.ReportLatency(monitor_pb2.LatencySample(latency_ms=5), timeout=5), "deployment"),
        (
            lambda s: s.ReportLatency(monitor_pb2.LatencySample(deployment="d", latency_ms=-5), timeout=5),
            "latency_ms",
        ),
        (
            lambda s: next(s.WatchEnvironment(monitor_pb2.WatchEnvironmentRequest(interval_s=-1), timeout=5)),
            "interval_s",
        ),
    ],
)
def test_bad_input_is_invalid_argument(monitored, call, needle):
    with sync_channel(monitored[0].address) as channel, pytest.raises(grpc.RpcError) as info:
        call(monitor_pb2_grpc.MonitorServiceStub(channel))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()


def test_watch_environment_streams_snapshots(monitored):
    with sync_channel(monitored[0].address) as channel:
        stream = monitor_pb2_grpc.MonitorServiceStub(channel).WatchEnvironment(
            monitor_pb2.WatchEnvironmentRequest(interval_s=0.1), timeout=10
        )
        first, second = next(stream), next(stream)
        stream.cancel()
    assert second.timestamp > first.timestamp
    assert {"mw-0", "mw-1"} <= {n.node_id for n in second.nodes}


def test_a_sigkilled_worker_is_down_once_its_heartbeat_expires(monitored, module_redis, services):
    victim = ServiceProcess("worker", module_redis.url, ["--node-id", "mw-victim", *AGENT, *BEAT])
    services.append(victim.start())
    victim.wait_health("SERVING", timeout=60)
    monitor = monitored[0]

    def state():
        return {n.node_id: n.state for n in _env(monitor.address).nodes}.get("mw-victim")

    wait_for(lambda: state() == common_pb2.NODE_STATE_UP, 10, what="the victim UP")
    victim.kill()
    killed = time.monotonic()
    wait_for(lambda: state() == common_pb2.NODE_STATE_DOWN, TTL + 10, interval=0.05, what="the victim DOWN")
    took = time.monotonic() - killed
    # How long it took is a figure, not a property (the machine's load decides): printed only.
    print(f"SIGKILLed worker DOWN in E(t) after {took:.2f}s (heartbeat TTL {TTL}s)")
    env = _env(monitor.address)
    assert "mw-victim" not in {m.node_id for m in env.metrics}
    assert not [x for x in env.links if "mw-victim" in (x.src, x.dst)]


def _top(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    resplit = str(Path(sys.executable).parent / "resplit")
    return subprocess.run([resplit, "top", *args], capture_output=True, text=True, timeout=60, env=env)


def test_resplit_top_shows_nodes_links_and_latency(monitored):
    address = monitored[0].address
    wait_for(lambda: len(_env(address).links) >= 2, 20, what="links in E(t)")
    once = _top("--monitor", address, "--once")
    assert once.returncode == 0, once.stderr
    for needle in ("mw-0", "mw-1", "UP", "links", "Mbit/s", "latency", "kv tokens", "0/5000"):
        assert needle in once.stdout, (needle, once.stdout)
    budgets = {m.node_id: m.kv_budget_tokens for m in _env(address).metrics}
    assert budgets["mw-0"] == 0 and budgets["mw-1"] == 5000
    live = _top("--monitor", address, "--interval", "0.1", "--frames", "3")
    assert live.returncode == 0, live.stderr
    assert "mw-1" in live.stdout


def test_resplit_top_says_why_when_there_is_no_monitor(tmp_path):
    result = _top("--state-dir", str(tmp_path))
    assert result.returncode != 0
    assert "no --monitor given" in result.stdout + result.stderr


def test_sdk_latency_compute_time_and_passive_bandwidth_reach_e_t(tiny_models):
    """A real generation over two workers: the SDK reports its latency, each worker's
    agent reports the compute time of the segment it hosts and the bandwidth of the
    activations it really sent."""
    from support import LocalStack, spread

    from resplit.models import Checkpoint, num_units
    from resplit.sdk import AsyncClient, Client, Sampling

    agent = ["--torch-threads", "1", "--agent-interval-s", CYCLE, "--probe-interval-s", "0"]
    local = LocalStack(workers=2, worker_args=agent)
    monitor = None
    try:
        local.start()
        monitor = ServiceProcess("monitor", local.redis.url, ["--cycle-s", CYCLE]).start()
        monitor.wait_health("SERVING")
        model_dir = tiny_models["llama"]
        segments = spread(num_units(Checkpoint(model_dir).config), 2)
        local.deploy("mon-llama", model_dir, segments)
        with Client(local.orchestrator.address, monitor=monitor.address) as client:
            route = client.route("mon-llama")
            for _ in range(2):
                tokens = list(client.generate_ids([5, 6, 7], route, Sampling(max_new_tokens=6)))
                assert len(tokens) == 6
        env = wait_for(
            lambda: (e := _env(monitor.address)).latency_ewma_ms.get("mon-llama") and e, 10, 0.1, "latency"
        )
        assert 0 < env.latency_ewma_ms["mon-llama"] < 60_000

        async def generate_async() -> int:
            async with AsyncClient(local.orchestrator.address, monitor=monitor.address) as client:
                route = await client.route("mon-llama")
                return len([t async for t in client.generate_ids([5, 6], route, Sampling(max_new_tokens=4))])

        assert asyncio.run(generate_async()) == 4
        store = redis.Redis(port=local.redis.port)

        def series(signal: str) -> list[float]:
            rows = store.xrange(keys.latency_series("mon-llama"))
            return [float(f[b"ms"]) for _, f in rows if f.get(b"s", b"request").decode() == signal]

        samples = wait_for(
            lambda: len(series("request")) >= 3 and series("request"),
            10,
            0.1,
            what="three latency samples (sync, sync, async)",
        )
        assert len(samples) == 3 and all(ms > 0 for ms in samples)
        # The first hop saw the same three requests, whoever the client: one TTFT each, and
        # one TPOT per session per agent cycle it decoded in (not one per token: 5 + 5 + 3),
        # in E(t) per signal.
        wait_for(lambda: len(series("ttft")) == 3 and len(series("tpot")) >= 3, 10, 0.1, "first-hop samples")
        assert len(series("tpot")) <= 6  # each session's few steps fall in one or two cycles
        # each request's first token came before its end (both series in request order)
        assert all(0 < ttft < whole for ttft, whole in zip(series("ttft"), samples, strict=True))
        signals = _env(monitor.address).latency_signals["mon-llama"]
        assert min(signals.ttft_ms, signals.tpot_ms, signals.request_ms) > 0, signals
        expected = {f"worker-{w}": f"{a}-{b}" for a, b, w in segments}

        def timed() -> bool:
            seen = {m.node_id: dict(m.segment_compute_ms) for m in _env(monitor.address).metrics}
            return all(key in seen.get(node, {}) for node, key in expected.items())

        wait_for(timed, 10, 0.1, what=f"compute times of {expected} in E(t)")

        # Passive bandwidth: probes are off here, yet a prefill whose activation is
        # large enough (300 tokens x 64 floats = 75 kB) gives the first hop's link a rate.
        assert not [x for x in _env(monitor.address).links if x.bandwidth_mbps > 0]
        with Client(local.orchestrator.address) as client:
            prompt = [5 + i % 300 for i in range(300)]
            assert len(list(client.generate_ids(prompt, client.route("mon-llama"), Sampling(2)))) == 2

        def passive() -> list[common_pb2.Link]:
            return [x for x in _env(monitor.address).links if x.bandwidth_mbps > 0]

        links = wait_for(passive, 10, 0.1, what="a passively measured link")
        assert [(x.src, x.dst) for x in links] == [("worker-0", "worker-1")]
        # that client reported nothing (no monitor given): its TTFT still came from the first hop
        wait_for(lambda: len(series("ttft")) == 4, 10, 0.1, "the uncooperative client's TTFT")
        assert len(series("request")) == 3
        store.close()
    finally:
        if monitor is not None:
            monitor.kill()
        local.stop()


async def test_series_are_trimmed_by_age_and_e_t_snapshots_by_count(redis_server):
    from resplit.state import StateStore

    store = StateStore(redis_server.url)
    try:
        old = common_pb2.NodeMetrics(node_id="r", timestamp=time.time(), cpu_utilization=0.1)
        await store.put_metrics(old, retention_s=0.3)
        await asyncio.sleep(0.5)
        new = common_pb2.NodeMetrics(node_id="r", timestamp=time.time(), cpu_utilization=0.2)
        await store.put_metrics(new, retention_s=0.3)
        assert [m.cpu_utilization for m in await store.metrics_history("r")] == [pytest.approx(0.2)]
        link = common_pb2.Link(src="r", dst="s", bandwidth_mbps=5, rtt_ms=1, timestamp=time.time())
        await store.put_links("r", [link], retention_s=0.3)
        await asyncio.sleep(0.5)
        await store.put_links("r", [link], retention_s=0.3)
        assert len(await store.link_history("r", "s")) == 1
        assert await store.list_links(["r"], max_age_s=0.2) == []  # too old for E(t)
        assert len(await store.list_links(["r"])) == 1
        for i in range(300):
            await store.put_environment(common_pb2.Environment(timestamp=i), keep=50)
        kept = await store.environment_history()
        assert 50 <= len(kept) < 300 and kept[-1].timestamp == 299
    finally:
        await store.close()
