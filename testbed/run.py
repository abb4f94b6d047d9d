"""Play a testbed scenario: nodes, links, load, control services, workers, workload.

``run`` builds one emulated node per scenario node (cgroup + network
namespace), shapes each link as its first node's access link (both ways), starts Redis and the
four control services on the host and one worker per node (``--emulate
DEVICE`` or the real model), deploys the model, then drives the workload for
``duration_s`` while a timeline thread applies link changes and background
load. Every request is a row of ``requests.csv``; ``report.py`` makes the
summary and the plots.

What is emulated and how: rate with tc tbf on the node's egress; delay,
jitter and loss with netem where the kernel has it, else with the userspace
delay relay in every node's namespace (testbed/relay.py; the summary says
which) — with neither (no iptables) the runner notes it and shapes the rate alone.
Background load on an emulated node is the device's load file (the worker
stretches steps by 1/(1-u) and reports the utilization); on a real node it is
a duty-cycled CPU hog in the node's cgroup.
"""

from __future__ import annotations

import contextlib
import csv
import random
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from resplit.launcher.processes import RedisServer, ServiceProcess, wait_ready
from resplit.rpc.channels import sync_channel
from resplit.scenarios.testbed import TestbedScenario, TestbedWorkload
from resplit.sdk import Client
from resplit.sdk.exchange import Sampling
from resplit.v1 import common_pb2, monitor_pb2, monitor_pb2_grpc, orchestrator_pb2, orchestrator_pb2_grpc

from .network import Shape, tc_commands
from .nodes import Testbed
from .system import EmulationUnavailable, sh

ROOT = Path(__file__).resolve().parents[1]
WORKER_PORT, WORKER_HTTP = 50070, 9170
GIB = 1024**3
#: Plaintext gRPC: the testbed's network is the host's own bridge and namespaces.
ENV = {"RESPLIT_INSECURE": "1"}
#: How long the services and workers (one core or less each) may take to start, together.
START_S = 120.0
HOG = (
    "import time\nu = {u}\nwhile True:\n    t = time.monotonic()\n"
    "    while time.monotonic() - t < 0.02 * u: pass\n    time.sleep(0.02 * (1 - u))"
)


@dataclass
class Request:
    client: int
    index: int
    sent_s: float
    prompt_tokens: int
    generated: int = 0
    ttft_ms: float = 0.0
    tpot_ms: float = 0.0
    total_ms: float = 0.0
    epoch: int = 0
    error: str = ""
    #: How late the client sent it against its open-loop schedule (it was still busy with its
    #: previous request): a wait the request's user sees, which TTFT alone leaves out.
    late_ms: float = 0.0


class Arrivals:
    """The workload's arrival times, one schedule shared by all its clients (open loop).

    Why shared: with one schedule per client, a client still busy with its previous request
    sent the next one late although other clients were idle; that lateness was the testbed's,
    not the system's. A shared schedule is served by whichever client is free: an arrival is
    late only when every client is busy."""

    def __init__(self, workload: TestbedWorkload, seed: int) -> None:
        self.workload = workload
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._next = 0.0
        self._advance()

    def _advance(self) -> None:
        rate = self.workload.rate_at(self._next)  # stepped arrivals: the rate of this step
        if self.workload.arrival == "poisson":
            self._next += self._rng.expovariate(rate)
        else:
            self._next += 1.0 / rate

    def take(self) -> float:
        """The next arrival not yet taken, in seconds after t = 0."""
        with self._lock:
            at = self._next
            self._advance()
            return at


