"""The chaos soak: many clients for minutes while random, overlapping faults hit every
part of a stack; every token checked against the whole model; a report.

A stack on loopback (tests/support.py LocalStack: Redis, the four control services with
the Alg. 1 loop, four workers) serves an 8-block tiny Llama split S1 | S2 | S3 and a tiny
BERT split in two. ``clients`` clients (default 32) send requests back to back for
``duration_s``: generations (greedy, or sampled with a seed) of mixed prompt and output
lengths, and embeddings. The seeded schedule of tests/faults/chaos.py plays meanwhile:
workers SIGKILLed (restarted) and SIGSTOPped (continued), control services killed and
restarted, Redis restarted empty or with its data, CPU hogs, an operator's ApplyPlan,
a second deployment deployed, used and undeployed. Faults on one target wait for each
other; faults on different targets overlap.

After the run every generation is compared with the whole model run by transformers
(greedy: ``generate``; seeded: the same sampler over the whole model's logits) and every
embedding with the whole model's pooled output (within 1e-4). The report: requests,
tokens checked, tokens wrong, failures and why, the longest and p99 gap between two
tokens, RSS and open files of every long-lived process at the start and the end, and
the decision log's summary.

Usage (`make soak`): python tests/faults/soak.py [--duration-s 600] [--clients 32] [--seed 26]
       [--out results/soak.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: support
os.environ.setdefault("RESPLIT_INSECURE", "1")  # loopback, plaintext, as the tests run

import grpc
import psutil
import redis
import torch
from chaos import Fault, by_kind, overlapping, schedule
from support import LocalStack, wait_for
from transformers import DynamicCache

from resplit.models import Checkpoint, num_units
from resplit.models.sampling import Sampler
from resplit.models.tiny import build_tiny
from resplit.rpc.channels import sync_channel
from resplit.sdk import AsyncClient, Client, Sampling
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from services.orchestrator.core.policy import default_policy

TTL = ["--heartbeat-ttl-s", "3", "--heartbeat-interval-s", "1"]
LAYERS = 8  # units: 0 embedding, 1..8 blocks, 9 head
START = [(0, 3, "worker-0"), (3, 7, "worker-2"), (7, 10, "worker-0")]
#: The workers started --trusted: the only ones the embedding and the head may run on.
TRUSTED = ("worker-0", "worker-1")
#: Splits an operator applies (ends on the trusted workers 0 and 1).
OPERATOR_SPLITS = [
    [(0, 4, "worker-1"), (4, 8, "worker-3"), (8, 10, "worker-1")],
    [(0, 2, "worker-0"), (2, 6, "worker-3"), (6, 10, "worker-0")],
    [(0, 5, "worker-1"), (5, 10, "worker-1")],
]
EMBED_TOLERANCE = 1e-4
VOCAB = 200  # prompt ids are drawn below this
PROMPTS, SEEDS, MAX_NEW = 32, 3, 24
ROUTE_WAIT_S = 30.0  # the pools requests draw from, the longest generation


@dataclass
class Request:
    client: int
    kind: str  # greedy, seeded, embed
    prompt: list[int]
    new_tokens: int = 0
    seed: int = 0
    started_s: float = 0.0
    got: list[int] = field(default_factory=list)
    vector: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    error: str = ""
    #: How long the request waited for a route (UNAVAILABLE: e.g. workers registering again
    #: after Redis came back empty), as an application retrying within its deadline does.
    route_wait_s: float = 0.0
    #: When its longest gap ended (s since the run began), to name the faults behind it.
    worst_gap_at: float = 0.0
    ended_s: float = 0.0


@dataclass
class Played:
    fault: Fault
    started_s: float
    outcome: str = "done"
    #: When it was over: the process restarted and SERVING again, continued, the hog gone.
    ended_s: float = 0.0


def _sampling(request: Request) -> Sampling:
    if request.kind == "seeded":
        return Sampling(max_new_tokens=request.new_tokens, temperature=0.8, top_k=20, seed=request.seed)
    return Sampling(max_new_tokens=request.new_tokens)


class Soak:
    def __init__(self, seed: int, duration_s: float, clients: int, work: Path) -> None:
        self.seed, self.duration_s, self.clients, self.work = seed, duration_s, clients, work
        self.requests: list[Request] = []
        self.played: list[Played] = []
        self.samples: dict[str, list[tuple[float, float, int]]] = {}
        self.restarts: Counter[str] = Counter()
        self._locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        # Requests draw from pools (mixed lengths): the whole model's answer to each is then
        # computed once, and a shorter request's tokens are a prefix of a longer one's.
        pools = random.Random(seed)
        self.prompts = [
            [pools.randrange(3, VOCAB) for _ in range(pools.randint(2, 12))] for _ in range(PROMPTS)
        ]
        self.seeds = [pools.randrange(1 << 30) for _ in range(SEEDS)]

    # -- the stack ------------------------------------------------------------------
    def start(self) -> None:
        self.llama = build_tiny("llama", self.work / "llama", num_hidden_layers=LAYERS)
        self.small = build_tiny("llama", self.work / "small", num_hidden_layers=2)
        self.bert = build_tiny("bert", self.work / "bert")
        self.stack = LocalStack(
            workers=4,
            adaptive=True,
            worker_args=["--torch-threads", "1", *TTL],
            orchestrator_args=[
                *("--control-interval-floor-s", "0.2", "--drain-deadline-s", "2"),
                *("--memory-file", str(self.work / "orchestrator-memory.json")),
            ],
        ).start()
        self._deploy("soak", self.llama, START)
        bert_units = num_units(Checkpoint(self.bert).config)
        self._deploy(
            "soak-embed",
            self.bert,
            [(0, bert_units // 2, "worker-1"), (bert_units // 2, bert_units, "worker-1")],
        )

    def _deploy(self, name: str, model_dir: Path, segments) -> None:
        policy = default_policy()
        policy.interval_s = 0.5
        policy.thresholds.l_max_ms = 1e9  # faults, not latency, drive these plans
        spec = common_pb2.Deployment(name=name, model_dir=str(model_dir), policy=policy)
        request = orchestrator_pb2.DeployRequest(
            deployment=spec,
            segments=[
                common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=n)
                for a, b, n in segments
            ],
        )
        self._orchestrator(lambda stub: stub.Deploy(request, timeout=120))

    def _orchestrator(self, call):
        with sync_channel(self.stack.orchestrator.address) as channel:
            return call(orchestrator_pb2_grpc.OrchestratorServiceStub(channel))

    def procs(self) -> dict:
        stack = self.stack
        named = {f"worker-{i}": p for i, p in enumerate(stack.worker_procs)}
        named.update(
            {name: getattr(stack, name) for name in ("orchestrator", "broadcaster", "monitor", "splitter")}
        )
        named["redis"] = stack.redis
        return named

    # -- resources ----------------------------------------------------------------------
    def _sample(self) -> None:
        now = time.monotonic() - self.t0
        for name, proc in self.procs().items():
            try:
                info = psutil.Process(proc.proc.pid)
                self.samples.setdefault(name, []).append(
                    (now, info.memory_info().rss / 2**20, info.num_fds())
                )
            except (psutil.Error, AttributeError):
                pass

    def _sampler(self) -> None:
        while not self._stop.wait(5.0):
            self._sample()

    # -- faults ---------------------------------------------------------------------------
    def targets(self) -> dict[str, list[str]]:
        workers = [f"worker-{i}" for i in range(4)]
        return {
            "worker_kill": workers,
            "worker_stop": workers,
            "control_kill": ["orchestrator", "broadcaster", "monitor", "splitter"],
            "redis_restart_empty": ["redis"],
            "redis_restart_data": ["redis"],
            "cpu_hog": ["host"],
            "plan_apply": ["soak"],
            "second_deployment": ["soak-2"],
        }

    def _play(self, fault: Fault) -> None:
        lock = self._locks.setdefault(fault.target, threading.Lock())
        with lock:
            played = Played(fault, time.monotonic() - self.t0)
            self.played.append(played)
            print(f"[{played.started_s:6.1f} s] {fault.kind} {fault.target} for {fault.hold_s:g} s; "
                  f"{len(self.requests)} requests so far", file=sys.stderr, flush=True)  # fmt: skip
            try:
                getattr(self, f"_{fault.kind}")(fault.target, fault.hold_s)
            except Exception as exc:  # recorded: an operator's call may be refused mid-chaos
                played.outcome = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                played.ended_s = time.monotonic() - self.t0

    def _restart(self, name: str, hold_s: float) -> None:
        proc = self.procs()[name]
        proc.kill()
        time.sleep(hold_s)
        proc.start().wait_health("SERVING", timeout=60)
        self.restarts[name] += 1

    def _worker_kill(self, target: str, hold_s: float) -> None:
        self._restart(target, hold_s)

    def _control_kill(self, target: str, hold_s: float) -> None:
        self._restart(target, hold_s)

    def _worker_stop(self, target: str, hold_s: float) -> None:
        pid = self.procs()[target].proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(hold_s)
        finally:
            os.kill(pid, signal.SIGCONT)

    def _redis_restart_empty(self, target: str, hold_s: float) -> None:
        self.stack.redis.stop()
        time.sleep(hold_s)
        self.stack.redis.start()
        self.restarts["redis"] += 1

    def _redis_restart_data(self, target: str, hold_s: float) -> None:
        """As a Redis with persistence restarts: its keys (and their TTLs) come back."""
        with redis.Redis.from_url(self.stack.redis.url) as store:
            kept = [(k, store.dump(k), store.pttl(k)) for k in store.scan_iter(count=1000)]
        self.stack.redis.stop()
        time.sleep(hold_s)
        self.stack.redis.start()
        self.restarts["redis"] += 1
        with redis.Redis.from_url(self.stack.redis.url) as store:
            for key, value, ttl in kept:
                if value is not None:
                    store.restore(key, max(ttl, 0), value, replace=True)

    def _cpu_hog(self, target: str, hold_s: float) -> None:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(hold_s)
        finally:
            hog.kill()
            hog.wait()

    def _plan_apply(self, target: str, hold_s: float) -> None:
        split = random.Random(self.seed + len(self.played)).choice(OPERATOR_SPLITS)
        request = orchestrator_pb2.ApplyPlanRequest(
            deployment=target,
            segments=[
                common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=n) for a, b, n in split
            ],
            reason="soak: an operator's plan apply",
        )
        self._orchestrator(lambda stub: stub.ApplyPlan(request, timeout=60))

    def _second_deployment(self, target: str, hold_s: float) -> None:
        self._deploy(target, self.small, [(0, 2, "worker-1"), (2, 4, "worker-1")])
        try:
            self._use_second(target, hold_s)
        finally:
            undeploy = orchestrator_pb2.UndeployRequest(deployment=target)
            self._orchestrator(lambda stub: stub.Undeploy(undeploy, timeout=30))

    def _use_second(self, target: str, hold_s: float) -> None:
        """Generations on the second deployment while it is up (a blocking client: this
        thread must not run a second asyncio loop beside the traffic's, gRPC's aio is one per process)."""
        deadline = time.monotonic() + hold_s
        with Client(self.stack.orchestrator.address, timeout_s=60, step_timeout_s=3.0) as client:
            while time.monotonic() < deadline:
                request = Request(-1, "greedy-small", [7, 8, 9], new_tokens=4)
                try:
                    route = client.route(target)
                except grpc.RpcError as exc:  # not routable yet (its workers loading): ask again
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    time.sleep(0.2)
                    continue
                try:
                    tokens = client.generate_ids(request.prompt, route, Sampling(4))
                    request.got = [t.token_id for t in tokens]
                except grpc.RpcError as exc:
                    request.error = _why(exc)
                self.requests.append(request)

    def _chaos(self, faults: list[Fault]) -> None:
        threads = []
        for fault in faults:
            delay = self.t0 + fault.at_s - time.monotonic()
            if self._stop.wait(max(0.0, delay)):
                break
            thread = threading.Thread(target=self._play, args=(fault,), daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(120)

    # -- clients ----------------------------------------------------------------------------
    async def _client(self, client: AsyncClient, index: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1000 + index)
        while time.monotonic() < deadline:
            roll = rng.random()
            kind = "embed" if roll < 0.2 else "seeded" if roll < 0.45 else "greedy"
            prompt = rng.choice(self.prompts)
            request = Request(index, kind, prompt, rng.randint(4, MAX_NEW), rng.choice(self.seeds))
            request.started_s = time.monotonic() - self.t0
            try:
                if kind == "embed":
                    route = await self._route(client, "soak-embed", request)
                    ids = torch.tensor([prompt])
                    vector = await client.embed_ids(ids, torch.ones_like(ids), route)
                    request.vector = vector[0].tolist()
                else:
                    route = await self._route(client, "soak", request)
                    last = time.perf_counter()
                    async for token in client.generate_ids(prompt, route, _sampling(request)):
                        now = time.perf_counter()
                        if request.got:
                            if not request.gaps or now - last > max(request.gaps):
                                request.worst_gap_at = time.monotonic() - self.t0
                            request.gaps.append(now - last)
                        last = now
                        request.got.append(token.token_id)
            except grpc.RpcError as exc:
                request.error = _why(exc)
            except Exception as exc:  # a bug: recorded, the client goes on
                request.error = f"{type(exc).__name__}: {exc}"[:300]
            request.ended_s = time.monotonic() - self.t0
            self.requests.append(request)

    async def _route(self, client: AsyncClient, name: str, request: Request):
        """The deployment's route, asked again while the orchestrator answers UNAVAILABLE
        (no route for now), for at most ROUTE_WAIT_S."""
        started = time.monotonic()
        while True:
            try:
                return await client.route(name)
            except grpc.RpcError as exc:
                waited = time.monotonic() - started
                if exc.code() != grpc.StatusCode.UNAVAILABLE or waited > ROUTE_WAIT_S:
                    raise
                request.route_wait_s = waited
                await asyncio.sleep(0.2)

    async def _traffic(self) -> None:
        deadline = self.t0 + self.duration_s
        async with AsyncClient(self.stack.orchestrator.address, timeout_s=60, step_timeout_s=3.0) as client:
            await asyncio.gather(*(self._client(client, i, deadline) for i in range(self.clients)))

    # -- the run --------------------------------------------------------------------------
    def run(self) -> dict:
        self.start()
        try:
            faults = schedule(self.seed, self.duration_s, self.targets(), mean_gap_s(self.duration_s))
            self.t0 = time.monotonic()
            self._sample()
            sampler = threading.Thread(target=self._sampler, daemon=True)
            chaos = threading.Thread(target=self._chaos, args=(faults,), daemon=True)
            sampler.start()
            chaos.start()
            asyncio.run(self._traffic())
            self._stop.set()
            chaos.join(180)
            services = [p for p in self.procs().values() if p is not self.stack.redis]
            wait_for(lambda: all(p.health() == "SERVING" for p in services), 60, 0.2, what="all serving")
            self._sample()
            events = self._orchestrator(
                lambda stub: stub.ListEvents(
                    orchestrator_pb2.ListEventsRequest(deployment="soak", limit=10000), timeout=30
                )
            ).events
        finally:
            self._stop.set()
            self.stack.stop()
        return self.report(faults, list(events))  # the references run with the stack gone

    def report(self, faults: list[Fault], events) -> dict:
        checked, wrong, wrong_requests = verify(self.requests, self.llama, self.bert, self.small)
        gaps = sorted(g for r in self.requests for g in r.gaps)
        # A session that gave up keeps why (its deadline, the deployment unknown), not the tally.
        failures = Counter(
            re.sub(r", after \d+ recoveries .*$", ")", r.error)[:240] for r in self.requests if r.error
        )
        growth = {}
        for name, series in self.samples.items():
            growth[name] = {
                "rss_mb_start": round(series[0][1], 1), "rss_mb_end": round(series[-1][1], 1),
                "rss_mb_max": round(max(s[1] for s in series), 1),
                "fds_start": series[0][2], "fds_end": series[-1][2], "fds_max": max(s[2] for s in series),
                "restarts": self.restarts[name],
            }  # fmt: skip
        outcomes = Counter(common_pb2.DecisionOutcome.Name(e.outcome) for e in events)
        triggers = Counter(t.name for e in events for t in e.triggers)
        return {
            "seed": self.seed,
            "duration_s": self.duration_s,
            "clients": self.clients,
            "faults": len(faults),
            "faults_by_kind": by_kind(faults),
            "faults_overlapping": overlapping(faults),
            "faults_not_done": [
                f"{p.fault.kind} {p.fault.target}: {p.outcome}" for p in self.played if p.outcome != "done"
            ],
            "requests": len(self.requests),
            "requests_by_kind": dict(Counter(r.kind for r in self.requests)),
            "tokens_checked": checked,
            "tokens_wrong": wrong,
            "requests_wrong": wrong_requests,
            "failed": sum(1 for r in self.requests if r.error),
            "failures_by_cause": dict(failures),
            "stall_max_ms": round(gaps[-1] * 1e3, 1) if gaps else None,
            "stall_p99_ms": round(gaps[int(0.99 * (len(gaps) - 1))] * 1e3, 1) if gaps else None,
            "gap_p50_ms": round(gaps[len(gaps) // 2] * 1e3, 2) if gaps else None,
            "stalls_longest": self.stalls(),
            "failures_during": self.failures_during(),
            "failures": self.failures(),
            "no_trusted_worker": [f"{a:.1f}-{b:.1f} s" for a, b in self.no_trusted_worker()],
            "route_waits": sum(1 for r in self.requests if r.route_wait_s),
            "route_wait_max_s": round(max((r.route_wait_s for r in self.requests), default=0.0), 2),
            "processes": growth,
            "decisions": {"outcomes": dict(outcomes), "triggers": dict(triggers), "events": len(events)},
            "load_average": [round(x, 2) for x in psutil.getloadavg()],
        }

    def _faults_between(self, start_s: float, end_s: float) -> str:
        """The faults that held during [start_s, end_s] (or ended less than
        AFTERMATH_S before it: recovery outlasts the fault), in a few words."""
        found = [
            f"{p.fault.kind} {p.fault.target} at {p.started_s:.0f} s"
            for p in self.played
            if p.started_s <= end_s and p.started_s + p.fault.hold_s + AFTERMATH_S >= start_s
        ]
        return ", ".join(found) or "no fault"

    def stalls(self, count: int = 6) -> list[str]:
        """The longest gaps between two tokens (one per moment), each with the faults around it."""
        worst = sorted((r for r in self.requests if r.gaps), key=lambda r: -max(r.gaps))
        lines, moments = [], []
        for request in worst:
            gap, at = max(request.gaps), request.worst_gap_at
            if any(abs(at - m) < 2.0 for m in moments):
                continue
            moments.append(at)
            lines.append(f"{gap:.1f} s ending at {at:.0f} s: {self._faults_between(at - gap, at)}")
            if len(lines) == count:
                break
        return lines

    def no_trusted_worker(self) -> list[tuple[float, float]]:
        """When both trusted workers (worker-0 and worker-1) were killed or stopped at once:
        the model's embedding and head had nowhere to run (unplaceable), from the second
        one's fault until the first one was back."""
        down: dict[str, list[tuple[float, float]]] = {TRUSTED[0]: [], TRUSTED[1]: []}
        for p in self.played:
            if p.fault.kind in ("worker_kill", "worker_stop") and p.fault.target in down:
                down[p.fault.target].append((p.started_s, p.ended_s or p.started_s))
        return sorted(
            (max(a0, a1), min(b0, b1))
            for a0, b0 in down[TRUSTED[0]]
            for a1, b1 in down[TRUSTED[1]]
            if max(a0, a1) < min(b0, b1)
        )

    def failures(self, count: int = 10) -> list[str]:
        """Each failed request (the first ``count``): when it ran, what it said, and whether
        the model was unplaceable (no trusted worker) while it ran."""
        windows = self.no_trusted_worker()
        lines = []
        for r in [r for r in self.requests if r.error][:count]:
            unplaceable = [f"{a:.0f}-{b:.0f} s" for a, b in windows if a < r.ended_s and b > r.started_s]
            where = f"no trusted worker {', '.join(unplaceable)}" if unplaceable else "always placeable"
            when = f"{r.started_s:.1f}-{r.ended_s:.1f} s"
            lines.append(f"client {r.client} {r.kind} {when} ({where}): {r.error}")
        return lines

    def failures_during(self) -> dict[str, int]:
        """Failed requests by the faults that held while they ran."""
        return dict(
            Counter(
                self._faults_between(r.started_s, r.ended_s) for r in self.requests if r.error
            ).most_common(8)
        )


