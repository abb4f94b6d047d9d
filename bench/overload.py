"""Overload: offered load stepped up to 4x what the stack serves; served throughput,
latency of the admitted requests, how fast the rest are refused, memory.

`resplit up` with two workers serves a tiny Llama split in two; each worker admits at
most ``--max-sessions`` sessions (the cap under test: a session over it waits in the
worker's room of ``--waiting`` for up to ``--wait-ms`` for a slot, else is refused
RESOURCE_EXHAUSTED with a retry hint). First the unloaded maximum: that many
closed-loop clients, each starting its next request as the last ends (requests/s and
tokens/s: what the stack serves). Then open-loop arrivals (Poisson, seeded) at 0.5x,
1x, 2x and 4x that rate for ``--seconds`` each; a refused request is not retried (the
SDK's retry is off here) so each step shows what admission does alone; the SDK's
client-side throttling (``--throttle-k``, its default 2; 0: off) refuses part of them
in the client once the first hop refuses most, and the table counts those apart. Every
admitted request's tokens are checked against the whole model.

Printed per step: offered and served requests/s, served tokens/s as a ratio to the
unloaded maximum (no collapse: ≥ 0.9), p50/p99 latency of admitted requests and its
ratio to the unloaded p99, refused requests and their p99 time to refusal, and the
load generator's own CPU share and event loop lag (a generator that saturates its core
measures itself, not the stack); then the largest RSS growth of any process over the run,
against a stated bound (``--rss-bound-mb``, RSS_BOUND_MB).

Each round measures the unloaded maximum again, then every step against it; the table
gives each step's ratio over the rounds (median and range), so that a VM whose speed
drifts from minute to minute compares loads, not moments. The orchestrator serves the
plan as deployed (``--no-adaptive``): this measures admission, not re-planning.

Usage: python bench/overload.py [--sessions 8] [--tokens 16] [--seconds 8] [--rounds 3]
       [--steps 0.5 1 2 4] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from _stack import deploy, fixed_placement, worker_metrics
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM

from resplit.launcher import stack as stack_mod
from resplit.models import Checkpoint, num_units
from resplit.models.tiny import build_tiny
from resplit.sdk import AsyncClient, Sampling
from resplit.sdk.throttle import Throttled

STEPS = (0.5, 1.0, 2.0, 4.0)
#: The most any process of the stack may grow over a run, whatever the offered load: what the
#: caps let in is bounded (--max-sessions plus the waiting room per worker, each with a tiny
#: model's KV cache under 0.1 MB and a stream's read-ahead of --max-queued-requests), so
#: growth past this is a leak or an unbounded buffer. Measured: +6 to +8 MB at 4x.
RSS_BOUND_MB = 64.0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Load:
    """Requests against one deployment, recording latencies, refusals and tokens."""

    def __init__(self, client: AsyncClient, route, prompts: list[list[int]], expected, tokens: int) -> None:
        self.client, self.route, self.prompts, self.expected, self.tokens = (
            client, route, prompts, expected, tokens)  # fmt: skip
        self.latencies: list[float] = []
        self.refusals: list[float] = []
        self.throttled = 0  # refused by the client itself (sdk/throttle.py)
        self.other: list[str] = []
        self.wrong = 0
        self.generator: Generator | None = None

    async def one(self, i: int) -> None:
        started = time.perf_counter()
        prompt = self.prompts[i % len(self.prompts)]
        try:
            got = [
                t.token_id async for t in self.client.generate_ids(prompt, self.route, Sampling(self.tokens))
            ]
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            if isinstance(exc, Throttled):
                self.throttled += 1
            elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.refusals.append(time.perf_counter() - started)
            else:
                self.other.append(f"{code}: {exc.details() if hasattr(exc, 'details') else exc}"[:200])
            return
        self.latencies.append(time.perf_counter() - started)
        self.wrong += got != self.expected[i % len(self.prompts)]

    async def closed(self, clients: int, seconds: float) -> float:
        """``clients`` back-to-back loops for ``seconds``; the wall time."""
        deadline = time.monotonic() + seconds
        started = time.perf_counter()

        async def loop(c: int) -> None:
            n = c
            while time.monotonic() < deadline:
                await self.one(n)
                n += clients

        await asyncio.gather(*(loop(c) for c in range(clients)))
        return time.perf_counter() - started

    async def open(self, rate: float, seconds: float, rng: random.Random) -> float:
        """Poisson arrivals at ``rate``/s for ``seconds``; the wall time until all ended."""
        started = time.perf_counter()
        tasks, n, at = [], 0, 0.0
        while at < seconds:
            delay = started + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(self.one(n)))
            n += 1
            at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
        return time.perf_counter() - started


def rss_mb(stack) -> dict[str, float]:
    return {r.name: psutil.Process(r.pid).memory_info().rss / 2**20 for r in stack.processes}


@dataclass
class Window:
    """One measured window: a step's load and the unloaded maximum of the same round."""

    step: str
    offered: float | None  # requests/s (None: the closed loop)
    load: Load
    wall: float
    capacity: float  # this round's unloaded maximum, requests/s

    @property
    def ratio(self) -> float:
        return len(self.load.latencies) / self.wall / self.capacity


