"""Each of the five services as a real process: health, reflection, metrics
(refusals counted by status code), graceful SIGTERM."""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from support import wait_for

from resplit.launcher.processes import ServiceProcess
from resplit.rpc.channels import sync_channel
from resplit.v1 import (
    monitor_pb2,
    monitor_pb2_grpc,
    worker_pb2,
    worker_pb2_grpc,
)

pytestmark = pytest.mark.integration

SERVICES = {
    "monitor": "resplit.v1.MonitorService",
    "orchestrator": "resplit.v1.OrchestratorService",
    "splitter": "resplit.v1.SplitterService",
    "broadcaster": "resplit.v1.BroadcasterService",
    "worker": "resplit.v1.WorkerService",
}


def _metrics(proc: ServiceProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/metrics", timeout=5) as reply:
        return reply.read().decode()


@pytest.fixture(scope="module")
def running(module_redis):
    """All five services up against one Redis for the module."""
    procs = {name: ServiceProcess(name, module_redis.url).start() for name in SERVICES}
    try:
        for proc in procs.values():
            proc.wait_health("SERVING")
        yield procs
    finally:
        for proc in procs.values():
            proc.kill()


@pytest.mark.parametrize("name", SERVICES)
def test_service_is_serving_with_healthz_and_metrics(running, name):
    proc = running[name]
    assert proc.health() == "SERVING"
    assert proc.healthz() == 200
    text = _metrics(proc)
    assert f'resplit_service_info{{service="{name}"}} 1.0' in text
    assert "resplit_service_serving 1.0" in text


@pytest.mark.parametrize("name", SERVICES)
def test_reflection_lists_the_service(running, name):
    with sync_channel(running[name].address) as channel:
        listed = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {SERVICES[name], "grpc.health.v1.Health"} <= listed


def test_a_refusal_carries_its_code_and_message_and_is_counted(running):
    request = worker_pb2.ExportSessionRequest(deployment="nope", session_id="s", epoch=1)
    with sync_channel(running["worker"].address) as channel, pytest.raises(grpc.RpcError) as info:
        list(worker_pb2_grpc.WorkerServiceStub(channel).ExportSession(request, timeout=5))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "unknown session 's' of 'nope' at epoch 1" in info.value.details()
    # The refusal is counted like any other RPC (the count lands just after the reply).
    wait_for(lambda: 'code="NOT_FOUND"' in _metrics(running["worker"]), 5, what="the NOT_FOUND count")


def test_worker_ping_status_and_probe_are_real(running):
    with sync_channel(running["worker"].address) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        pong = stub.Ping(worker_pb2.PingRequest(payload=b"abc"), timeout=5)
        status = stub.GetStatus(worker_pb2.GetStatusRequest(), timeout=5)
        chunks = [worker_pb2.ProbeChunk(data=b"\0" * 65536) for _ in range(16)]
        probe = stub.ProbeBandwidth(iter(chunks), timeout=10)
    assert pong.payload == b"abc"
    assert pong.node_id == status.node.node_id
    assert status.node.address == running["worker"].address
    assert status.node.capacity.memory_bytes > 0
    assert probe.bytes == 16 * 65536 and probe.seconds >= 0


def test_monitor_lists_the_registered_worker(running):
    with sync_channel(running["monitor"].address) as channel:
        nodes = (
            monitor_pb2_grpc.MonitorServiceStub(channel)
            .ListNodes(monitor_pb2.ListNodesRequest(), timeout=5)
            .nodes
        )
    assert running["worker"].address in {n.address for n in nodes}


@pytest.mark.parametrize("name", SERVICES)
def test_sigterm_stops_gracefully(module_redis, services, name):
    proc = ServiceProcess(name, module_redis.url).start()
    services.append(proc)
    proc.wait_health("SERVING")
    assert proc.terminate(timeout=15) == 0
    out = proc.output()
    assert "shutting down" in out and f"{name} stopped" in out


def test_sigterm_after_a_split_generation_does_not_wait_out_the_grace(tiny_models):
    """Two workers with lanes to each other (a split generated over both) each stop at once
    on SIGTERM: a lane is no RPC that a client finishes, so the worker ends them itself once
    its sessions are gone. Before, gRPC's graceful stop waited the whole grace for each
    peer's lane (5 s per `resplit down` at the default; here 60 s, and the bound is 20)."""
    from support import LocalStack, greedy, spread

    from resplit.models import Checkpoint, num_units
    from resplit.sdk import Client, Sampling

    prompt = [5, 17, 33, 40]
    expected = greedy(tiny_models["llama"], prompt, 6)[0]
    local = LocalStack(workers=2, worker_args=["--torch-threads", "1", "--shutdown-grace-s", "60"])
    try:
        local.start()
        units = num_units(Checkpoint(tiny_models["llama"]).config)
        (a, b, _), (c, d, _) = spread(units, 2)
        local.deploy("lanes", tiny_models["llama"], [(a, b, 0), (c, d - 1, 1), (d - 1, d, 0)])
        with Client(local.orchestrator.address) as client:
            tokens = client.generate_ids(prompt, client.route("lanes"), Sampling(max_new_tokens=6))
            assert [t.token_id for t in tokens] == expected
        first, second = local.worker_procs
        # One alone (its peer stays up and keeps its lane to it), then the other.
        assert second.terminate(timeout=20) == 0
        assert first.health() == "SERVING"
        assert first.terminate(timeout=20) == 0
        for proc in (first, second):
            assert "worker stopped" in proc.output()
    finally:
        local.stop()