#: How long after a fault ends its effects are still counted to it (a restarted worker
#: loading, sessions replaying).
AFTERMATH_S = 5.0


def mean_gap_s(duration_s: float) -> float:
    """Faults every 6 s on average; a short run (CI's) every few seconds, so it still sees
    several overlapping ones."""
    return min(6.0, max(2.0, (duration_s - 10) / 8))


def _why(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code is not None else 'UNKNOWN'}: {details}"[:1000]


def verify(requests: list[Request], llama: Path, bert: Path, small: Path) -> tuple[int, int, list[str]]:
    """(tokens and embeddings checked, wrong, a line per wrong request) against the whole models."""
    from transformers import AutoModel, AutoModelForCausalLM

    # One thread: the references are thousands of tiny forwards, and on a machine busy with
    # other work two spinning OpenMP threads made them several times slower (a 90-s CI soak
    # ran past its timeout in them, load average 8 on 2 cores).
    torch.set_num_threads(1)
    models = {"llama": AutoModelForCausalLM.from_pretrained(llama).eval(),
              "small": AutoModelForCausalLM.from_pretrained(small).eval(),
              "bert": AutoModel.from_pretrained(bert).eval()}  # fmt: skip
    checked = wrong = 0
    lines = []
    memo: dict[tuple, object] = {}
    for request in requests:
        if request.error:
            continue
        if request.kind == "embed":
            key = ("embed", tuple(request.prompt))
            if key not in memo:
                memo[key] = _pooled(models["bert"], request.prompt)
            want = memo[key]
            got = torch.tensor(request.vector)
            checked += 1
            if got.shape != want.shape or (got - want).abs().max().item() > EMBED_TOLERANCE:
                wrong += 1
                lines.append(f"client {request.client} embed {request.prompt}")
            continue
        model = models["small" if request.kind == "greedy-small" else "llama"]
        seed = request.seed if request.kind == "seeded" else 0
        key = (request.kind, tuple(request.prompt), seed)
        if key not in memo:
            memo[key] = _whole(model, request.prompt, seed, MAX_NEW if request.kind != "greedy-small" else 4)
        want = memo[key][: request.new_tokens]
        checked += len(want)
        bad = sum(a != b for a, b in zip(request.got, want, strict=False)) + abs(len(request.got) - len(want))
        if bad:
            wrong += bad
            lines.append(f"client {request.client} {request.kind} {request.prompt}: {request.got} != {want}")
    return checked, wrong, lines[:20]


