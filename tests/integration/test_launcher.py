"""``resplit up / status / deploy / generate / embed / down`` as a user runs them:
separate processes, all healthy within 30 s, and nothing left behind afterwards."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from support import ROOT

from resplit.launcher import stack as stack_mod
from resplit.launcher.processes import free_port

pytestmark = pytest.mark.integration

RESPLIT = str(Path(sys.executable).parent / "resplit")


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = env or {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [RESPLIT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_up_status_deploy_generate_embed_down_leave_no_process_behind(tmp_path, tiny_models):
    """A user's whole CLI session on one stack (one start-up, the slow part)."""
    state = str(tmp_path / "stack")
    started = time.monotonic()
    api_port = free_port()
    up = _cli("up", "--workers", "3", "--gateway", "--gateway-port", str(api_port), "--state-dir", state,
              "--timeout", "30")  # fmt: skip
    elapsed = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    assert elapsed < 30 + 15, f"up took {elapsed:.1f}s"
    try:
        status = _cli("status", "--json", "--state-dir", state)
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        kinds = sorted(p["kind"] for p in report["processes"])
        assert kinds == sorted(
            [
                "redis",
                "monitor",
                "splitter",
                "broadcaster",
                "orchestrator",
                "gateway",
                "worker",
                "worker",
                "worker",
            ]
        )
        pids = [p["pid"] for p in report["processes"]]
        assert len(set(pids)) == 9, "every service is its own process"
        for row in report["processes"]:
            assert row["healthy"], row
            if row["kind"] != "redis":
                assert (row["grpc_health"], row["healthz"]) == ("SERVING", 200)
        # Three workers share this host's cores: one decode thread each if it has fewer than
        # six and they run torch's kernels; on the native kernels, all of them.
        native = os.environ.get("RESPLIT_NATIVE_KERNELS", "1") != "0"
        share = stack_mod.shared_decode_threads(3, stack_mod.host_cores(), native)
        # The stack file as written; not stack_mod.load, which would make this process's
        # channels use the stack's TLS credentials.
        written = stack_mod.Stack.model_validate_json(stack_mod.stack_file(Path(state)).read_text())
        for record in (r for r in written.processes if r.kind == "worker"):
            if share:
                assert record.argv[record.argv.index("--decode-threads") + 1] == str(share), record.argv
                assert f"({share} for decode steps)" in Path(record.log).read_text(), record.log
            else:
                assert "--decode-threads" not in record.argv, record.argv
        nodes = {n["node_id"]: n for n in report["nodes"]}
        assert set(nodes) == {"worker-0", "worker-1", "worker-2"}
        assert all(n["state"] == "UP" for n in nodes.values())
        assert [n["trusted"] for _, n in sorted(nodes.items())] == [True, False, False]
        # Redis is our own, not the machine's shared one, and asks for a password of its own
        # that shows neither on its command line nor in status (the stack file holds it).
        assert not report["redis_url"].endswith(":6379/0")
        _redis_is_locked(Path(state), written, report)
        second = _cli("up", "--workers", "1", "--state-dir", state)
        assert second.returncode == 1 and "already running" in second.stderr
        _deploy_generate_embed(state, tiny_models)
        _gateway_over_the_stacks_tls(Path(state), api_port)
    finally:
        down = _cli("down", "--state-dir", state)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped 9 processes" in down.stdout
    assert "SIGKILL" not in down.stdout, "every process should stop on SIGTERM"
    assert all(_gone(pid) for pid in pids), [p for p in pids if not _gone(p)]
    assert not (tmp_path / "stack" / "stack.json").exists()
    again = _cli("status", "--state-dir", state)
    assert again.returncode == 1 and "no stack is running" in again.stderr


