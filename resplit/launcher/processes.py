"""Start, watch and stop the project's processes: the one launcher of the CLI's stack
(``resplit up / down``), the testbed's runner and the tests.

* :class:`ServiceProcess`: ``python -m services.<kind>`` on its ports, ready once its
  gRPC health (and /healthz) says so; :func:`wait_ready` waits for several at once.
* :class:`RedisServer`: a ``redis-server`` of its own, ready once it answers PING.
* Both are a :class:`Process`: output to a log file (``<log_dir>/<name>.log``, appended
  to; without a ``log_dir`` a scratch folder removed when this process exits), read back
  through :class:`Log`; optionally detached in a session of its own so that it outlives
  its starter (``resplit up``) and a signal reaches its whole group; optionally started
  through another launcher than ``subprocess.Popen`` (the testbed's ``Node.popen``: ``ip
  netns exec`` and the node's cgroup); stopped with SIGTERM, then SIGKILL after a grace
  period.
* :class:`ProcessRecord`: a started process as the stack file keeps it, and
  :func:`stop` for records: how ``down`` stops exactly what ``up`` started. A record
  holds the PID with its start time, so a PID the kernel has since reused for another
  program is never signalled.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import ClassVar, Self

import psutil
import redis
from pydantic import BaseModel

from ..config import redact_url
from ..rpc.probe import grpc_health, http_health
from ..rpc.security import Security

REDIS_INSTALL_HINT = (
    "redis-server is not installed: run `make setup` as root, or `sudo apt-get install redis-server`, "
    "or pass --redis-url to use a Redis you already run"
)


class LaunchError(RuntimeError):
    """A process could not start, exited before it was ready, or was not ready in time;
    the message says which and shows the last lines of its log."""


class ProcessRecord(BaseModel):
    """One started process, as written to the stack file."""

    name: str
    kind: str
    pid: int
    create_time: float
    argv: list[str]
    log: str
    address: str = ""
    http_port: int = 0


_GIVEN: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


#: Environment variable naming the ports free_port chooses from, as ``LOW-HIGH`` (HIGH
#: excluded). Why: two launchers on one host (test processes run side by side) each know
#: only the ports they handed out; a port one of them chose but has not bound yet, or
#: one freed while its service restarts on it, can be taken by the other. Disjoint
#: ranges make that impossible.
PORT_RANGE_ENV = "RESPLIT_PORT_RANGE"


def port_range() -> tuple[int, int]:
    """The ports free_port chooses from: $RESPLIT_PORT_RANGE, else 12000 under the ephemeral range."""
    given = os.environ.get(PORT_RANGE_ENV, "")
    if given:
        try:
            low, high = (int(part) for part in given.split("-"))
        except ValueError:
            raise LaunchError(f"{PORT_RANGE_ENV}={given!r}: expected LOW-HIGH, e.g. 20000-26000") from None
        if not 1024 <= low < high <= 65536:
            raise LaunchError(f"{PORT_RANGE_ENV}={given!r}: expected 1024 <= LOW < HIGH <= 65536")
        return low, high
    low, _ = _ephemeral_range()
    return max(1024, low - 12000), low


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now, chosen below the kernel's ephemeral range.

    Why not bind to port 0: the kernel hands out the same range to outgoing
    connections, so between choosing a port and the service binding it, some
    client socket may take it. Ports under the ephemeral range are only ever
    taken by an explicit bind.
    """
    start, stop = port_range()
    for _ in range(200):
        port = random.randrange(start, stop)
        if port in _GIVEN:  # handed out already, maybe not bound yet
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # crowded: let the kernel pick
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Log:
    """A log file from ``start`` (a byte offset) on: what one start of a process wrote."""

    #: Lines kept in memory at the most (the newest matter).
    KEEP = 20_000

    def __init__(self, path: Path, start: int = 0) -> None:
        self.path = path
        self.start = start
        self._read = start
        self._partial = b""
        self._lines: list[str] = []

    @property
    def lines(self) -> list[str]:
        """Every complete line so far (with its newline), read as the file grows."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._read)
                data = f.read()
        except OSError:
            return self._lines
        self._read += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        self._lines += [line.decode(errors="replace") + "\n" for line in complete]
        if len(self._lines) > self.KEEP:
            del self._lines[: len(self._lines) - self.KEEP // 2]
        return self._lines

    def text(self) -> str:
        """Everything kept, the unfinished last line included."""
        return "".join(self.lines) + self._partial.decode(errors="replace")

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for(self, *fragments: str, timeout: float = 10.0) -> str:
        """The first line (from the start on) holding every fragment; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if all(f in line for f in fragments):
                    return line
            if time.monotonic() > deadline:
                raise TimeoutError(f"no line of {self.path} holds {fragments}; last lines:\n{self.tail(20)}")
            time.sleep(0.05)


_scratch: tempfile.TemporaryDirectory | None = None
_numbers = itertools.count()


