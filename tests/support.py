"""Test support: a Redis server of the test's own and service processes.

Real parts only: ``redis-server`` binaries and ``python -m services.<name>``
processes on loopback ports. Never the machine's shared Redis on 6379: tests
that stop or restart Redis must own the one they stop.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from resplit.launcher.processes import free_port
from resplit.rpc.probe import grpc_health, http_health

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class RedisServer:
    """A redis-server process owned by one test (or module)."""

    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server is not installed; run `make setup` (it installs it as root)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)

        def ready() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(ready, 10, what=f"redis-server on port {self.port}")
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@dataclass
class ServiceProcess:
    """``python -m services.<name>`` on free loopback ports."""

    name: str
    redis_url: str
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            f"services.{self.name}",
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--redis-url",
            self.redis_url,
            "--health-interval-s",
            "0.2",
            *self.extra,
        ]

    def start(self) -> ServiceProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.argv(), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        return self

    def health(self) -> str:
        return grpc_health(self.address, timeout_s=1.0)

    def healthz(self) -> int:
        return http_health("127.0.0.1", self.http_port, timeout_s=1.0)[0]

    def wait_health(self, status: str = "SERVING", timeout: float = 20.0) -> None:
        def reached() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
            return self.health() == status

        wait_for(reached, timeout, interval=0.1, what=f"{self.name} to report {status}")

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self) -> str:
        if self.proc is None or self.proc.stdout is None or self.proc.poll() is None:
            return ""
        return self.proc.stdout.read()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