@torch.no_grad()
def _whole(model, prompt: list[int], seed: int, new_tokens: int) -> list[int]:
    """The whole model's first ``new_tokens``: greedy (seed 0), or the worker's sampler with
    ``seed`` (temperature 0.8, top-k 20) over the whole model's logits; with its KV cache."""
    sampler = Sampler(temperature=0.8, top_k=20, seed=seed) if seed else Sampler()
    out: list[int] = []
    cache = DynamicCache(config=model.config)
    step = model(torch.tensor([prompt]), cache=cache, use_cache=True)
    for index in range(new_tokens):
        token, _ = sampler.choose(step.logits[0, -1], index)
        out.append(token)
        step = model(torch.tensor([[token]]), cache=cache, use_cache=True)
    return out


@torch.no_grad()
def _pooled(model, prompt: list[int]) -> torch.Tensor:
    ids = torch.tensor([prompt])
    hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0]
    return torch.nn.functional.normalize(hidden.mean(dim=0), dim=-1)


def markdown(report: dict) -> str:
    lines = [f"# Soak: seed {report['seed']}, {report['duration_s']:g} s, {report['clients']} clients", ""]
    keys = ("faults", "faults_by_kind", "faults_overlapping", "faults_not_done", "requests",
            "requests_by_kind", "tokens_checked", "tokens_wrong", "requests_wrong", "failed",
            "failures_by_cause", "failures_during", "failures", "no_trusted_worker", "stall_max_ms",
            "stall_p99_ms", "gap_p50_ms",
            "stalls_longest", "route_waits",
            "route_wait_max_s", "decisions",
            "load_average")  # fmt: skip
    for key in keys:
        lines.append(f"- **{key}**: {json.dumps(report[key])}")
    lines += [
        "",
        "| process | RSS MB start / end / max | fds start / end / max | restarts |",
        "|---|---|---|---|",
    ]
    for name, g in report["processes"].items():
        lines.append(f"| {name} | {g['rss_mb_start']} / {g['rss_mb_end']} / {g['rss_mb_max']} | "
                     f"{g['fds_start']} / {g['fds_end']} / {g['fds_max']} | {g['restarts']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def soak(seed: int, duration_s: float, clients: int, work: Path) -> dict:
    return Soak(seed, duration_s, clients, work).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--out", default="results/soak.md")
    args = parser.parse_args()
    import faulthandler
    import tempfile

    # A run that hangs tells where: every thread's stack, then every 60 s.
    faulthandler.dump_traceback_later(args.duration_s + 300, repeat=True)
    # SIGTERM stops the run like Ctrl-C: the stack's processes are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    report = soak(args.seed, args.duration_s, args.clients, Path(tempfile.mkdtemp(prefix="resplit-soak-")))
    report["wall_s"] = round(time.monotonic() - started, 1)
    text = markdown(report) + f"\nwall time {report['wall_s']} s\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    print(text)
    raise SystemExit(0 if report["tokens_wrong"] == 0 else 1)


if __name__ == "__main__":
    main()
