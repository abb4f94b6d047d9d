"""Server-wide caps and backpressure over real processes: RPCs in flight capped per
service and per client identity (the certificate's name under mutual TLS), refused at
once with RESOURCE_EXHAUSTED and a retry hint while health checks still answer; a
caller that stops reading is cut off instead of holding its session."""

from __future__ import annotations

import asyncio
import threading
import urllib.request

import grpc
import pytest
from support import LocalStack, greedy, spread, wait_for, worker_sessions

from resplit.launcher.certs import make_dev_pki
from resplit.launcher.processes import RedisServer, ServiceProcess
from resplit.models import Checkpoint, num_units
from resplit.rpc.channels import aio_channel, sync_channel
from resplit.rpc.security import Security
from resplit.sdk import Client
from resplit.sdk.exchange import GenerateExchange, Sampling
from resplit.v1 import worker_pb2, worker_pb2_grpc

pytestmark = pytest.mark.integration


def _in_flight(proc: ServiceProcess) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("resplit_grpc_server_in_flight "):
                return float(line.split()[1])
    return 0.0


#: A Forward stream's first message that is not `open`: the worker answers NOT_FOUND, which
#: shows the call got past the caps to the worker's own code.
NOT_OPEN = worker_pb2.ForwardRequest(tokens=worker_pb2.TokenInput(step=0, input_ids=[1]))


async def _answer(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    call = worker_pb2_grpc.WorkerServiceStub(channel).Forward(timeout=10)
    try:
        # A refusal can end the call before this write is done: the write then raises it.
        await call.write(NOT_OPEN)
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or "", dict(exc.trailing_metadata() or ())
    return grpc.StatusCode.OK, "", {}


def test_caps_per_service_and_per_certificate_refuse_at_once_with_a_hint(tmp_path):
    pki = make_dev_pki(tmp_path / "tls", ["worker-0", "other"])
    redis_server = RedisServer().start()
    flags = [
        *("--tls-cert", str(pki / "worker-0.pem"), "--tls-key", str(pki / "worker-0-key.pem")),
        *("--tls-ca", str(pki / "ca.pem"), "--node-id", "worker-0", "--agent-interval-s", "0"),
        *("--max-rpcs", "4", "--max-rpcs-per-client", "2", "--retry-after-ms", "250"),
    ]
    client = Security.from_files(pki / "ca.pem", pki / "client.pem", pki / "client-key.pem")
    other = Security.from_files(pki / "ca.pem", pki / "other.pem", pki / "other-key.pem")
    third = Security.from_files(pki / "ca.pem", pki / "worker-0.pem", pki / "worker-0-key.pem")
    worker = ServiceProcess("worker", redis_server.url, flags, security=client).start()

    async def scenario() -> None:
        channels = {name: aio_channel(worker.address, security=sec) for name, sec in
                    (("client", client), ("other", other), ("third", third))}  # fmt: skip
        held = []
        try:
            for name in ("client", "client", "other"):
                call = worker_pb2_grpc.WorkerServiceStub(channels[name]).Forward(timeout=30)
                await call.wait_for_connection()
                held.append(call)
            await asyncio.to_thread(wait_for, lambda: _in_flight(worker) == 3, 10, what="3 streams held")
            # The certificate "client" holds its 2: its third is refused, naming it, with the hint.
            code, details, trailing = await _answer(channels["client"])
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
            assert "client 'cn:client' has 2 RPCs in flight" in details and "retry after 250 ms" in details
            assert trailing.get("retry-after-ms") == "250"
            # Another certificate still gets in (and to the worker's own answer).
            code, details, _ = await _answer(channels["other"])
            assert code == grpc.StatusCode.NOT_FOUND and "must start with `open`" in details
            held.append(worker_pb2_grpc.WorkerServiceStub(channels["other"]).Forward(timeout=30))
            await held[-1].wait_for_connection()
            await asyncio.to_thread(wait_for, lambda: _in_flight(worker) == 4, 10, what="4 streams held")
            # The service is full: a third identity is refused by the service-wide cap.
            code, details, trailing = await _answer(channels["third"])
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "(limit 4, --max-rpcs)" in details
            assert trailing.get("retry-after-ms") == "250"
            assert await asyncio.to_thread(worker.health) == "SERVING"  # probes are never capped
            held.pop(0).cancel()
            await asyncio.to_thread(wait_for, lambda: _in_flight(worker) == 3, 10, what="a slot freed")
            code, details, _ = await _answer(channels["third"])
            assert code == grpc.StatusCode.NOT_FOUND, details
        finally:
            for call in held:
                call.cancel()
            for channel in channels.values():
                await channel.close()

    try:
        worker.wait_health("SERVING", timeout=60)
        asyncio.run(scenario())
    finally:
        worker.kill()
        redis_server.stop()


def test_a_caller_that_stops_reading_is_cut_off_and_others_are_served(tiny_models):
    """Whole-model replies with their logits (a few KB each) to a caller that never reads:
    the flow-control window fills, the worker's write stalls, and after
    --stalled-write-timeout-s the session is dropped, its memory and its stream's slot
    freed; another client meanwhile gets the whole model's tokens. (gRPC keeps the unsent
    replies, at most the window the client granted, until the client resets the stream or
    its deadline passes: no status can pass them.)"""
    model_dir = tiny_models["llama"]
    args = ["--torch-threads", "1", "--stalled-write-timeout-s", "1", "--max-tokens", "8192"]
    local = LocalStack(workers=1, worker_args=args)
    try:
        local.start()
        local.deploy("stall", model_dir, spread(num_units(Checkpoint(model_dir).config), 1))
        worker = local.worker_procs[0]
        with Client(local.orchestrator.address) as client:
            route = client.route("stall")
            exchange = GenerateExchange(route, [5, 6, 7], Sampling(max_new_tokens=6000), return_logits=True)
            never = threading.Event()

            def requests():
                yield from exchange.opening()
                never.wait()  # never closes, never reads

            with sync_channel(route.hops[0].address) as channel:
                call = worker_pb2_grpc.WorkerServiceStub(channel).Forward(requests(), timeout=120)
                wait_for(lambda: worker_sessions(worker) == 1, 20, what="the session open")
                expected = greedy(model_dir, [5, 6], 4)[0]
                assert [t.token_id for t in client.generate_ids([5, 6], route, Sampling(4))] == expected
                wait_for(lambda: worker_sessions(worker) == 0, 30, what="the stalled session cut off")
                wait_for(lambda: _in_flight(worker) == 0, 10, what="its stream's slot freed")
                assert "--stalled-write-timeout-s): cut off" in worker.log.tail()
                call.cancel()
                never.set()
    finally:
        local.stop()
