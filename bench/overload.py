"""Overload: offered load stepped up to 4x what the stack serves; served throughput,
latency of the admitted requests, how fast the rest are refused, memory.

`resplit up` with two workers serves a tiny Llama split in two; each worker admits at
most ``--max-sessions`` sessions (the cap under test: a session over it is refused
RESOURCE_EXHAUSTED with a retry hint, at once). First the unloaded maximum: that many
closed-loop clients, each starting its next request as the last ends (requests/s and
tokens/s: what the stack serves). Then open-loop arrivals (Poisson, seeded) at 0.5x,
1x, 2x and 4x that rate for ``--seconds`` each; a refused request is not retried (the
SDK's retry is off here) so each step shows what admission does alone. Every admitted
request's tokens are checked against the whole model.

Printed per step: offered and served requests/s, served tokens/s as a ratio to the
unloaded maximum (no collapse: ≥ 0.9), p50/p99 latency of admitted requests and its
ratio to the unloaded p99, refused requests and their p99 time to refusal, every
process's RSS growth since the start, and the load generator's own CPU share and event
loop lag (a generator that saturates its core measures itself, not the stack).

Usage: python bench/overload.py [--sessions 8] [--tokens 16] [--seconds 15] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import grpc
import psutil
from _stack import deploy
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM

from resplit.launcher import stack as stack_mod
from resplit.models import Checkpoint, num_units
from resplit.models.tiny import build_tiny
from resplit.sdk import AsyncClient, Sampling

STEPS = (0.5, 1.0, 2.0, 4.0)


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
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
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


async def run(address: str, security, args, model_dir: Path, stack) -> list[tuple]:
    whole = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    import torch

    prompts = [[3 + i, 17 + 2 * i, 9, 4 + i][: 2 + i % 3] for i in range(16)]
    expected = [
        whole.generate(torch.tensor([p]), max_new_tokens=args.tokens, do_sample=False, eos_token_id=None,
                       pad_token_id=0)[0, len(p):].tolist()
        for p in prompts
    ]  # fmt: skip
    rng = random.Random(args.seed)
    rows = []
    Generator.stack = {r.name: psutil.Process(r.pid) for r in stack.processes}
    async with AsyncClient(address, security=security, retry_overload=False) as client:
        route = await client.route("overload")
        warm = Load(client, route, prompts, expected, args.tokens)
        await warm.closed(args.sessions, 3.0)
        start_rss = rss_mb(stack)
        base = Load(client, route, prompts, expected, args.tokens)
        with Generator() as generator:
            wall = await base.closed(args.sessions, args.seconds)
        capacity = len(base.latencies) / wall
        rows.append(("unloaded max", None, base, wall, capacity, start_rss, rss_mb(stack)))
        rows[0][2].generator = generator
        for step in STEPS:
            load = Load(client, route, prompts, expected, args.tokens)
            with Generator() as load.generator:
                wall = await load.open(step * capacity, args.seconds, rng)
            rows.append((f"{step:g}x", step * capacity, load, wall, capacity, start_rss, rss_mb(stack)))
    return rows


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
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per request")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each step")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    console = Console(width=200)
    work = Path(tempfile.mkdtemp(prefix="resplit-overload-"))
    model_dir = build_tiny("llama", work / "llama")
    units = num_units(Checkpoint(model_dir).config)
    cut = units // 2
    extra = {"worker": ["--max-sessions", str(args.sessions)]}
    with console.status("starting the stack"):
        stack = stack_mod.up(work / "stack", workers=2, trusted=2, extra_args=extra)
    try:
        address = stack.by_name("orchestrator").address
        security = None  # the process default: the stack `up` started
        deploy(address, "overload", model_dir, [(0, cut, "worker-0"), (cut, units, "worker-1")])
        rows = asyncio.run(run(address, security, args, model_dir, stack))
    finally:
        stack_mod.down(work / "stack")
    base = rows[0][2]
    base_p99 = quantile(base.latencies, 0.99)
    table = Table(title=f"overload: 2-way split of a tiny Llama, --max-sessions {args.sessions} per worker, "
                        f"{args.tokens} tokens per request, {args.seconds:g} s per step")  # fmt: skip
    columns = ("offered", "offered req/s", "served req/s", "served / unloaded max", "admitted p50 / p99 ms",
               "p99 / unloaded p99", "refused", "refusal p99 ms", "RSS growth MB (max process)",
               "wrong", "generator CPU / loop lag p99 ms", "busiest processes (CPU)")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    for name, offered, load, wall, capacity, start, end in rows:
        served = len(load.latencies) / wall
        growth = max((end[k] - start[k], k) for k in start)
        table.add_row(
            name,
            "closed loop" if offered is None else f"{offered:.1f}",
            f"{served:.1f}",
            f"{served / capacity:.2f}",
            f"{quantile(load.latencies, 0.5) * 1e3:.0f} / {quantile(load.latencies, 0.99) * 1e3:.0f}",
            f"{quantile(load.latencies, 0.99) / base_p99:.2f}",
            str(len(load.refusals)),
            f"{quantile(load.refusals, 0.99) * 1e3:.1f}" if load.refusals else "-",
            f"{growth[0]:+.1f} ({growth[1]})",
            str(load.wrong),
            load.generator.describe() if load.generator is not None else "-",
            load.generator.busiest() if load.generator is not None else "-",
        )
        if load.other:
            console.print(f"{name}: {len(load.other)} other failures, e.g. {load.other[0]}")
    console.print(table)
    console.print(
        f"load average {' '.join(f'{x:.2f}' for x in psutil.getloadavg())} on {psutil.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
