"""100 streams that never read: every service's memory stays bounded and the other
clients are served as fast as without them (within 10 %).

The slow readers each open a session, send their prompt and then neither read nor
close (the worst of them: a finished session waits for a close that never comes, held
until --stalled-write-timeout-s). Four other clients generate meanwhile; their
throughput is measured in windows alternating without and with the 100 held streams, in
this one run, and compared best window with best window (the machine is shared: one
window can lose to a neighbour's burst either way). Their tokens are checked against the
whole model all along.
"""

from __future__ import annotations

import asyncio
import threading
import time

import psutil
import pytest
from support import LocalStack, greedy, metric_sum, spread, wait_for, worker_sessions

from resplit.models import Checkpoint, num_units
from resplit.rpc.channels import aio_channel
from resplit.sdk import AsyncClient
from resplit.sdk.exchange import GenerateExchange, Sampling
from resplit.v1 import worker_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.serial]  # see pyproject.toml

SLOW_READERS, SLOW_TOKENS = 100, 4
CLIENTS, CLIENT_TOKENS = 4, 16
#: Three rounds, best against best: with two, a fresh-clone run (2026-12-05 17:07 UTC) came
#: out at 0.899 (without 1054 / 1149 tok/s, with 1033 / 979) where runs alone gave 0.98-0.99.
WINDOW_S, ROUNDS = 2.5, 3
#: The bound this test states: 100 held streams grow no service's resident memory by more.
RSS_BOUND_MB = 64.0
#: Served throughput of the other clients with the slow readers held, at least this ratio.
THROUGHPUT_FLOOR = 0.9
RETURNED = 'resplit_worker_tokens_returned_total{link="network"}'


def _rss_mb(procs) -> dict[str, float]:
    return {name: psutil.Process(proc.proc.pid).memory_info().rss / 2**20 for name, proc in procs.items()}


class _Loop:
    """An event loop in a thread, for the slow readers and the measured clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _served(client: AsyncClient, route, prompts, expected, seconds: float) -> float:
    """Tokens per second the measured clients get over ``seconds`` (each checked)."""
    produced = 0
    deadline = time.monotonic() + seconds

    async def one(i: int) -> None:
        nonlocal produced
        while time.monotonic() < deadline:
            got = [t.token_id async for t in client.generate_ids(prompts[i], route, Sampling(CLIENT_TOKENS))]
            assert got == expected[i], f"client {i}: {got} != {expected[i]}"
            produced += len(got)

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(CLIENTS)))
    return produced / (time.monotonic() - started)


async def _open_slow(address: str, route) -> tuple[object, list]:
    channel = aio_channel(address)
    calls = []
    for i in range(SLOW_READERS):
        exchange = GenerateExchange(route, [3 + i % 50, 11, 7], Sampling(max_new_tokens=SLOW_TOKENS))
        call = worker_pb2_grpc.WorkerServiceStub(channel).Forward(timeout=600)
        for message in exchange.opening():
            await call.write(message)
        calls.append(call)  # never read, never closed
    return channel, calls


async def _close_slow(channel, calls) -> None:
    for call in calls:
        call.cancel()
    await channel.close()


def test_a_hundred_streams_that_never_read_cost_bounded_memory_and_no_throughput(tiny_models):
    model_dir = tiny_models["llama"]
    args = ["--torch-threads", "1", "--max-sessions", "256", "--stalled-write-timeout-s", "120"]
    local = LocalStack(workers=2, worker_args=args)
    loop = _Loop()
    try:
        local.start()
        local.deploy("slow", model_dir, spread(num_units(Checkpoint(model_dir).config), 2))
        procs = {
            **{f"worker-{i}": p for i, p in enumerate(local.worker_procs)},
            "orchestrator": local.orchestrator,
            "broadcaster": local.broadcaster,
            "redis": local.redis,
        }
        prompts = [[20 + i, 5, 9] for i in range(CLIENTS)]
        expected = [greedy(model_dir, p, CLIENT_TOKENS)[0] for p in prompts]
        client = AsyncClient(local.orchestrator.address)
        route = loop.run(client.route("slow"))
        loop.run(_served(client, route, prompts, expected, 1.0))  # warm-up
        before = _rss_mb(procs)
        without, held, peak = [], [], dict(before)
        for _ in range(ROUNDS):
            without.append(loop.run(_served(client, route, prompts, expected, WINDOW_S)))
            returned = metric_sum(local.worker_procs, RETURNED)
            channel, calls = loop.run(_open_slow(route.hops[0].address, route))
            # Every slow session has generated all its tokens and now only waits, held.
            wanted = returned + SLOW_READERS * SLOW_TOKENS
            wait_for(lambda w=wanted: metric_sum(local.worker_procs, RETURNED) >= w, 120, 0.2,
                     what="the slow readers' tokens generated")  # fmt: skip
            assert worker_sessions(local.worker_procs[0]) >= SLOW_READERS
            held.append(loop.run(_served(client, route, prompts, expected, WINDOW_S)))
            peak = {k: max(v, peak[k]) for k, v in _rss_mb(procs).items()}
            loop.run(_close_slow(channel, calls))
            wait_for(lambda: worker_sessions(local.worker_procs[0]) == 0, 30, what="the slow sessions closed")
        loop.run(client.close())
        growth = {name: peak[name] - before[name] for name in procs}
        ratio = max(held) / max(without)
        print(f"\nSLOW READERS: {SLOW_READERS} held; others' tok/s without {[f'{t:.0f}' for t in without]}, "
              f"with {[f'{t:.0f}' for t in held]}: ratio {ratio:.2f}; RSS growth MB "
              + ", ".join(f"{k} {v:+.1f}" for k, v in growth.items()))  # fmt: skip
        assert all(g <= RSS_BOUND_MB for g in growth.values()), growth
        assert ratio >= THROUGHPUT_FLOOR, (without, held)
    finally:
        loop.close()
        local.stop()
