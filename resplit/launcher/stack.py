"""A whole local stack: one Redis, the four control services, N workers.

``up`` writes ``<state_dir>/stack.json`` describing every process it started;
``status`` and ``down`` read it back. ``down`` stops exactly those PIDs.

By default the stack runs with mutual TLS and a bearer token: ``up`` makes a
development CA, a certificate per service, a client certificate and a token
under ``<state_dir>/tls`` (:mod:`.certs`). ``up`` and ``load`` make the
client credentials the default of every channel this process opens, so the
CLI and scripts that use the stack need nothing more.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel

from ..rpc import security as security_mod
from ..rpc.probe import grpc_health, http_health
from .certs import CLIENT, make_dev_pki
from .processes import (
    LaunchError,
    Process,
    ProcessRecord,
    RedisServer,
    ServiceProcess,
    is_alive,
    stop,
    wait_ready,
)

CONTROL_SERVICES = ("monitor", "splitter", "broadcaster", "orchestrator")
#: Where ``up --gateway`` serves the OpenAI-compatible API by default.
GATEWAY_API_PORT = 8000


class StackError(RuntimeError):
    """The stack could not be started or found; the message says why."""


def host_cores() -> int:
    """Cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def shared_host_worker_args(
    workers: int, cores: int, given: list[str], environ: Mapping[str, str] = os.environ
) -> list[str]:
    """Flags for workers that share this host's ``cores``: one decode thread each
    where :func:`shared_decode_threads` says so, unless ``given`` (the caller's
    worker flags) or the environment (``RESPLIT_DECODE_THREADS``) sets it.
    Prefill keeps all the cores; one worker alone keeps its defaults.
    """
    chosen = "RESPLIT_DECODE_THREADS" in environ
    if chosen or any(flag.split("=", 1)[0] == "--decode-threads" for flag in given):
        return []
    native = environ.get("RESPLIT_NATIVE_KERNELS", "1") != "0"
    threads = shared_decode_threads(workers, cores, native)
    return ["--decode-threads", str(threads)] if threads else []


def shared_decode_threads(workers: int, cores: int, native: bool = True) -> int:
    """Intra-op threads for each co-located worker's decode steps; 0: all of them.

    All of them, unless the workers decode on torch's kernels (``native`` False:
    ``RESPLIT_NATIVE_KERNELS=0``) with fewer than two cores each: then one thread each.

    * Native kernels (resplit/kernels), 2 cores, 3 workers, one session through a 3-way
      split of the 15-block Llama (``bench/vs_llamacpp.py``, 2026-12-05, quiet machine):
      two decode threads each gave 36-47 tok/s (fp32), 91-112 (int8), 105-121 (int4)
      against 31-32, 83-85 and 79-83 with one. A native projection streams its weights
      at ~26 GB/s on one core and ~41 GB/s on two, and one session's segments compute
      one at a time.
    * torch's kernels, 2 cores, 3 workers (bench/pipeline_overhead.py, 12-34 blocks,
      fp32): one thread decoded as fast as two, and workers decoding with both cores got
      in each other's way: 1.113x the whole model with one thread each against 1.159x.
    * 16 cores, 3 workers, torch's kernels: decode is far from memory-bound at a third of
      the cores; five threads each gave 1.67x (one worker alone: 1.47x), all sixteen
      1.53x (one worker alone: 1.04x).
    """
    return 1 if not native and workers >= 2 and cores < 2 * workers else 0


class StackTLS(BaseModel):
    """The client side of the stack's TLS material (paths, never contents)."""

    ca: str
    cert: str
    key: str
    token_file: str

    def security(self) -> security_mod.Security:
        return security_mod.Security.from_files(self.ca, self.cert, self.key, token_file=self.token_file)