def _gateway_over_the_stacks_tls(state: Path, port: int) -> None:
    """The gateway of `up --gateway` answers over HTTPS with the stack's certificate, open."""
    context = ssl.create_default_context(cafile=str(state / "tls" / "ca.pem"))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/v1/models", context=context, timeout=30) as reply:
        assert {m["id"] for m in json.load(reply)["data"]} == {"cli-llama", "cli-bert"}
    body = json.dumps({"model": "cli-llama", "prompt": "The edge", "max_tokens": 3}).encode()
    request = urllib.request.Request(f"https://127.0.0.1:{port}/v1/completions", body, method="POST")
    with urllib.request.urlopen(request, context=context, timeout=30) as reply:
        assert json.load(reply)["usage"]["completion_tokens"] <= 3


def _deploy_generate_embed(state: str, tiny_models) -> None:
    """deploy / generate / embed from the CLI; refusals are one clear line, no traceback."""
    deployed = _cli(
        "deploy", str(tiny_models["llama"]), "--name", "cli-llama", "--state-dir", state,
        "--split", "0:3@worker-0,3:6@worker-0",
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "epoch 1" in deployed.stdout and "[0, 3)" in deployed.stdout
    generated = _cli(
        "generate", "The edge", "--deployment", "cli-llama", "--max-new-tokens", "5", "--state-dir", state
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert re.search(
        r"\d+ tokens · first token [0-9.]+ ms · decode median [0-9.]+ ms/token", generated.stdout
    )
    deployed = _cli(
        "deploy",
        str(tiny_models["bert"]),
        "--name",
        "cli-bert",
        "--state-dir",
        state,
        "--split",
        "0:6@worker-0",
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    embedded = _cli("embed", "hello edge", "hello cloud", "--deployment", "cli-bert", "--state-dir", state)
    assert embedded.returncode == 0, embedded.stdout + embedded.stderr
    assert embedded.stdout.count("1.0000") == 2  # both embeddings are normalized
    refused = _cli(
        "deploy", str(tiny_models["llama"]), "--name", "bad", "--state-dir", state, "--split", "0:6@worker-1"
    )
    assert refused.returncode == 1
    assert "FAILED_PRECONDITION" in refused.stderr and "not trusted" in refused.stderr
    missing = _cli("generate", "x", "--deployment", "nope", "--state-dir", state)
    assert missing.returncode == 1
    assert "deployment 'nope' is not deployed" in missing.stderr and "Traceback" not in missing.stderr


def _redis_is_locked(state: Path, written, report: dict) -> None:
    import redis

    password = redis.connection.parse_url(written.redis_url).get("password")
    assert password and len(password) >= 24, "resplit up's Redis has no password"
    assert password not in report["redis_url"] and "***" in report["redis_url"]
    [record] = [r for r in written.processes if r.kind == "redis"]
    port = int(record.address.rsplit(":", 1)[1])
    assert password not in " ".join(psutil.Process(record.pid).cmdline())
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, socket_connect_timeout=2).ping()
    locked = redis.Redis.from_url(written.redis_url, socket_connect_timeout=2)
    assert locked.ping()
    # Loopback only: every address it listens on is 127.0.0.1, as the kernel reports it.
    assert locked.config_get("bind")["bind"].split() == ["127.0.0.1"]
    listening = {c.laddr.ip for c in psutil.Process(record.pid).net_connections() if c.status == "LISTEN"}
    assert listening == {"127.0.0.1"}, listening
    for secret in (stack_mod.stack_file(state), *state.glob("tls/redis-*.conf")):
        assert secret.stat().st_mode & 0o777 == 0o600, secret
    assert list(state.glob("tls/redis-*.conf")), "the password's config file is not with the TLS material"


def test_up_without_redis_server_says_how_to_install_it(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    assert shutil.which("redis-server", path=str(bare)) is None
    result = _cli("up", "--state-dir", str(tmp_path / "stack"), env=env)
    assert result.returncode == 1
    assert "redis-server is not installed" in result.stderr
    assert "apt-get install redis-server" in result.stderr
