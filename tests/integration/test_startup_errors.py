"""A bad configuration or a taken port stops start-up with one clear line."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from support import ROOT

from resplit.launcher.processes import free_port

pytestmark = pytest.mark.integration

BAD = [
    ("worker", ["--port", "70000"], "--port (env RESPLIT_PORT): Input should be less than or equal to 65535"),
    (
        "monitor",
        ["--redis-url", "http://localhost"],
        "--redis-url (env RESPLIT_REDIS_URL): String should match",
    ),
    ("splitter", ["--log-level", "LOUD"], "--log-level"),
    ("orchestrator", ["--no-such-flag", "1"], "unrecognized arguments: --no-such-flag"),
    ("broadcaster", ["--shutdown-grace-s", "-1"], "--shutdown-grace-s"),
    ("worker", ["--heartbeat-interval-s", "10", "--heartbeat-ttl-s", "5"], "must be below heartbeat-ttl-s"),
    (
        "gateway",
        ["--api-port", "0"],
        "--api-port (env RESPLIT_API_PORT): Input should be greater than or equal",
    ),
]


def _run(name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"services.{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(("name", "args", "message"), BAD)
def test_bad_value_fails_startup_with_one_clear_line(name, args, message):
    result = _run(name, args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"resplit-{name}: invalid configuration: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_value_from_environment_is_reported_too():
    import os

    result = _run("splitter", [], env={**os.environ, "RESPLIT_HTTP_PORT": "0"})
    assert result.returncode == 2
    assert "--http-port (env RESPLIT_HTTP_PORT): Input should be greater than or equal to 1" in result.stderr


def test_taken_port_fails_startup_with_one_clear_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = _run("splitter", ["--port", str(port)])
    assert result.returncode == 1
    assert f"resplit-splitter: cannot listen for gRPC on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_api_port_or_a_missing_api_key_file_stops_the_gateway_with_one_line(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        ports = ["--port", str(free_port()), "--http-port", str(free_port())]
        taken = _run("gateway", ["--api-port", str(port), *ports])
    assert taken.returncode == 1, taken.stderr
    assert f"resplit-gateway: cannot listen for the API on 127.0.0.1:{port}" in taken.stderr
    missing = _run("gateway", ["--api-key-file", str(tmp_path / "nope"), "--port", str(free_port())])
    assert missing.returncode == 1 and "resplit-gateway: API key:" in missing.stderr, missing.stderr
    assert "Traceback" not in taken.stderr + missing.stderr
