"""Transport security: mutual TLS on every gRPC hop, a bearer token, Redis with a password.

Real processes over loopback. What a refused client sees, by cause:

* no TLS, no client certificate, or a certificate from another CA: the TLS
  handshake fails and gRPC reports ``UNAVAILABLE`` on the client (it cannot
  tell a refused handshake from a server that is down);
* a valid certificate but no token or a wrong one: ``UNAUTHENTICATED`` with a
  message saying which. Health checks need no token (the service still
  demands the client certificate).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys

import grpc
import pytest
from support import ROOT, LocalStack, spread

from resplit.launcher.certs import make_dev_pki
from resplit.launcher.processes import RedisServer, ServiceProcess, free_port
from resplit.models import Checkpoint, num_units
from resplit.rpc.channels import sync_channel
from resplit.rpc.probe import grpc_health
from resplit.rpc.security import Security
from resplit.sdk import Client
from resplit.state.store import StateStore
from resplit.v1 import broadcaster_pb2, broadcaster_pb2_grpc

pytestmark = pytest.mark.integration

REDIS_PASSWORD = "redis-pw-4f1e9b"  # distinctive strings, so a leak is found by grep
ENV_TOKEN = "env-token-9c2d71"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    names = ["broadcaster", "orchestrator", "worker-0", "worker-1"]
    return make_dev_pki(tmp_path_factory.mktemp("pki") / "tls", names)


def _tls_flags(pki, name: str) -> list[str]:
    return [
        *("--tls-cert", str(pki / f"{name}.pem"), "--tls-key", str(pki / f"{name}-key.pem")),
        *("--tls-ca", str(pki / "ca.pem")),
    ]


def _call(address: str, security: Security) -> tuple[grpc.StatusCode, str]:
    with sync_channel(address, security=security) as channel:
        try:
            broadcaster_pb2_grpc.BroadcasterServiceStub(channel).Rollout(
                broadcaster_pb2.RolloutRequest(), timeout=5
            )
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_tls_refuses_clients_without_a_valid_certificate_or_token(pki, services, tmp_path):
    """Also: the token from $RESPLIT_TOKEN, and a Redis password that is wrong shows masked."""
    redis = RedisServer(password=REDIS_PASSWORD).start()
    health_port = free_port()
    try:
        service = ServiceProcess(
            "broadcaster",
            redis.url.replace(REDIS_PASSWORD, REDIS_PASSWORD + "-wrong"),
            [*_tls_flags(pki, "broadcaster"), "--log-level", "DEBUG", "--health-port", str(health_port)],
            security=Security.from_pki_dir(pki),
            env={"RESPLIT_TOKEN": ENV_TOKEN},
        )
        services.append(service.start())
        service.wait_health("NOT_SERVING")  # Redis refuses the password
        _check_refusals(service, pki, tmp_path)
        _check_plaintext_health_port(f"127.0.0.1:{health_port}")
        service.log.wait_for("redis://:***@127.0.0.1")  # the masked URL, logged as Redis refuses
        assert service.terminate() == 0
    finally:
        redis.stop()
    log = service.output()
    assert "redis://:***@127.0.0.1" in log
    assert REDIS_PASSWORD not in log and ENV_TOKEN not in log


def _check_plaintext_health_port(address: str) -> None:
    """--health-port (kubelet gRPC probes speak no TLS): health in plaintext, and nothing else."""
    plaintext = Security.insecure()
    assert grpc_health(address, security=plaintext) == "NOT_SERVING"  # readiness: Redis refuses
    assert grpc_health(address, "liveness", security=plaintext) == "SERVING"  # but the process lives
    assert _call(address, plaintext)[0] == grpc.StatusCode.UNIMPLEMENTED


def _check_refusals(service: ServiceProcess, pki, tmp_path) -> None:
    ca, cert, key = pki / "ca.pem", pki / "client.pem", pki / "client-key.pem"
    rogue = make_dev_pki(tmp_path / "rogue", [])  # a valid-looking certificate from another CA

    # The handshake fails: UNAVAILABLE, whatever the method (health included).
    plaintext = Security.insecure()
    no_client_cert = Security.from_files(ca)
    other_ca = Security.from_files(
        ca, rogue / "client.pem", rogue / "client-key.pem", token_file=pki / "token"
    )
    for refused in (plaintext, no_client_cert, other_ca):
        assert grpc_health(service.address, timeout_s=2, security=refused) == "UNREACHABLE (UNAVAILABLE)"
        assert _call(service.address, refused)[0] == grpc.StatusCode.UNAVAILABLE

    # A valid certificate gets through TLS; the token decides the rest.
    assert grpc_health(service.address, security=Security.from_files(ca, cert, key)) == "NOT_SERVING"
    code, details = _call(service.address, Security.from_files(ca, cert, key))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "missing bearer token" in details
    code, details = _call(service.address, Security.from_files(ca, cert, key, token="wrong"))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "invalid bearer token" in details
    code, details = _call(service.address, Security.from_files(ca, cert, key, token=ENV_TOKEN))
    assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE), details


def test_no_tls_and_no_insecure_refuses_to_start_with_one_line():
    env = {k: v for k, v in os.environ.items() if k != "RESPLIT_INSECURE"}
    result = subprocess.run(
        [sys.executable, "-m", "services.splitter", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("resplit-splitter: invalid configuration: no TLS configured")
    assert "--insecure" in lines[0]


def test_generate_over_mutual_tls_with_token_and_redis_password(pki, tiny_models):
    """A whole stack over mTLS (client→orchestrator, orchestrator→broadcaster→workers,
    worker→worker) with a token and a password-protected Redis; no secret in any log."""
    local = LocalStack(workers=2, tls_dir=pki, redis=RedisServer(password=REDIS_PASSWORD))
    token = (pki / "token").read_text().strip()
    try:
        local.start()
        model = tiny_models["llama"]
        local.deploy("secure", model, spread(num_units(Checkpoint(model).config), 2))
        with Client(local.orchestrator.address, security=local.security) as client:
            tokens = list(client.generate([5, 6, 7, 8], deployment="secure", max_new_tokens=4))
        assert len(tokens) == 4
        with Client(local.orchestrator.address, security=Security.insecure()) as plain:
            with pytest.raises(grpc.RpcError) as info:
                plain.route("secure")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        local.stop()
    for proc in (*local.control(), *local.worker_procs):
        text = proc.output()
        assert "(gRPC, mutual TLS + bearer token)" in text, proc.name
        assert REDIS_PASSWORD not in text and token not in text, f"{proc.name} logged a secret"


@pytest.fixture
def tls_redis(pki):
    """A redis-server answering only TLS (client certificates required) and AUTH."""
    port = free_port()
    server = subprocess.Popen(
        [
            *(shutil.which("redis-server") or "redis-server", "--port", "0", "--bind", "127.0.0.1"),
            *("--tls-port", str(port), "--tls-cert-file", str(pki / "broadcaster.pem")),
            *("--tls-key-file", str(pki / "broadcaster-key.pem"), "--tls-ca-cert-file", str(pki / "ca.pem")),
            *("--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield port
    server.kill()
    server.wait(10)


async def _ping(url: str) -> tuple[bool, str]:
    store = StateStore(url, retries=0, socket_timeout_s=1.0)
    for _ in range(50):
        ok, reason = await store.ping()
        if ok:
            break
        await asyncio.sleep(0.1)
    await store.close()
    return ok, reason


def test_state_store_speaks_tls_and_auth_to_redis(pki, tls_redis):
    """``rediss://`` with a password, the CA and a client certificate from the URL's query."""
    query = "&".join(
        f"{key}={pki / name}"
        for key, name in (
            ("ssl_ca_certs", "ca.pem"),
            ("ssl_certfile", "client.pem"),
            ("ssl_keyfile", "client-key.pem"),
        )
    )
    url = f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{tls_redis}/0?{query}"
    ok, reason = asyncio.run(_ping(url))
    assert ok, reason
    store = StateStore(url.replace(REDIS_PASSWORD, "nope"), retries=0, socket_timeout_s=1.0)
    ok, reason = asyncio.run(store.ping())
    assert not ok and "rediss://:***@127.0.0.1" in reason and "nope" not in reason
