"""Emulated nodes as root: a CPU hog shows in its own node's utilization only, a
shaped link is measured at its rate, and a rate change shows within two cycles.

Real processes: Redis in the root namespace (on loopback and the bridge address),
the monitor on loopback, one worker per node inside the node's namespace and
cgroup. Not root: these tests fail and say why (CI runs as root)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from support import wait_for

from resplit.launcher.processes import free_port
from resplit.rpc.channels import sync_channel
from resplit.rpc.probe import grpc_health
from resplit.state import keys
from resplit.v1 import common_pb2, monitor_pb2, monitor_pb2_grpc
from testbed.nodes import Testbed
from testbed.system import EmulationUnavailable

pytestmark = [pytest.mark.integration, pytest.mark.serial]  # see pyproject.toml
CYCLE = 0.5
NODES = ("n0", "n1", "n2")
WORKER_PORT, WORKER_HTTP = 50070, 9170
PROBE_BYTES = 256 * 1024
HOG_S = 20


@pytest.fixture(scope="module")
def bed():
    """Three nodes of one core each, a worker in each, Redis and the monitor outside."""
    with Testbed(fallback=False) as testbed:  # raises EmulationUnavailable (with why) unless root
        port = free_port()
        redis_proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
             testbed.host_address, "--protected-mode", "no", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        monitor = None
        try:
            wait_for(lambda: _redis_up(port), 10, what="redis")
            monitor_port, monitor_http = free_port(), free_port()
            monitor = subprocess.Popen(
                [sys.executable, "-m", "services.monitor", "--port", str(monitor_port), "--http-port",
                 str(monitor_http), "--redis-url", f"redis://127.0.0.1:{port}/0", "--cycle-s", str(CYCLE)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            for name in NODES:
                node = testbed.add_node(name, cores=1.0, memory_bytes=2 << 30)
                node.python(
                    "-m", "services.worker", "--host", node.address, "--port", str(WORKER_PORT),
                    "--http-port", str(WORKER_HTTP), "--redis-url", f"redis://{testbed.host_address}:{port}/0",
                    "--node-id", name, "--cpu-source", "cgroup", "--torch-threads", "1",
                    "--agent-interval-s", str(CYCLE), "--probe-interval-s", str(CYCLE),
                    "--probe-bytes", str(PROBE_BYTES), "--heartbeat-ttl-s", "5",
                    "--heartbeat-interval-s", "1",
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            address = f"127.0.0.1:{monitor_port}"
            for node in testbed.nodes.values():
                target = f"{node.address}:{WORKER_PORT}"
                wait_for(lambda t=target: grpc_health(t, timeout_s=1) == "SERVING", 60, 0.2, target)
            wait_for(lambda: grpc_health(address, timeout_s=1.0) == "SERVING", 30, 0.2, what="monitor")
            wait_for(lambda: len(_env(address).metrics) == len(NODES), 20, 0.1, what="metrics of every node")
            yield testbed, address, port
        finally:
            if monitor is not None:
                monitor.kill()
                monitor.wait(10)
            redis_proc.kill()
            redis_proc.wait(10)


def _redis_up(port: int) -> bool:
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _env(address: str) -> common_pb2.Environment:
    with sync_channel(address) as channel:
        return monitor_pb2_grpc.MonitorServiceStub(channel).GetEnvironment(
            monitor_pb2.GetEnvironmentRequest(), timeout=5
        )


def _cpu(address: str) -> dict[str, tuple[float, float]]:
    """node -> (cpu utilization, report timestamp)."""
    return {m.node_id: (m.cpu_utilization, m.timestamp) for m in _env(address).metrics}


def _link(address: str, src: str, dst: str) -> float:
    for link in _env(address).links:
        if (link.src, link.dst) == (src, dst):
            return link.bandwidth_mbps
    return 0.0


def _reports(port: int, node: str, since: float) -> list[common_pb2.NodeMetrics]:
    client = redis.Redis(port=port)
    rows = client.xrange(keys.metrics_series(node), min=str(int(since * 1000)))
    client.close()
    return [common_pb2.NodeMetrics.FromString(fields[b"m"]) for _, fields in rows]


def test_cpu_hog_in_one_node_shows_in_that_node_only_within_two_cycles(bed):
    testbed, address, port = bed
    node = testbed.nodes["n1"]
    before = node.cgroup.usage_s()
    started = time.time()
    hog = node.python("-c", f"import time\nend = time.time() + {HOG_S}\nwhile time.time() < end: pass")
    try:
        wait_for(lambda: _cpu(address)["n1"][0] > 0.6, 3 * CYCLE + 1.0, 0.05, what="n1's CPU above 60%")
        took = time.time() - started
        # Two more cycles of every node while the hog runs.
        wait_for(lambda: all(len(_reports(port, n, started)) >= 3 for n in NODES), 3 * CYCLE + 2, 0.05)
    finally:
        hog.kill()
        hog.wait(10)
    reports = {n: [round(r.cpu_utilization, 2) for r in _reports(port, n, started)] for n in NODES}
    # Count cycles, not seconds: the first report after the start may cover time before it,
    # the second covers a whole cycle of the hog and must show it.
    first_busy = next(i for i, cpu in enumerate(reports["n1"]) if cpu > 0.6)
    assert first_busy <= 1, f"n1 showed the hog in report #{first_busy + 1}: {reports}"
    assert all(cpu > 0.6 for cpu in reports["n1"][first_busy:]), reports
    assert all(cpu < 0.3 for n in ("n0", "n2") for cpu in reports[n]), reports  # not in the others'
    assert node.cgroup.usage_s() - before > 0.5  # the hog's CPU went to n1's cgroup
    print(f"hog seen after {took:.2f}s (report #{first_busy + 1}); cpu per report since start {reports}")


def test_shaped_link_is_measured_and_a_rate_change_shows_within_two_cycles(bed):
    testbed, address, port = bed
    n0 = testbed.nodes["n0"]
    try:
        n0.shape(rate_mbit=50)
        # n0's egress is shaped: both of its links read 50 Mbit/s (+/- 20%).
        for dst in ("n1", "n2"):
            wait_for(lambda d=dst: 40 <= _link(address, "n0", d) <= 60, 10, 0.05, what=f"n0>{dst} at 50")
        at_50 = {dst: round(_link(address, "n0", dst), 1) for dst in ("n1", "n2")}
        assert all(40 <= v <= 60 for v in at_50.values()), at_50
        unshaped = _link(address, "n1", "n2")
        assert unshaped > 100, f"n1>n2 is not shaped, yet measured {unshaped:.1f} Mbit/s"
        n0.shape(rate_mbit=20)
        changed = time.time()
        wait_for(lambda: 16 <= _link(address, "n0", "n1") <= 24, 10, 0.05, what="n0>n1 at 20 Mbit/s +/- 20%")
        took = time.time() - changed
        # Count cycles, not seconds (the host's two cores are shared): each agent cycle adds one
        # estimate of n0>n1. A probe that straddles the change is not one of the two cycles.
        client = redis.Redis(port=port)
        rows = client.xrange(keys.link_series("n0", "n1"), min=str(int(changed * 1000)))
        client.close()
        after = [common_pb2.Link.FromString(fields[b"l"]) for _, fields in rows]
        seen = [(round(x.timestamp - changed, 2), round(x.bandwidth_mbps, 1)) for x in after]
        straddling = 1 if after and after[0].timestamp - changed < PROBE_BYTES * 8 / 20e6 else 0
        first_ok = next(i for i, x in enumerate(after) if 16 <= x.bandwidth_mbps <= 24)
        assert first_ok - straddling <= 1, f"20 Mbit/s showed at estimate #{first_ok + 1}: {seen}"
        print(
            f"50 Mbit/s measured {at_50}; 20 Mbit/s shown after {took:.2f}s {seen}; unshaped {unshaped:.0f}"
        )
    finally:
        n0.shape()  # unshaped again for whatever runs next on this bed


def _rtt(address: str, src: str, dst: str) -> float:
    for link in _env(address).links:
        if (link.src, link.dst) == (src, dst):
            return link.rtt_ms
    return 0.0


def test_netem_delay_shows_in_the_measured_rtt_or_is_refused_with_the_reason(bed):
    """Delay needs the netem qdisc, which some kernels (our 2-core VMs) lack: then
    shaping a delay must refuse and say why, and the node keeps working unshaped; the
    test then reports itself skipped, since the delay itself went untested."""
    testbed, address, _ = bed
    n2 = testbed.nodes["n2"]
    try:
        # Replies from n0 queued behind its probes while it was shaped to 20 Mbit/s: wait
        # until the estimate is back to an unshaped RTT before adding the delay.
        wait_for(lambda: 0 < _rtt(address, "n2", "n0") < 15, 10, 0.05, what="n2>n0 RTT below 15 ms")
        try:
            n2.shape(rate_mbit=50, delay_ms=20, jitter_ms=1)  # netem at the root, tbf under it
        except EmulationUnavailable as exc:
            assert "netem" in str(exc)
            print(f"netem refused, as it must be on this kernel: {exc}")
            probes = len([x for x in _env(address).links if x.src == "n2"])
            wait_for(lambda: _rtt(address, "n2", "n0") < 15, 5, 0.05, what="n2 unshaped after the refusal")
            assert probes == 2
            # The refusal is tested; the delay is not: say so where every run shows it.
            pytest.skip(f"link delay is NOT tested on this kernel (only its refusal): {exc}")
        # netem, or the delay relay where the kernel has none; the monitor's estimate (an
        # EWMA over its probes) takes a few of its probe rounds to climb, longer under load.
        rtt = wait_for(lambda: (r := _rtt(address, "n2", "n0")) >= 19 and r, 30, 0.05, "n2>n0 RTT >= 20 ms")
        assert rtt < 60, rtt
        assert _rtt(address, "n0", "n1") < 15  # other nodes' links keep their RTT
        # netem delays n2's egress only (RTT 20 ms); the relay holds both ways (RTT 40 ms)
        mode = testbed.network.delay_mode
        print(
            f"n2>n0 RTT with a 20 ms delay ({mode}): {rtt:.1f} ms; bandwidth {_link(address, 'n2', 'n0'):.1f}"
        )
    finally:
        n2.shape()


def test_leaving_a_testbed_on_an_error_removes_everything_it_made():
    made = {}
    with pytest.raises(RuntimeError, match="boom"), Testbed(fallback=False) as testbed:
        node = testbed.add_node("solo", cores=0.5)
        sleeper = node.popen(["sleep", "30"])
        child = node.python(
            "-c", "import subprocess, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"
        )
        wait_for(lambda: len(node.cgroup.pids()) >= 3, 5, what="three processes in the node's cgroup")
        made = {
            "netns": testbed.network.namespaces["solo"],
            "bridge": testbed.network.bridge,
            "cgroup": Path("/sys/fs/cgroup/cpu") / testbed.cgroup_root,
            "pids": node.cgroup.pids(),
        }
        raise RuntimeError("boom")
    assert sleeper.poll() is not None and child.poll() is not None
    assert made["netns"] not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    assert made["bridge"] not in links
    assert not made["cgroup"].exists()
    for pid in made["pids"]:  # the grandchild the node's process spawned is gone too
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