async def run(address: str, security, args, model_dir: Path, stack) -> tuple[list[Window], dict, dict]:
    """``args.rounds`` rounds of: the unloaded maximum, then each step against it. Why rounds:
    this VM's unloaded maximum swung from 44 to 65 requests/s between runs minutes apart
    (2026-12-05 15:06 UTC), so one window each compares moments as much as loads."""
    whole = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    import torch

    prompts = [[3 + i, 17 + 2 * i, 9, 4 + i][: 2 + i % 3] for i in range(16)]
    expected = [
        whole.generate(torch.tensor([p]), max_new_tokens=args.tokens, do_sample=False, eos_token_id=None,
                       pad_token_id=0)[0, len(p):].tolist()
        for p in prompts
    ]  # fmt: skip
    rng = random.Random(args.seed)
    windows: list[Window] = []
    Generator.stack = {r.name: psutil.Process(r.pid) for r in stack.processes}

    def client() -> AsyncClient:
        # A client per window: its throttle learns from nothing there, not from the window
        # before (whose overload would refuse the next unloaded window's requests at first).
        return AsyncClient(address, security=security, retry_overload=False, throttle_k=args.throttle_k)

    async with client() as warming:
        route = await warming.route("overload")
        await Load(warming, route, prompts, expected, args.tokens).closed(args.sessions, 3.0)
    start_rss = rss_mb(stack)
    for _ in range(args.rounds):
        async with client() as each:
            base = Load(each, route, prompts, expected, args.tokens)
            with Generator() as base.generator:
                wall = await base.closed(args.sessions, args.seconds)
        capacity = len(base.latencies) / wall
        windows.append(Window("unloaded max", None, base, wall, capacity))
        for step in args.steps:
            async with client() as each:
                load = Load(each, route, prompts, expected, args.tokens)
                with Generator() as load.generator:
                    wall = await load.open(step * capacity, args.seconds, rng)
            windows.append(Window(f"{step:g}x", step * capacity, load, wall, capacity))
    return windows, start_rss, rss_mb(stack)


