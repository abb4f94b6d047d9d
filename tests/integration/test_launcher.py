"""``resplit up / status / down`` as a user runs them: separate processes, all
healthy within 30 s, and nothing left behind afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support import ROOT

pytestmark = pytest.mark.integration

RESPLIT = str(Path(sys.executable).parent / "resplit")


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RESPLIT, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or os.environ.copy(),
    )


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_up_status_down_leaves_no_process_behind(tmp_path):
    state = str(tmp_path / "stack")
    started = time.monotonic()
    up = _cli("up", "--workers", "3", "--state-dir", state, "--timeout", "30")
    elapsed = time.monotonic() - started
    assert up.returncode == 0, up.stdout + up.stderr
    assert elapsed < 30 + 15, f"up took {elapsed:.1f}s"
    try:
        status = _cli("status", "--json", "--state-dir", state)
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        kinds = sorted(p["kind"] for p in report["processes"])
        assert kinds == sorted(
            ["redis", "monitor", "splitter", "broadcaster", "orchestrator", "worker", "worker", "worker"]
        )
        pids = [p["pid"] for p in report["processes"]]
        assert len(set(pids)) == 8, "every service is its own process"
        for row in report["processes"]:
            assert row["healthy"], row
            if row["kind"] != "redis":
                assert (row["grpc_health"], row["healthz"]) == ("SERVING", 200)
        nodes = {n["node_id"]: n for n in report["nodes"]}
        assert set(nodes) == {"worker-0", "worker-1", "worker-2"}
        assert all(n["state"] == "UP" for n in nodes.values())
        assert [n["trusted"] for _, n in sorted(nodes.items())] == [True, False, False]
        # Redis is our own, not the machine's shared one.
        assert not report["redis_url"].endswith(":6379/0")
    finally:
        down = _cli("down", "--state-dir", state)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped 8 processes" in down.stdout
    assert "SIGKILL" not in down.stdout, "every process should stop on SIGTERM"
    assert all(_gone(pid) for pid in pids), [p for p in pids if not _gone(p)]
    assert not (tmp_path / "stack" / "stack.json").exists()
    again = _cli("status", "--state-dir", state)
    assert again.returncode == 1 and "no stack is running" in again.stderr


def test_up_refuses_a_second_stack_in_the_same_state_dir(tmp_path):
    state = str(tmp_path / "stack")
    first = _cli("up", "--workers", "1", "--state-dir", state)
    assert first.returncode == 0, first.stdout + first.stderr
    try:
        second = _cli("up", "--workers", "1", "--state-dir", state)
        assert second.returncode == 1
        assert "already running" in second.stderr
    finally:
        assert _cli("down", "--state-dir", state).returncode == 0


def test_up_without_redis_server_says_how_to_install_it(tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    assert shutil.which("redis-server", path=str(bare)) is None
    result = _cli("up", "--state-dir", str(tmp_path / "stack"), env=env)
    assert result.returncode == 1
    assert "redis-server is not installed" in result.stderr
    assert "apt-get install redis-server" in result.stderr
