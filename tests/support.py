"""Test support: stacks of real processes and helpers to wait on them.

Real parts only: ``redis-server`` binaries and ``python -m services.<name>``
processes on loopback ports, started with resplit.launcher.processes (the
launcher of ``resplit up`` and the testbed too). Never the machine's shared Redis
on 6379: tests that stop or restart Redis must own the one they stop.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch

from resplit.launcher.processes import RedisServer, ServiceProcess, free_port
from resplit.rpc.security import Security

ROOT = Path(__file__).resolve().parent.parent
# Where the test stack's workers run segments (their --device is "auto"). A whole
# model run as a reference runs there too: the same kernels, so 1e-5 holds.
WORKER_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@functools.lru_cache(maxsize=16)
def _whole_model(model_dir: str, device: str):
    """The whole model, loaded once per test process (generate does not change it)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).eval().to(device)


def greedy(
    model_dir, prompt: list[int], new_tokens: int, device: torch.device | None = None
) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and each step's raw logits [new_tokens, vocab] (on the CPU) of the whole
    model, by transformers' ``generate``: the reference every split is compared with."""
    device = device or torch.device("cpu")
    whole = _whole_model(str(model_dir), str(device))
    out = whole.generate(
        torch.tensor([prompt], device=device),
        max_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=whole.config.pad_token_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return out.sequences[0, len(prompt) :].tolist(), torch.stack(out.logits)[:, 0].cpu()


def control_cycles(orchestrator) -> float:
    """How many control cycles the orchestrator's loop has run (its /metrics).
    ``orchestrator``: anything with its ``http_port`` (a ServiceProcess, a stack record)."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{orchestrator.http_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(r"^resplit_control_cycle_seconds_count (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def quiet_window(orchestrator, seconds: float, min_cycles: int = 2) -> None:
    """Let ``seconds`` pass, then fail unless the control loop ran ``min_cycles`` cycles
    meanwhile: "nothing happened" proves nothing if the loop did not run."""
    before = control_cycles(orchestrator)
    time.sleep(seconds)
    wait_for(
        lambda: control_cycles(orchestrator) >= before + min_cycles,
        30,
        0.1,
        what=f"{min_cycles} control cycles in the quiet window",
    )


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


_stacks = itertools.count()


def _kept_logs() -> Path | None:
    """``RESPLIT_TEST_LOGS=<folder>`` keeps every stack's service logs, one folder per
    stack (a failure under load is read from them afterwards); unset, they are scratch."""
    root = os.environ.get("RESPLIT_TEST_LOGS")
    return Path(root) / f"stack-{os.getpid()}-{next(_stacks)}" if root else None


@dataclass
class LocalStack:
    """Redis, the broadcaster, the orchestrator and workers as real processes
    (worker-0 and worker-1 are trusted). ``adaptive`` also starts the monitor and
    the splitter and runs the orchestrator's control loop every ``interval_s``;
    without it the orchestrator serves plans as deployed (``--no-adaptive``)."""

    workers: int = 4
    worker_args: list[str] = field(default_factory=lambda: ["--torch-threads", "1"])
    #: Extra flags for single workers, by index (e.g. a declared memory size).
    per_worker: dict[int, list[str]] = field(default_factory=dict)
    adaptive: bool = False
    orchestrator_args: list[str] = field(default_factory=list)
    redis: RedisServer = field(default_factory=RedisServer)
    #: A folder made by resplit.launcher.certs.make_dev_pki: every service runs with
    #: mutual TLS and the folder's token, and the stack's clients use ``client.pem``.
    tls_dir: Path | None = None
    orchestrator: ServiceProcess | None = None
    broadcaster: ServiceProcess | None = None
    monitor: ServiceProcess | None = None
    splitter: ServiceProcess | None = None
    worker_procs: list[ServiceProcess] = field(default_factory=list)
    #: Also start the OpenAI-compatible gateway (``gateway_args`` added to its flags).
    gateway: bool = False
    gateway_args: list[str] = field(default_factory=list)
    gateway_proc: ServiceProcess | None = None
    #: The port of the gateway's API (http://127.0.0.1:<it>/v1).
    gateway_api_port: int = 0
    #: Where the services' logs go (see _kept_logs); None: scratch files.
    log_dir: Path | None = field(default_factory=_kept_logs)

    @property
    def security(self) -> Security | None:
        """Client credentials for this stack (None when it runs plaintext)."""
        return None if self.tls_dir is None else Security.from_pki_dir(self.tls_dir)

    def _service(self, kind: str, name: str, extra: list[str]) -> ServiceProcess:
        if self.tls_dir is not None:
            tls = self.tls_dir
            extra = [
                *("--tls-cert", str(tls / f"{name}.pem"), "--tls-key", str(tls / f"{name}-key.pem")),
                *("--tls-ca", str(tls / "ca.pem"), "--token-file", str(tls / "token")),
                *extra,
            ]
        return ServiceProcess(
            kind, self.redis.url, extra, security=self.security, name=name, log_dir=self.log_dir
        ).start()

    def control(self) -> list[ServiceProcess]:
        procs = (self.monitor, self.splitter, self.broadcaster, self.orchestrator, self.gateway_proc)
        return [p for p in procs if p is not None]

    def start(self) -> LocalStack:
        self.redis.start()
        peers = []
        kinds = ("monitor", "splitter", "broadcaster") if self.adaptive else ("broadcaster",)
        for kind in kinds:
            proc = self._service(kind, kind, [])
            setattr(self, kind, proc)
            peers += [f"--{kind}-address", proc.address]
        flags = [] if self.adaptive else ["--no-adaptive"]
        self.orchestrator = self._service(
            "orchestrator", "orchestrator", [*peers, *flags, *self.orchestrator_args]
        )
        if self.gateway:
            self.gateway_api_port = free_port()
            orchestrator = ["--orchestrator-address", self.orchestrator.address]
            api = ["--api-port", str(self.gateway_api_port), *self.gateway_args]
            self.gateway_proc = self._service("gateway", "gateway", [*orchestrator, *api])
        for i in range(self.workers):
            extra = ["--node-id", f"worker-{i}", *self.worker_args, *self.per_worker.get(i, [])]
            extra += ["--trusted"] if i < 2 else []
            self.worker_procs.append(self._service("worker", f"worker-{i}", extra))
        for proc in (*self.control(), *self.worker_procs):
            proc.wait_health("SERVING", timeout=60)
        return self

    def stop(self) -> None:
        for proc in (*self.worker_procs, *reversed(self.control())):
            proc.kill()
        self.redis.stop()

    def deploy(
        self, name: str, model_dir, segments=(), compression: str = "none", policy=None, weights: str = ""
    ):
        """Deploy over gRPC; ``segments`` are (start, end, worker index) triples."""
        from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

        spec = common_pb2.Deployment(
            name=name, model_dir=str(model_dir), compression=compression, weights=weights
        )
        if policy is not None:
            spec.policy.CopyFrom(policy)
        request = orchestrator_pb2.DeployRequest(
            deployment=spec,
            segments=[
                common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=f"worker-{w}")
                for a, b, w in segments
            ],
        )
        from resplit.rpc.channels import sync_channel

        with sync_channel(self.orchestrator.address, security=self.security) as channel:
            return orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Deploy(request, timeout=120).plan

    def rollout(self, plan, timeout: float = 60, **request):
        """Roll ``plan`` (see make_plan) out through the broadcaster; the response."""
        from resplit.rpc.channels import sync_channel
        from resplit.v1 import broadcaster_pb2, broadcaster_pb2_grpc

        with sync_channel(self.broadcaster.address, security=self.security) as channel:
            return broadcaster_pb2_grpc.BroadcasterServiceStub(channel).Rollout(
                broadcaster_pb2.RolloutRequest(plan=plan, **request), timeout=timeout
            )


def make_plan(name: str, segments, epoch: int = 0):
    """A Plan from (start, end, worker index) triples; epoch 0 lets the broadcaster choose."""
    from resplit.v1 import common_pb2

    return common_pb2.Plan(
        deployment=name,
        epoch=epoch,
        segments=[
            common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=f"worker-{w}")
            for a, b, w in segments
        ],
    )


OWNERS = {1: [0], 2: [0, 1], 3: [0, 2, 0], 4: [0, 2, 3, 1]}


def spread(num_units: int, pieces: int) -> list[tuple[int, int, int]]:
    """Split [0, num_units) into ``pieces`` segments over workers: the first and last
    segments (embedding, head) on trusted workers 0/1, the middle on untrusted 2 and 3;
    three segments put S1 and S3 on the same worker, as in the paper."""
    cuts = [round(i * num_units / pieces) for i in range(pieces + 1)]
    return [(a, b, w) for a, b, w in zip(cuts[:-1], cuts[1:], OWNERS[pieces], strict=True)]


@contextlib.contextmanager
def emulated_stack(names=("n0", "n1", "n2", "n3"), trusted=2, cycle: float = 0.5, orchestrator_args=()):
    """Emulated nodes (root only) with one worker each, Redis and the four control
    services (the Alg. 1 loop on) in the root namespace. Yields (testbed, orchestrator)."""
    from testbed.nodes import Testbed

    port, http = 50070, 9170
    with Testbed(fallback=False) as testbed:  # raises EmulationUnavailable (with why) unless root
        redis_server = RedisServer(also_bind=[testbed.host_address]).start()
        control: list[ServiceProcess] = []
        try:
            url = redis_server.url
            for name, extra in (
                ("monitor", ["--cycle-s", str(cycle)]),
                ("splitter", []),
                ("broadcaster", []),
            ):
                control.append(ServiceProcess(name, url, extra).start())
            peers = [f"--{p.name}-address={p.address}" for p in control]
            floor = ["--control-interval-floor-s", "0.2", "--drain-deadline-s", "2", *orchestrator_args]
            control.append(ServiceProcess("orchestrator", url, [*peers, *floor]).start())
            node_redis = f"redis://{testbed.host_address}:{redis_server.port}/0"
            workers = []
            for i, name in enumerate(names):
                node = testbed.add_node(name, cores=1.0, memory_bytes=2 << 30)
                extra = [
                    "--node-id", name, "--cpu-source", "cgroup", "--torch-threads", "1",
                    "--agent-interval-s", str(cycle), "--probe-interval-s", str(cycle),
                    "--heartbeat-ttl-s", "3", "--heartbeat-interval-s", "1",
                    *(["--trusted"] if i < trusted else []),
                ]  # fmt: skip
                # In the node's namespace and cgroup; the node owns the process.
                worker = ServiceProcess(
                    "worker", node_redis, extra, host=node.address, port=port, http_port=http,
                    health_interval_s=None, launch=node.popen,
                )  # fmt: skip
                workers.append(worker.start())
            for proc in (*control, *workers):
                proc.wait_health("SERVING", timeout=60)
            _warm_up(control[-1].address, list(names), cycle)
            yield testbed, control[-1]
        finally:
            for proc in control:
                proc.kill()
            redis_server.stop()


def deploy_spec(orchestrator: str, spec, segments) -> None:
    """Deploy ``spec`` (a Deployment) with ``segments`` as (start, end, node id) triples."""
    from resplit.rpc.channels import sync_channel
    from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

    request = orchestrator_pb2.DeployRequest(
        deployment=spec,
        segments=[
            common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=n) for a, b, n in segments
        ],
    )
    with sync_channel(orchestrator) as channel:
        orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Deploy(request, timeout=120)


def _warm_up(orchestrator: str, names: list[str], cycle: float) -> None:
    """Load and run a tiny model on every node once, under a policy that never fires:
    a worker imports its model code on first use, and that CPU burst inside a one-core
    node must not be what the tests' control loop reacts to."""
    import tempfile

    from resplit.models.tiny import build_tiny
    from resplit.sdk import Client, Sampling
    from resplit.v1 import common_pb2

    model_dir = build_tiny("llama", Path(tempfile.mkdtemp(prefix="warm-")) / "llama", num_hidden_layers=8)
    middle = names[2:]
    cuts = [3 + round(i * 4 / len(middle)) for i in range(len(middle) + 1)]
    segments = [
        (0, 3, names[0]),
        *((a, b, n) for a, b, n in zip(cuts, cuts[1:], middle, strict=False)),
        (7, 10, names[1]),
    ]
    policy = common_pb2.Policy(
        alpha=1.0,
        thresholds=common_pb2.Thresholds(l_max_ms=1e12, u_max=1e9, b_min_mbps=0, t_cool_s=1e9),
        interval_s=cycle,
    )
    spec = common_pb2.Deployment(name="warm-up", model_dir=str(model_dir), policy=policy)
    deploy_spec(orchestrator, spec, segments)
    with Client(orchestrator) as client:
        list(client.generate_ids([5, 6, 7], client.route("warm-up"), Sampling(2)))
    time.sleep(4 * cycle)  # the burst leaves the utilization estimates


def worker_sessions(proc) -> int:
    """How many sessions the worker ``proc`` holds open now (its GetStatus)."""
    from resplit.rpc.channels import sync_channel
    from resplit.v1 import worker_pb2, worker_pb2_grpc

    with sync_channel(proc.address) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        return stub.GetStatus(worker_pb2.GetStatusRequest(), timeout=5).sessions


def metric_sum(procs, sample: str) -> float:
    """The sum over ``procs`` (anything with an ``http_port``) of one sample on their /metrics:
    a name such as ``resplit_worker_batch_rows_count``, with its labels if it has any."""
    total = 0.0
    for proc in procs:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(f"{sample} "):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def lane_rows(procs) -> tuple[float, float]:
    """(rows, messages) the workers ``procs`` have sent on their lanes so far (more rows than
    messages: a batch's rows crossed a hop together)."""
    rows = sum(
        metric_sum(procs, f'resplit_worker_lane_rows_total{{kind="{kind}"}}')
        for kind in ("activation", "reply")
    )
    return rows, metric_sum(procs, "resplit_worker_messages_sent_total")


def batch_rows(procs) -> tuple[float, float]:
    """(rows, batched forwards) the workers ``procs`` have run so far: the sum and count of
    their resplit_worker_batch_rows histograms (more rows than forwards: steps were batched)."""
    return metric_sum(procs, "resplit_worker_batch_rows_sum"), metric_sum(
        procs, "resplit_worker_batch_rows_count"
    )
