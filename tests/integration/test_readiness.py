"""Health tells the truth: NOT_SERVING until ready, and back when a dependency goes.
Workers appear in and drop out of the registry by heartbeat."""

from __future__ import annotations

import signal
import time

import pytest
from support import wait_for

from resplit.launcher.processes import RedisServer, ServiceProcess
from resplit.rpc.channels import sync_channel
from resplit.v1 import common_pb2, monitor_pb2, monitor_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["monitor", "orchestrator", "broadcaster"])
def test_redis_backed_service_follows_redis(services, name):
    redis_server = RedisServer()  # port reserved, server not started yet
    proc = ServiceProcess(name, redis_server.url).start()
    services.append(proc)
    try:
        proc.wait_health("NOT_SERVING")
        assert proc.healthz() == 503
        redis_server.start()
        proc.wait_health("SERVING")
        assert proc.healthz() == 200
        redis_server.stop()
        proc.wait_health("NOT_SERVING", timeout=15)
        assert proc.healthz() == 503
    finally:
        redis_server.stop()


def test_worker_serves_only_once_registered_and_stays_serving_without_redis(services):
    redis_server = RedisServer()
    beats = ["--heartbeat-interval-s", "0.3", "--heartbeat-ttl-s", "3"]
    worker = ServiceProcess("worker", redis_server.url, ["--node-id", "edge-1", *beats]).start()
    services.append(worker)
    try:
        worker.wait_health("NOT_SERVING")
        redis_server.start()
        worker.wait_health("SERVING")
        # The data plane never waits on the control plane: losing Redis keeps it serving.
        redis_server.stop()
        worker.log.wait_for("registry unreachable")  # its heartbeat has failed: it knows
        # Then through several of its readiness re-checks (every 0.2 s here): SERVING at every look.
        seen = []
        for _ in range(12):
            seen.append((worker.health(), worker.healthz()))
            time.sleep(0.1)
        assert set(seen) == {("SERVING", 200)}, seen
    finally:
        redis_server.stop()


def _nodes(monitor: ServiceProcess) -> dict[str, common_pb2.Node]:
    with sync_channel(monitor.address) as channel:
        reply = monitor_pb2_grpc.MonitorServiceStub(channel).ListNodes(
            monitor_pb2.ListNodesRequest(include_down=True), timeout=5
        )
    return {n.node_id: n for n in reply.nodes}


def test_sigkilled_worker_is_marked_down_within_its_heartbeat_ttl(redis_server, services):
    monitor = ServiceProcess("monitor", redis_server.url).start()
    ttl = ["--heartbeat-ttl-s", "1.5", "--heartbeat-interval-s", "0.3"]
    keep = ServiceProcess("worker", redis_server.url, ["--node-id", "keep", "--trusted", *ttl]).start()
    doomed = ServiceProcess("worker", redis_server.url, ["--node-id", "doomed", *ttl]).start()
    services += [monitor, keep, doomed]
    for proc in (monitor, keep, doomed):
        proc.wait_health("SERVING")
    nodes = _nodes(monitor)
    assert nodes["keep"].state == nodes["doomed"].state == common_pb2.NODE_STATE_UP
    assert nodes["keep"].trusted and not nodes["doomed"].trusted
    doomed.proc.send_signal(signal.SIGKILL)
    wait_for(
        lambda: _nodes(monitor)["doomed"].state == common_pb2.NODE_STATE_DOWN, 1.5 + 1.0, what="doomed DOWN"
    )
    assert _nodes(monitor)["keep"].state == common_pb2.NODE_STATE_UP


def test_worker_registers_again_after_redis_restarts_empty(redis_server, services):
    ttl = ["--heartbeat-ttl-s", "2", "--heartbeat-interval-s", "0.3"]
    worker = ServiceProcess("worker", redis_server.url, ["--node-id", "phoenix", *ttl]).start()
    monitor = ServiceProcess("monitor", redis_server.url).start()
    services += [worker, monitor]
    worker.wait_health("SERVING")
    monitor.wait_health("SERVING")
    redis_server.stop()
    redis_server.start()  # same port, empty
    wait_for(lambda: "phoenix" in _safe_nodes(monitor), 10, what="phoenix to re-register")


def _safe_nodes(monitor: ServiceProcess) -> dict[str, common_pb2.Node]:
    try:
        return _nodes(monitor)
    except Exception:
        return {}
