"""Start and stop child processes so that ``down`` stops exactly what ``up`` started.

Each process runs in its own session (its own process group) with output to a
log file, so it outlives the CLI that started it. We record its PID together
with its start time: a PID the kernel has since reused for another program is
never signalled.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
from pydantic import BaseModel


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


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now, chosen below the kernel's ephemeral range.

    Why not bind to port 0: the kernel hands out the same range to outgoing
    connections, so between choosing a port and the service binding it, some
    client socket may take it. Ports under the ephemeral range are only ever
    taken by an explicit bind.
    """
    low, _ = _ephemeral_range()
    start = max(1024, low - 12000)
    for _ in range(200):
        port = random.randrange(start, low)
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


def spawn(
    name: str, kind: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None
) -> ProcessRecord:
    """Start ``argv`` detached, logging to ``log_dir/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    create_time = psutil.Process(proc.pid).create_time()
    return ProcessRecord(name=name, kind=kind, pid=proc.pid, create_time=create_time, argv=argv, log=str(log))


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
    try:
        return "\n".join(Path(record.log).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