class Stack(BaseModel):
    """What ``up`` started, as saved in the stack file."""

    redis_url: str
    processes: list[ProcessRecord]
    #: None: the stack runs plaintext (``up --insecure``).
    tls: StackTLS | None = None

    def use(self) -> None:
        """Make this stack's client credentials the default for this process's channels."""
        security_mod.configure(self.tls.security() if self.tls else security_mod.Security.insecure())

    def services(self) -> list[ProcessRecord]:
        return [p for p in self.processes if p.kind != "redis"]

    def by_name(self, name: str) -> ProcessRecord:
        for record in self.processes:
            if record.name == name:
                return record
        raise KeyError(name)


def stack_file(state_dir: Path) -> Path:
    return state_dir / "stack.json"


def load(state_dir: Path) -> Stack:
    path = stack_file(state_dir)
    if not path.exists():
        raise StackError(
            f"no stack is running from {state_dir} (no {path.name}); start one with `resplit up`"
        )
    stack = Stack.model_validate_json(path.read_text())
    try:
        stack.use()
    except security_mod.SecurityError as exc:
        raise StackError(f"the stack's TLS material is unusable: {exc}") from None
    return stack


def _save(state_dir: Path, stack: Stack) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = stack_file(state_dir).with_suffix(".tmp")
    tmp.touch(mode=0o600)  # it holds Redis's password
    tmp.chmod(0o600)
    tmp.write_text(stack.model_dump_json(indent=2))
    tmp.replace(stack_file(state_dir))


def _tls_args(tls_dir: Path | None, name: str) -> list[str]:
    """Flags that give service ``name`` its certificate, the CA and the token (all paths)."""
    if tls_dir is None:
        return ["--insecure"]
    return [
        "--tls-cert",
        str(tls_dir / f"{name}.pem"),
        "--tls-key",
        str(tls_dir / f"{name}-key.pem"),
        "--tls-ca",
        str(tls_dir / "ca.pem"),
        "--token-file",
        str(tls_dir / "token"),
    ]


def _stack_tls(tls_dir: Path | None) -> StackTLS | None:
    if tls_dir is None:
        return None
    return StackTLS(
        ca=str(tls_dir / "ca.pem"),
        cert=str(tls_dir / f"{CLIENT}.pem"),
        key=str(tls_dir / f"{CLIENT}-key.pem"),
        token_file=str(tls_dir / "token"),
    )


def health_of(record: ProcessRecord) -> tuple[str, int]:
    """(gRPC health status, /healthz HTTP code) of one service process."""
    host = record.address.rsplit(":", 1)[0]
    return grpc_health(record.address, timeout_s=1.0), http_health(host, record.http_port, timeout_s=1.0)[0]