def _scratch_log(name: str) -> Path:
    """A new log file in a folder of this process's own, removed when it exits."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.TemporaryDirectory(prefix="resplit-logs-")
    return Path(_scratch.name) / f"{name}-{next(_numbers)}.log"


#: How a process is started: ``subprocess.Popen``'s signature.
Launch = Callable[..., subprocess.Popen]


@dataclass(kw_only=True)
class Process:
    """A child process with its log; :class:`ServiceProcess` and :class:`RedisServer` say what
    runs (``argv``), where it answers (``address``) and their ``kind`` and ``http_port``."""

    #: Names its log file (``<log_dir>/<name>.log``) and its stack record.
    name: str = ""
    #: Added to this process's environment.
    env: dict[str, str] = field(default_factory=dict)
    #: Where its log goes (appended to); None: a scratch folder removed when this process exits.
    log_dir: Path | None = None
    #: Its working directory (None: this process's).
    cwd: Path | None = None
    #: In a session of its own: it outlives this process and a signal reaches its whole group.
    detach: bool = False
    #: How it is started (the testbed's ``Node.popen`` runs it inside a node).
    launch: Launch = subprocess.Popen
    proc: subprocess.Popen | None = field(default=None, init=False)
    log: Log | None = field(default=None, init=False)
    create_time: float = field(default=0.0, init=False)

    def argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def address(self) -> str:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """What this process adds to the environment it inherits."""
        return self.env

    def start(self) -> Self:
        """Start it (again, after a stop: the log is appended to, :attr:`log` reads the new part)."""
        argv = self.argv()
        path = self.log_dir / f"{self.name}.log" if self.log_dir is not None else _scratch_log(self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as out:
            self.log = Log(path, out.tell())
            options = {"cwd": self.cwd} if self.cwd is not None else {}
            self.proc = self.launch(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=self.detach,
                env={**os.environ, **self.environment()},
                **options,
            )
        with contextlib.suppress(psutil.Error):
            self.create_time = psutil.Process(self.proc.pid).create_time()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_running(self) -> None:
        """Raise LaunchError (with the last lines of its log) unless it runs."""
        if self.proc is None:
            raise LaunchError(f"{self.name} was never started")
        if self.proc.poll() is not None:
            where = self.log.path if self.log else "its log"
            raise LaunchError(
                f"{self.name} exited during start-up (exit code {self.proc.returncode}); "
                f"last lines of {where}:\n{self.log.tail(30) if self.log else ''}"
            )

    def output(self) -> str:
        """What it wrote since its last start, once it has exited ("" while it runs)."""
        if self.proc is None or self.proc.poll() is None or self.log is None:
            return ""
        return self.log.text()

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.detach:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait (subprocess.TimeoutExpired after ``timeout``); the exit code."""
        if self.proc is None:
            raise LaunchError(f"{self.name} was never started")
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL now (if it runs) and reap it."""
        if self.running:
            self._signal(signal.SIGKILL)
            assert self.proc is not None
            self.proc.wait(10)

    def stop(self, grace_s: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL if it still runs after ``grace_s``; True if it needed SIGKILL."""
        if not self.running:
            return False
        try:
            self.terminate(grace_s)
            return False
        except subprocess.TimeoutExpired:
            self.kill()
            return True

    def record(self) -> ProcessRecord:
        """It as the stack file keeps it."""
        assert self.proc is not None and self.log is not None
        return ProcessRecord(
            name=self.name,
            kind=self.kind,
            pid=self.proc.pid,
            create_time=self.create_time,
            argv=[str(a) for a in self.proc.args],
            log=str(self.log.path),
            address=self.address,
            http_port=self.http_port,
        )