@dataclass
class RunResult:
    scenario: TestbedScenario
    out_dir: Path
    requests: list[Request]
    #: (t_s, node, utilization) from the monitor's environment, once a second.
    utilization: list[tuple[float, str, float]] = field(default_factory=list)
    #: (t_s, outcome, reason) of every plan change.
    changes: list[tuple[float, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    #: The orchestrator's cost-model check at the end (resplit_cost_model_* / resplit_cost_correction):
    #: raw, corrected (mean |error| of the plan in force's signals), checks, compute, hop_ms.
    cost_model: dict[str, float] = field(default_factory=dict)
    #: (predicted, measured) signal of each committed change, from the decision log.
    change_errors: list[tuple[float, float]] = field(default_factory=list)


def _policy(scenario: TestbedScenario) -> common_pb2.Policy:
    p = scenario.policy
    t = p.thresholds
    return common_pb2.Policy(
        alpha=p.alpha,
        beta=p.beta,
        gamma=p.gamma,
        private_depth=p.private_depth,
        thresholds=common_pb2.Thresholds(
            l_max_ms=t.l_max_ms or 0,
            u_max=t.u_max or 0,
            b_min_mbps=t.b_min_mbps or 0,
            t_cool_s=t.t_cool_s or 0,
        ),
        objective=common_pb2.OBJECTIVE_LATENCY,
        interval_s=p.interval_s,
        hysteresis=0.05,
    )


class Runner:
    def __init__(
        self,
        scenario: TestbedScenario,
        base: Path,
        out_dir: Path,
        on_progress: Callable[[float, int, int], None] = lambda t, done, failed: None,
    ) -> None:
        self.scenario = scenario
        tiny = scenario.model.tiny is not None
        self.model_dir = scenario.model_dir(out_dir if tiny else base).resolve()
        self.out_dir = out_dir
        self.on_progress = on_progress
        self.notes: list[str] = []
        self.services: list[ServiceProcess] = []
        self.workers: list[ServiceProcess] = []
        self.hogs: dict[str, subprocess.Popen] = {}
        self.load_dir = out_dir / "load"
        self.stop_event = threading.Event()

    # -- setup ---------------------------------------------------------------
    def _shape(self, bed: Testbed, node: str, shape: Shape) -> None:
        """The node's access link: egress as given, ingress (the root-namespace end of
        its veth) at the same rate, so a link is shaped both ways."""
        network = bed.network
        host_end = network.veths[list(network.namespaces).index(node)]
        for command in tc_commands(host_end, Shape(shape.rate_mbit)):
            sh(*command, check=command[2] != "del")
        try:
            network.shape(node, shape)
            delayed = shape.delay_ms > 0 or shape.jitter_ms > 0 or shape.loss_pct > 0
            relay = "delay/jitter/loss by the userspace relay (testbed/relay.py; no netem on this kernel)"
            if delayed and network.delay_mode == "relay" and relay not in self.notes:
                self.notes.append(relay)
            elif delayed:  # netem: the delay on the host side too, both ways as the relay does
                for command in tc_commands(host_end, shape):
                    sh(*command, check=command[2] != "del")
        except EmulationUnavailable as exc:
            note = (
                f"{node}: no netem on this kernel, so delay/jitter/loss are not emulated (rate only): {exc}"
            )
            if not any(n.startswith(f"{node}: no netem") for n in self.notes):
                self.notes.append(note)
            bed.network.shape(node, Shape(shape.rate_mbit))

    def _link_shape(self, link, change=None) -> Shape:
        def pick(name: str):
            value = getattr(change, name, None) if change is not None else None
            return getattr(link, name) if value is None else value

        if change is not None:  # a change persists: later changes start from it
            for name in ("bandwidth_mbps", "rtt_ms", "jitter_ms", "loss_pct"):
                setattr(link, name, pick(name))
        # one-way delay on the egress is half the RTT the link should show
        return Shape(link.bandwidth_mbps, link.rtt_ms / 2.0, link.jitter_ms, link.loss_pct)

    def _set_load(self, bed: Testbed, node_id: str, utilization: float) -> None:
        spec = next(n for n in self.scenario.nodes if n.id == node_id)
        if spec.emulate:
            (self.load_dir / node_id).write_text(f"{utilization:.4f}")
            return
        hog = self.hogs.pop(node_id, None)
        if hog is not None:
            hog.kill()
            hog.wait(10)
        if utilization > 0:
            code = HOG.format(u=min(utilization, 1.0))
            self.hogs[node_id] = bed.nodes[node_id].python("-c", code, stdout=subprocess.DEVNULL)

    def _timeline(self, bed: Testbed, t0: float) -> None:
        events: list[tuple[float, Callable[[], None]]] = []
        for link in self.scenario.links:
            node = link.between[0]
            for change in link.changes:
                events.append(
                    (
                        change.at_s,
                        lambda n=node, lk=link, c=change: self._shape(bed, n, self._link_shape(lk, c)),
                    )
                )
        for event in self.scenario.load:
            events.append((event.start_s, lambda e=event: self._set_load(bed, e.node, e.utilization)))
            events.append((event.end_s, lambda e=event: self._set_load(bed, e.node, 0.0)))
        for at, action in sorted(events, key=lambda e: e[0]):
            if self.stop_event.wait(max(t0 + at - time.monotonic(), 0)):
                return
            action()

    # -- workload --------------------------------------------------------------
    def _client(
        self,
        k: int,
        t0: float,
        orchestrator: str,
        monitor: str,
        vocab: int,
        out: list[Request],
        arrivals: Arrivals,
    ) -> None:
        """One of the workload's clients: it takes the next arrival of the shared schedule,
        sends it when it is due (late when every client was busy: the wait counts), and
        takes the next once it has its answer; closed: back to back."""
        s = self.scenario
        w = s.workload
        rng = random.Random(s.seed * 1000 + k)
        index = 0
        with Client(orchestrator, monitor=monitor, step_timeout_s=60) as client:
            while not self.stop_event.is_set():
                next_at = arrivals.take() if w.arrival != "closed" else time.monotonic() - t0
                if self.stop_event.wait(max(t0 + next_at - time.monotonic(), 0)):
                    return
                if time.monotonic() - t0 >= s.duration_s:
                    return
                prompt = [rng.randrange(1, vocab) for _ in range(w.prompt_tokens)]
                req = Request(k, index, time.monotonic() - t0, w.prompt_tokens)
                req.late_ms = max(req.sent_s - next_at, 0.0) * 1e3
                started = time.perf_counter()
                latencies: list[float] = []
                try:
                    route = client.route(s.name)
                    req.epoch = route.epoch
                    sampling = Sampling(max_new_tokens=w.generate_tokens, seed=s.seed)
                    for token in client.generate_ids(prompt, route, sampling):
                        latencies.append(token.latency_s)
                except grpc.RpcError as exc:
                    req.error = f"{exc.code().name}: {exc.details()}"[:200]
                except (RuntimeError, LookupError) as exc:
                    req.error = str(exc)[:200]
                req.total_ms = (time.perf_counter() - started) * 1e3
                req.generated = len(latencies)
                if latencies:
                    req.ttft_ms = latencies[0] * 1e3
                    rest = latencies[1:]
                    req.tpot_ms = sum(rest) / len(rest) * 1e3 if rest else 0.0
                out.append(req)
                index += 1

    # -- the run -------------------------------------------------------------
    def run(self) -> RunResult:
        s = self.scenario
        self.out_dir.mkdir(parents=True, exist_ok=True)
        logs = self.out_dir / "logs"
        for fresh in (logs, self.load_dir):  # this run's, not appended to an earlier run's
            if fresh.exists():
                shutil.rmtree(fresh)
            fresh.mkdir()
        tiny = s.model.tiny
        if tiny is not None:  # real compute on the host CPU: a small model built here
            from resplit.models.tiny import build_tiny

            build_tiny(tiny.family, self.model_dir, seed=tiny.seed, **tiny.config)
        from transformers import AutoConfig

        vocab = int(AutoConfig.from_pretrained(self.model_dir, local_files_only=True).vocab_size)
        requests: list[Request] = []
        result = RunResult(s, self.out_dir, requests, notes=self.notes)
        with Testbed(fallback=False) as bed:
            # Reachable from the nodes' namespaces over the bridge too.
            redis_server = RedisServer(also_bind=[bed.host_address], log_dir=logs).start(timeout_s=15)
            try:
                self._start(bed, redis_server.port, logs)
                orchestrator = self.services[-1].address
                monitor = self.services[0].address
                self._deploy(orchestrator)
                result.plans.append(self._plan_text(orchestrator))
                self.stop_event.wait(s.warmup_s)
                arrivals = Arrivals(s.workload, s.seed)
                t0 = time.monotonic()
                threads = [threading.Thread(target=self._timeline, args=(bed, t0), daemon=True)]
                threads += [
                    threading.Thread(
                        target=self._client,
                        args=(k, t0, orchestrator, monitor, vocab, requests, arrivals),
                        daemon=True,
                    )
                    for k in range(s.workload.clients)
                ]
                for thread in threads:
                    thread.start()
                while (elapsed := time.monotonic() - t0) < s.duration_s:
                    self._sample(monitor, elapsed, result)
                    self.on_progress(elapsed, len(requests), sum(1 for r in requests if r.error))
                    time.sleep(1.0)
                self.stop_event.set()
                for thread in threads[1:]:
                    thread.join(120)  # requests in flight finish
                self.on_progress(s.duration_s, len(requests), sum(1 for r in requests if r.error))
                result.changes = self._changes(orchestrator, t0)
                result.change_errors = self._change_errors(orchestrator)
                result.cost_model = cost_model_metrics(self.services[-1].http_port, s.name)
                result.plans.append(self._plan_text(orchestrator))
            finally:
                self.stop_event.set()
                for hog in self.hogs.values():
                    hog.kill()
                for service in reversed(self.services):
                    service.stop()
                redis_server.stop()  # the workers go with their nodes, when the testbed closes
        write_csv(result)
        return result

    def _start(self, bed: Testbed, redis_port: int, logs: Path) -> None:
        s = self.scenario
        url = f"redis://127.0.0.1:{redis_port}/0"
        own = {"log_dir": logs, "env": ENV, "cwd": ROOT, "health_interval_s": None}
        cycle = ["--cycle-s", "1"]
        for name, extra in (("monitor", cycle), ("splitter", []), ("broadcaster", [])):
            self.services.append(ServiceProcess(name, url, extra, **own).start())
        peers = [f"--{p.kind}-address={p.address}" for p in self.services]
        mode = [] if s.control.adaptive else ["--no-adaptive"]
        mode += [] if s.control.cost_correction else ["--no-cost-correction"]
        floor = ["--control-interval-floor-s", "0.2"]
        self.services.append(ServiceProcess("orchestrator", url, [*peers, *mode, *floor], **own).start())
        node_redis = f"redis://{bed.host_address}:{redis_port}/0"
        for spec in s.nodes:
            node = bed.add_node(spec.id, cores=spec.cores, memory_bytes=0)
            memory = int(spec.memory_gib * GIB) if spec.memory_gib else 0
            extra = ["--node-id", spec.id]
            extra += ["--cpu-source", "cgroup", "--torch-threads", "1", "--agent-interval-s", "1"]
            extra += ["--probe-interval-s", "2", "--heartbeat-ttl-s", "10", "--heartbeat-interval-s", "2"]
            extra += ["--memory-bytes", str(memory), "--device-profile", spec.device]
            extra += ["--max-sessions", "256", "--idle-timeout-s", "120"]
            if spec.emulate:
                extra += ["--emulate", spec.device, "--emulate-load-file", str(self.load_dir / spec.id)]
            if spec.trusted:
                extra.append("--trusted")
            # In the node's namespace and cgroup; the node owns the process (it dies with the testbed).
            worker = ServiceProcess(
                "worker", node_redis, extra, name=f"worker-{spec.id}", host=node.address,
                port=WORKER_PORT, http_port=WORKER_HTTP, launch=node.popen, **own,
            )  # fmt: skip
            self.workers.append(worker.start())
        for link in s.links:
            self._shape(bed, link.between[0], self._link_shape(link))
        wait_ready([*self.services, *self.workers], START_S)

    def _orch(self, address: str, method: str, request, timeout: float = 120):
        with sync_channel(address) as channel:
            return getattr(orchestrator_pb2_grpc.OrchestratorServiceStub(channel), method)(
                request, timeout=timeout
            )

    def _deploy(self, orchestrator: str) -> None:
        s = self.scenario
        spec = common_pb2.Deployment(
            name=s.name, model_dir=str(self.model_dir), policy=_policy(s), dtype=s.model.dtype
        )
        segments = [
            common_pb2.Segment(units=common_pb2.UnitRange(start=p.units[0], end=p.units[1]), node_id=p.node)
            for p in s.control.initial
        ]
        self._orch(orchestrator, "Deploy", orchestrator_pb2.DeployRequest(deployment=spec, segments=segments))

    def _plan_text(self, orchestrator: str) -> str:
        plan = self._orch(
            orchestrator, "GetPlan", orchestrator_pb2.GetPlanRequest(deployment=self.scenario.name)
        )
        segments = ", ".join(f"[{x.units.start},{x.units.end})@{x.node_id}" for x in plan.segments)
        predicted = plan.predicted.prefill_ms
        return f"epoch {plan.epoch}: {segments}" + (
            f" (predicted TTFT {predicted:.0f} ms)" if predicted else ""
        )

    def _changes(self, orchestrator: str, t0: float) -> list[tuple[float, str, str]]:
        events = self._orch(
            orchestrator, "ListEvents", orchestrator_pb2.ListEventsRequest(deployment=self.scenario.name)
        )
        offset = time.time() - time.monotonic() + t0  # wall clock of t0
        return [
            (
                e.timestamp - offset,
                common_pb2.DecisionOutcome.Name(e.outcome).removeprefix("DECISION_OUTCOME_"),
                e.reason,
            )
            for e in events.events
            if e.outcome != common_pb2.DECISION_OUTCOME_KEEP
        ]

    def _change_errors(self, orchestrator: str) -> list[tuple[float, float]]:
        """(predicted, measured) latency signal of each committed change measured so far."""
        events = self._orch(
            orchestrator, "ListEvents", orchestrator_pb2.ListEventsRequest(deployment=self.scenario.name)
        )
        out = []
        for e in events.events:
            if e.outcome == common_pb2.DECISION_OUTCOME_KEEP or e.measured_latency_ms <= 0:
                continue
            c = e.chosen.predicted
            signal = e.latency_signal or "request"
            predicted = {"ttft": c.prefill_ms, "tpot": c.decode_ms_per_token}.get(signal, c.latency_ms)
            out.append((predicted, e.measured_latency_ms))
        return out

    def _sample(self, monitor: str, elapsed: float, result: RunResult) -> None:
        with contextlib.suppress(grpc.RpcError), sync_channel(monitor) as channel:
            env = monitor_pb2_grpc.MonitorServiceStub(channel).GetEnvironment(
                monitor_pb2.GetEnvironmentRequest(), timeout=2
            )
            for m in env.metrics:
                result.utilization.append((elapsed, m.node_id, max(m.cpu_utilization, m.gpu_utilization)))


def cost_model_metrics(http_port: int, deployment: str) -> dict[str, float]:
    """The orchestrator's cost-model check of ``deployment`` from its /metrics (empty if none)."""
    wanted = {
        f'resplit_cost_model_error_mean{{deployment="{deployment}",model="raw"}}': "raw",
        f'resplit_cost_model_error_mean{{deployment="{deployment}",model="corrected"}}': "corrected",
        f'resplit_cost_model_error_median{{deployment="{deployment}",model="raw"}}': "raw_median",
        f'resplit_cost_model_error_median{{deployment="{deployment}",model="corrected"}}': "corrected_median",
        f'resplit_cost_model_checks_total{{deployment="{deployment}"}}': "checks",
        f'resplit_cost_model_outliers_total{{deployment="{deployment}"}}': "outliers",
        f'resplit_cost_correction{{deployment="{deployment}",term="prefill"}}': "prefill",
        f'resplit_cost_correction{{deployment="{deployment}",term="decode"}}': "decode",
        f'resplit_cost_correction{{deployment="{deployment}",term="hop_ms"}}': "hop_ms",
    }
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in wanted:
            out[wanted[name]] = float(value)
    return out


def write_csv(result: RunResult) -> None:
    fields = list(Request.__dataclass_fields__)
    with open(result.out_dir / "requests.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for req in sorted(result.requests, key=lambda r: r.sent_s):
            writer.writerow(asdict(req))
    with open(result.out_dir / "utilization.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t_s", "node", "utilization"])
        writer.writerows(result.utilization)
    with open(result.out_dir / "changes.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["t_s", "outcome", "reason"])
        writer.writerows(result.changes)