def up(
    state_dir: Path,
    workers: int = 3,
    trusted: int = 1,
    redis_url: str | None = None,
    timeout_s: float = 30.0,
    on_progress: Callable[[int, int], None] | None = None,
    extra_args: dict[str, list[str]] | None = None,
    secure: bool = True,
    gateway_port: int | None = None,
    worker_args: dict[int, list[str]] | None = None,
) -> Stack:
    """Start Redis (unless ``redis_url``), the control services and ``workers`` workers.

    ``secure`` (the default): mutual TLS and a bearer token on every gRPC hop, with
    a development CA made under ``<state_dir>/tls``; False runs plaintext
    (``--insecure``).

    The first ``trusted`` workers are trusted. ``extra_args`` adds flags per
    service kind (e.g. ``{"worker": ["--max-tokens", "8192"]}``). Two or more
    workers on a host with fewer than two cores each decode with one thread each when
    they run torch's kernels (:func:`shared_host_worker_args`). ``gateway_port``: also start the gateway, its
    OpenAI-compatible API on that port (HTTPS with the stack's certificate unless
    ``secure`` is False; open: no API key). ``worker_args`` adds flags to single workers by
    index (e.g. ``{3: ["--emulate", "A100-40GB", "--trusted"]}``). On any
    failure everything already started is stopped again before the error is
    raised.
    """
    extra_args = extra_args or {}
    if workers < 0 or not 0 <= trusted <= workers:
        raise StackError(f"need 0 <= trusted ({trusted}) <= workers ({workers})")
    if stack_file(state_dir).exists():
        existing = load(state_dir)
        if any(is_alive(p) for p in existing.processes):
            raise StackError(f"a stack is already running from {state_dir}; run `resplit down` first")
    logs = state_dir / "logs"  # every process detached (they outlive `up`), logging there
    started: list[Process] = []
    tls_dir: Path | None = None
    if secure:
        names = [*CONTROL_SERVICES, *(f"worker-{i}" for i in range(workers))]
        names += ["gateway"] if gateway_port is not None else []
        tls_dir = make_dev_pki(state_dir / "tls", names)
    try:
        if redis_url is None:
            # A password of its own even on loopback: any local user could otherwise rewrite
            # the plans. It lives in the stack file and a config file, both owner-only.
            config_dir = tls_dir or state_dir
            redis_server = RedisServer(
                log_dir=logs, detach=True, password=secrets.token_urlsafe(24), config_dir=config_dir
            )
            started.append(redis_server)
            redis_url = redis_server.start().url
        services: list[ServiceProcess] = []

        def start(name: str, kind: str, extra: list[str]) -> ServiceProcess:
            flags = [*_tls_args(tls_dir, name), *extra]
            service = ServiceProcess(
                kind, redis_url or "", flags, name=name, health_interval_s=0.25, log_dir=logs, detach=True
            )
            started.append(service)
            services.append(service.start())
            return service

        peers: list[str] = []
        for kind in CONTROL_SERVICES:  # the orchestrator comes last and is told where the others are
            extra = (peers if kind == "orchestrator" else []) + extra_args.get(kind, [])
            if kind == "orchestrator":  # what it knows outlives its own restart (keep.py)
                extra = ["--memory-file", str(state_dir / "orchestrator-memory.json"), *extra]
            peers += [f"--{kind}-address", start(kind, kind, extra).address]
        if gateway_port is not None:
            api = ["--orchestrator-address", peers[peers.index("--orchestrator-address") + 1]]
            api += ["--monitor-address", peers[peers.index("--monitor-address") + 1]]
            start(
                "gateway", "gateway", [*api, "--api-port", str(gateway_port), *extra_args.get("gateway", [])]
            )
        given = extra_args.get("worker", [])
        shared = shared_host_worker_args(workers, host_cores(), given)
        for i in range(workers):
            extra = ["--node-id", f"worker-{i}", "--heartbeat-ttl-s", "6", "--heartbeat-interval-s", "2"]
            extra += shared + given
            if i < trusted:
                extra.append("--trusted")
            start(f"worker-{i}", "worker", extra + (worker_args or {}).get(i, []))
        records = [p.record() for p in started]
        stack = Stack(redis_url=redis_url, processes=records, tls=_stack_tls(tls_dir))
        _save(state_dir, stack)
        stack.use()
        wait_ready(services, timeout_s, on_progress, healthz=True)
    except BaseException as exc:
        stop([p.record() for p in reversed(started) if p.proc is not None])
        stack_file(state_dir).unlink(missing_ok=True)
        if isinstance(exc, LaunchError):
            raise StackError(str(exc)) from None
        raise
    return stack


def down(state_dir: Path, grace_s: float = 10.0) -> tuple[list[ProcessRecord], list[str]]:
    """Stop every process of the stack, workers first and Redis last.

    Returns (records that were stopped, names that needed SIGKILL).
    """
    stack = load(state_dir)
    order = sorted(stack.processes, key=lambda r: {"worker": 0, "redis": 2}.get(r.kind, 1))
    live = [r for r in order if is_alive(r)]
    killed = stop([r for r in live if r.kind == "worker"], grace_s)
    killed += stop([r for r in live if r.kind not in ("worker", "redis")], grace_s)
    killed += stop([r for r in live if r.kind == "redis"], grace_s)
    stack_file(state_dir).unlink(missing_ok=True)
    return live, killed