@dataclass
class ServiceProcess(Process):
    """``python -m services.<kind>`` on its gRPC and HTTP ports.

    A Redis URL with a password goes through the environment: flags show in ``ps``
    and in the stack file.
    """

    kind: str
    redis_url: str = ""
    extra: list[str] = field(default_factory=list)
    _: KW_ONLY
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    #: The address it binds to (``--host``); None: the service's default, loopback.
    host: str | None = None
    #: ``--health-interval-s``: how often it re-checks its dependencies (None: the service's default).
    health_interval_s: float | None = 0.2
    #: Client credentials of the health checks (None: this process's channel defaults).
    security: Security | None = None

    def __post_init__(self) -> None:
        self.name = self.name or self.kind

    @property
    def address(self) -> str:
        return f"{self.host or '127.0.0.1'}:{self.port}"

    def _secret_url(self) -> bool:
        return redact_url(self.redis_url) != self.redis_url

    def argv(self) -> list[str]:
        shown_url = self.redis_url and not self._secret_url()
        interval = self.health_interval_s
        return [
            sys.executable,
            "-m",
            f"services.{self.kind}",
            *(["--host", self.host] if self.host else []),
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            *(["--redis-url", self.redis_url] if shown_url else []),
            *(["--health-interval-s", str(interval)] if interval is not None else []),
            *self.extra,
        ]

    def environment(self) -> dict[str, str]:
        secret = {"RESPLIT_REDIS_URL": self.redis_url} if self._secret_url() else {}
        return {"PYTHONUNBUFFERED": "1", **secret, **self.env}

    def health(self) -> str:
        """Its gRPC health: ``SERVING``, ``NOT_SERVING``, ``UNREACHABLE (...)``, ..."""
        return grpc_health(self.address, timeout_s=1.0, security=self.security)

    def healthz(self) -> int:
        """The HTTP status of its /healthz (0: unreachable)."""
        return http_health(self.host or "127.0.0.1", self.http_port, timeout_s=1.0)[0]

    def wait_health(self, status: str = "SERVING", timeout: float = 20.0) -> None:
        """Until its gRPC health is ``status``; LaunchError if it exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_running()
            state = self.health()
            if state == status:
                return
            if time.monotonic() > deadline:
                raise LaunchError(
                    f"{self.name} did not report {status} within {timeout:.0f} s (last: {state}); "
                    f"last lines of {self.log.path if self.log else 'its log'}:\n"
                    f"{self.log.tail(30) if self.log else ''}"
                )
            time.sleep(0.1)


def wait_ready(
    procs: Sequence[ServiceProcess],
    timeout_s: float,
    on_progress: Callable[[int, int], None] | None = None,
    healthz: bool = False,
) -> None:
    """Until every one of ``procs`` is SERVING over gRPC (with ``healthz``, /healthz answers 200 too).

    LaunchError as soon as any of them exits, or at the timeout naming those not ready.
    ``on_progress(ready, total)`` after every round.
    """
    pending = list(procs)
    states: dict[int, tuple[str, int]] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for proc in procs:
            proc.check_running()
        for proc in list(pending):
            states[id(proc)] = (proc.health(), proc.healthz() if healthz else 200)
            if states[id(proc)] == ("SERVING", 200):
                pending.remove(proc)
        if on_progress:
            on_progress(len(procs) - len(pending), len(procs))
        if not pending:
            return
        if time.monotonic() > deadline:
            detail = ", ".join(
                f"{p.name}: gRPC {states[id(p)][0]}" + (f", /healthz {states[id(p)][1]}" if healthz else "")
                for p in pending
            )
            logs = ", ".join(str(p.log.path) for p in pending if p.log)
            raise LaunchError(f"not healthy after {timeout_s:.0f}s: {detail} (logs in {logs})")
        time.sleep(0.1)


@dataclass
class RedisServer(Process):
    """A redis-server of its own on loopback (and ``also_bind``), nothing saved to disk."""

    kind: ClassVar[str] = "redis"
    http_port: ClassVar[int] = 0

    port: int = field(default_factory=free_port)
    #: Addresses to listen on besides loopback (a testbed's bridge, for its nodes).
    also_bind: list[str] = field(default_factory=list)
    #: ``requirepass``: clients must AUTH (the URL carries it).
    password: str = ""
    #: Where the password goes, in a config file only its owner reads, so it never shows
    #: on redis-server's command line (``ps``); None: next to its log.
    config_dir: Path | None = None

    def __post_init__(self) -> None:
        self.name = self.name or "redis"

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise LaunchError(REDIS_INSTALL_HINT)
        bind = ["--bind", "127.0.0.1", *self.also_bind]
        bind += ["--protected-mode", "no"] if self.also_bind else []
        config = [str(self._password_config())] if self.password else []
        return [binary, *config, "--port", str(self.port), *bind, "--save", "", "--appendonly", "no"]

    def _password_config(self) -> Path:
        """A config file holding ``requirepass``, readable by its owner only."""
        folder = self.config_dir or self.log_dir or _scratch_log(self.name).parent
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}-{self.port}.conf"
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(f'requirepass "{self.password}"\n')
        return path

    def start(self, timeout_s: float = 10.0) -> Self:
        """Start it and wait until it answers PING; LaunchError (it stopped again) otherwise."""
        super().start()
        client = redis.Redis(port=self.port, password=self.password or None, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return self
                if not self.running or time.monotonic() > deadline:
                    self.stop()
                    tail = self.log.tail() if self.log else ""
                    raise LaunchError(f"redis-server did not come up on port {self.port}:\n{tail}")
                time.sleep(0.05)
        finally:
            client.close()


def _same_process(record: ProcessRecord) -> psutil.Process | None:
    """The live process of ``record``, or None if it is gone (or a zombie, or a reused PID)."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > 0.05:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(record.pid, os.WNOHANG)
            return None
        return proc
    except psutil.Error:
        return None


def is_alive(record: ProcessRecord) -> bool:
    return _same_process(record) is not None


def stop(records: list[ProcessRecord], grace_s: float = 10.0) -> list[str]:
    """SIGTERM each live process group, SIGKILL what is left after ``grace_s``.

    Returns the names that needed SIGKILL.
    """
    live = {r.name: r for r in records if is_alive(r)}
    for record in live.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        live = {n: r for n, r in live.items() if is_alive(r)}
        time.sleep(0.05)
    killed = []
    for record in live.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGKILL)
        killed.append(record.name)
    deadline = time.monotonic() + 5.0
    while any(is_alive(r) for r in live.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed


def log_tail(record: ProcessRecord, lines: int = 15) -> str:
    return Log(Path(record.log)).tail(lines)