class Generator:
    """This process's own load while it generates a step: its CPU share and its event
    loop's lag (how late a 10-ms sleep wakes). A load generator that saturates a core
    or lags by seconds measures itself, not the stack: the table says so per step."""

    #: The stack's processes (name -> psutil.Process), for the busiest's CPU share.
    stack: dict[str, psutil.Process] = {}

    def __enter__(self) -> Generator:
        self.process = psutil.Process()
        self.cpu0, self.t0 = sum(self.process.cpu_times()[:2]), time.perf_counter()
        self.stack0 = {n: sum(p.cpu_times()[:2]) for n, p in self.stack.items()}
        self.lags: list[float] = []
        self._task = asyncio.ensure_future(self._watch())
        return self

    async def _watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            self.lags.append(time.perf_counter() - before - 0.01)

    def __exit__(self, *exc) -> None:
        self._task.cancel()
        wall = time.perf_counter() - self.t0
        self.cpu = (sum(self.process.cpu_times()[:2]) - self.cpu0) / wall
        self.stack_cpu = {n: (sum(p.cpu_times()[:2]) - self.stack0[n]) / wall for n, p in self.stack.items()}

    def describe(self) -> str:
        return f"{self.cpu * 100:.0f} % / {quantile(self.lags, 0.99) * 1e3:.0f}"

    def busiest(self) -> str:
        top = sorted(self.stack_cpu.items(), key=lambda item: -item[1])[:3]
        return ", ".join(f"{n} {c * 100:.0f} %" for n, c in top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8, help="--max-sessions of each worker")
    parser.add_argument("--waiting", type=int, default=8, help="--max-waiting-sessions of each worker")
    parser.add_argument("--wait-ms", type=int, default=250, help="--admission-wait-ms of each worker")
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per request")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each window")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of unloaded + every step")
    parser.add_argument("--steps", type=float, nargs="+", default=list(STEPS), help="offered multiples")
    parser.add_argument(
        "--throttle-k",
        type=float,
        default=2.0,
        help="the SDK's client-side throttling (0: every request sent)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rss-bound-mb",
        type=float,
        default=RSS_BOUND_MB,
        help="the most any process may grow over the run (see RSS_BOUND_MB)",
    )
    args = parser.parse_args()
    console = Console(width=200)
    work = Path(tempfile.mkdtemp(prefix="resplit-overload-"))
    model_dir = build_tiny("llama", work / "llama")
    units = num_units(Checkpoint(model_dir).config)
    cut = units // 2
    extra = fixed_placement(
        [
            *("--max-sessions", str(args.sessions), "--max-waiting-sessions", str(args.waiting)),
            *("--admission-wait-ms", str(args.wait_ms)),
        ]
    )
    with console.status("starting the stack"):
        stack = stack_mod.up(work / "stack", workers=2, trusted=2, extra_args=extra)
    try:
        address = stack.by_name("orchestrator").address
        security = None  # the process default: the stack `up` started
        deploy(address, "overload", model_dir, [(0, cut, "worker-0"), (cut, units, "worker-1")])
        windows, start_rss, end_rss = asyncio.run(run(address, security, args, model_dir, stack))
        admissions = {
            r.name: dict(worker_metrics(stack, "resplit_worker_admissions_total", r.name))
            for r in stack.processes
            if r.kind == "worker"
        }
    finally:
        stack_mod.down(work / "stack")
    console.print(table(windows, args))
    for name, counts in admissions.items():
        shown = ", ".join(f"{k} {v:.0f}" for k, v in counts.items())
        console.print(f"{name} admissions over the run: {shown}")
    growth, name = max((end_rss[k] - start_rss[k], k) for k in start_rss)
    verdict = "within" if growth <= args.rss_bound_mb else "OVER"
    console.print(
        f"RSS growth over the run: {growth:+.1f} MB ({name}, the most of any process): "
        f"{verdict} the stated bound of {args.rss_bound_mb:g} MB"
    )
    console.print(
        f"load average {' '.join(f'{x:.2f}' for x in psutil.getloadavg())} on {psutil.cpu_count()} cores"
    )


def table(windows: list[Window], args) -> Table:
    """A row per step over the rounds: each round's served / its own unloaded maximum (the
    median, and the range), latencies pooled over the rounds' admitted requests."""
    title = (f"overload: 2-way split of a tiny Llama, --max-sessions {args.sessions} per worker, "
             f"{args.tokens} tokens per request, {args.rounds} rounds of {args.seconds:g} s, "
             f"client throttle k={args.throttle_k:g}")  # fmt: skip
    result = Table(title=title)
    columns = ("offered", "offered req/s", "served req/s", "served / unloaded max (range)",
               "admitted p50 / p99 ms", "p99 / unloaded p99", "refused by the first hop", "refusal p99 ms",
               "refused by the client", "wrong",
               "generator CPU / loop lag p99 ms", "busiest processes (CPU)")  # fmt: skip
    for column in columns:
        result.add_column(column, justify="right")
    by_step: dict[str, list[Window]] = {}
    for window in windows:
        by_step.setdefault(window.step, []).append(window)
    base_p99 = quantile([x for w in by_step["unloaded max"] for x in w.load.latencies], 0.99)
    for name, group in by_step.items():
        latencies = [x for w in group for x in w.load.latencies]
        refusals = [x for w in group for x in w.load.refusals]
        ratios = [w.ratio for w in group]
        offered = [w.offered for w in group if w.offered is not None]
        last = group[-1].load.generator
        for w in group:
            if w.load.other:
                result.caption = f"{name}: {len(w.load.other)} other failures, e.g. {w.load.other[0]}"
        result.add_row(
            name,
            f"{statistics.median(offered):.1f}" if offered else "closed loop",
            f"{statistics.median(len(w.load.latencies) / w.wall for w in group):.1f}",
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})",
            f"{quantile(latencies, 0.5) * 1e3:.0f} / {quantile(latencies, 0.99) * 1e3:.0f}",
            f"{quantile(latencies, 0.99) / base_p99:.2f}",
            str(len(refusals)),
            f"{quantile(refusals, 0.99) * 1e3:.1f}" if refusals else "-",
            str(sum(w.load.throttled for w in group)),
            str(sum(w.load.wrong for w in group)),
            last.describe() if last is not None else "-",
            last.busiest() if last is not None else "-",
        )
    return result


if __name__ == "__main__":
    main()
