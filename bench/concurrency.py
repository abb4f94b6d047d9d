"""What many concurrent sessions get from a split: throughput, per-token latency, TTFT.

The benchmark Llama of ``pipeline_overhead.py`` (fp32, hidden 1024, sized to about
35 ms per whole-model decode step on this machine; ``--blocks`` fixes it) is served
by `resplit up` with three workers, split S1 | S2 | S3 over them and, for
comparison, whole on one worker. For each concurrency N (1, 4, 16, 64 by
default), N client threads (one ``Client`` each, as users would) start together
and generate ``--tokens`` greedy tokens each from prompts of the same length;
the reference is transformers' batched ``generate`` at batch N in this process,
run in the same round. Workers run the decode steps of all sessions on a segment
that are ready at once as one batched forward (services/worker/core/batch.py).

Printed per N: aggregate tokens/s of each mode and its ratio to the split at
N = 1 and to transformers at the same N; the split's per-session per-token
latency p50/p95 and its time to first token p50/p95; and the largest batch the
workers formed. Every session's tokens are checked against transformers' for
its prompt.

Then the prefill gap: ``--decoders`` sessions decode through the split while one
more session arrives with a ``--long-prompt``-token prompt; printed are the
largest gap between two tokens of a decoding session while that prompt is
prefilled, and the prompt's own full-prefill time (its TTFT alone). A prefill
that is not cut into chunks holds every decoding session for about its whole
length at each hop.

Usage: python bench/concurrency.py [--sessions 1 4 16 64] [--tokens 32] [--blocks N | --target-ms 35]
       [--long-prompt 2048] [--decoders 15] [--worker-arg=--torch-threads=1 ...]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from _sizing import model_for
from _stack import deploy, fixed_placement, worker_metrics
from rich.console import Console
from rich.table import Table

from resplit.launcher import stack as stack_mod
from resplit.sdk import Client, Sampling

PROMPT_TOKENS = 16


def prompts(count: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(count)
    return [torch.randint(4, 300, (PROMPT_TOKENS,), generator=generator).tolist() for _ in range(count)]


def reference(model, batch: list[list[int]], tokens: int) -> tuple[float, list[list[int]]]:
    """(seconds, generated ids per row) of transformers' batched greedy generate."""
    with torch.inference_mode():
        started = time.perf_counter()
        out = model.generate(
            torch.tensor(batch),
            attention_mask=torch.ones(len(batch), PROMPT_TOKENS, dtype=torch.long),
            max_new_tokens=tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
        seconds = time.perf_counter() - started
    return seconds, out[:, PROMPT_TOKENS:].tolist()


def served(address: str, deployment: str, batch: list[list[int]], tokens: int):
    """(seconds, ids per session, per-token latencies, TTFTs) of len(batch) concurrent sessions."""
    start = threading.Barrier(len(batch))

    def session(prompt: list[int]):
        with Client(address) as client:
            route = client.route(deployment)
            start.wait(60)
            began = time.perf_counter()
            got = list(client.generate_ids(prompt, route, Sampling(max_new_tokens=tokens)))
            return began, [t.token_id for t in got], [t.latency_s for t in got[1:]], got[0].latency_s

    with ThreadPoolExecutor(len(batch)) as pool:
        futures = [pool.submit(session, p) for p in batch]
        results = [f.result() for f in futures]
    first = min(r[0] for r in results)
    last = max(r[0] + r[3] + sum(r[2]) for r in results)
    per_token = [x for r in results for x in r[2]]
    return last - first, [r[1] for r in results], per_token, [r[3] for r in results]


def largest_batch(stack) -> int:
    """The largest bucket of resplit_worker_batch_rows any worker filled so far."""
    # Cumulative buckets summed over workers: the sum grows at a bound exactly where some
    # worker ran a forward of more rows than the bound before it.
    counts: dict[float, float] = {}
    for labels, value in worker_metrics(stack, "resplit_worker_batch_rows_bucket{"):
        bound = float(labels.split('le="', 1)[1].split('"', 1)[0])
        counts[bound] = counts.get(bound, 0.0) + value
    largest, previous = 0, 0.0
    for bound in sorted(counts):
        if counts[bound] > previous and bound != float("inf"):
            largest = int(bound)
        previous = counts[bound]
    return largest


def prefill_gap(address: str, deployment: str, long_prompt: int, decoders: int) -> tuple[float, float]:
    """(largest gap between two tokens of a decoding session while a ``long_prompt``-token
    prompt is prefilled among ``decoders`` decoding sessions, that prompt's TTFT alone), s."""
    generator = torch.Generator().manual_seed(long_prompt)
    long = torch.randint(4, 300, (long_prompt,), generator=generator).tolist()
    with Client(address) as client:
        route = client.route(deployment)
        alone = next(iter(client.generate_ids(long, route, Sampling(max_new_tokens=1)))).latency_s
    running = threading.Barrier(decoders + 1)
    starts = prompts(decoders)
    stamps: list[list[float]] = [[] for _ in range(decoders)]

    def decode(i: int) -> None:
        with Client(address) as client:
            route = client.route(deployment)
            tokens = client.generate_ids(starts[i], route, Sampling(max_new_tokens=10_000))
            for n, _ in enumerate(tokens):
                stamps[i].append(time.perf_counter())
                if n == 3:
                    running.wait(120)
                if done.is_set():
                    return

    done = threading.Event()
    with ThreadPoolExecutor(decoders) as pool:
        futures = [pool.submit(decode, i) for i in range(decoders)]
        running.wait(120)
        with Client(address) as client:
            route = client.route(deployment)
            started = time.perf_counter()
            next(iter(client.generate_ids(long, route, Sampling(max_new_tokens=1))))
            prefilled = time.perf_counter()
        time.sleep(alone / 4)  # let every decoder show its next token
        done.set()
        for future in futures:
            future.result()
    gaps = [
        b - a for times in stamps for a, b in itertools.pairwise(times) if b >= started and a <= prefilled
    ]
    return max(gaps), alone


def quantile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]
        if len(values) > 1
        else values[0]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--target-ms", type=float, default=35.0)
    parser.add_argument("--blocks", type=int, help="use this many blocks (>= 3) instead of sizing")
    parser.add_argument(
        "--long-prompt", type=int, default=2048, help="tokens of the prompt that arrives (0: skip)"
    )
    parser.add_argument("--decoders", type=int, default=15, help="sessions decoding while it is prefilled")
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        help="a flag for every worker, e.g. --worker-arg=--torch-threads=1",
    )
    args = parser.parse_args()
    console = Console(width=200)
    work = Path(tempfile.mkdtemp(prefix="resplit-concurrency-"))
    with console.status("sizing the model to this machine"):
        blocks, model_dir, model = model_for(work, args.blocks, args.target_ms, prompts(1)[0])
    # The clients' receipt times are the per-token latencies: a full collection of this
    # process's torch and transformers objects (a few hundred ms) would show as the stack's.
    gc.freeze()
    first, second = 1 + blocks // 3, 1 + (2 * blocks) // 3
    split = [(0, first, "worker-0"), (first, second, "worker-1"), (second, blocks + 2, "worker-2")]
    rows = []
    with console.status("starting the stack"):
        stack = stack_mod.up(
            work / "stack", workers=3, trusted=3, extra_args=fixed_placement(args.worker_arg)
        )
    try:
        address = stack.by_name("orchestrator").address
        deploy(address, "split", model_dir, split)
        deploy(address, "one", model_dir, [(0, blocks + 2, "worker-1")])
        served(address, "split", prompts(2), 4)  # warm-up
        served(address, "one", prompts(2), 4)
        for count in args.sessions:
            batch = prompts(count)
            with console.status(f"{count} sessions"):
                ref_s, expected = reference(model, batch, args.tokens)
                split_s, split_ids, per_token, ttft = served(address, "split", batch, args.tokens)
                one_s, one_ids, _, _ = served(address, "one", batch, args.tokens)
            if split_ids != expected or one_ids != expected:
                raise SystemExit(f"{count} sessions: tokens differ from transformers' batched generate")
            total = count * args.tokens
            rows.append((count, total / split_s, total / one_s, total / ref_s, per_token, ttft))
        biggest = largest_batch(stack)
        gap = prefill_gap(address, "split", args.long_prompt, args.decoders) if args.long_prompt else None
    finally:
        stack_mod.down(work / "stack")
    solo = rows[0][1]
    table = Table(
        title=f"{len(split)}-way split vs one worker vs transformers batched, {blocks}-block Llama (fp32)"
    )
    for column in (
        "sessions",
        "split tok/s",
        "/ split at 1",
        "/ transformers",
        "one worker tok/s",
        "transformers batched tok/s",
        "per-token p50 / p95 ms",
        "TTFT p50 / p95 ms",
    ):
        table.add_column(column, justify="right")
    for count, split_rate, one_rate, ref_rate, per_token, ttft in rows:
        table.add_row(
            str(count),
            f"{split_rate:.1f}",
            f"{split_rate / solo:.2f}x",
            f"{split_rate / ref_rate:.2f}x",
            f"{one_rate:.1f}",
            f"{ref_rate:.1f}",
            f"{quantile(per_token, 0.5) * 1e3:.1f} / {quantile(per_token, 0.95) * 1e3:.1f}",
            f"{quantile(ttft, 0.5) * 1e3:.0f} / {quantile(ttft, 0.95) * 1e3:.0f}",
        )
    console.print(table)
    console.print(
        f"{args.tokens} tokens per session from {PROMPT_TOKENS}-token prompts; the same greedy tokens as "
        f"transformers in every mode; the largest batched forward any worker ran: {biggest} rows"
    )
    if gap is not None:
        largest, alone = gap
        console.print(
            f"prefill gap: a {args.long_prompt}-token prompt among {args.decoders} decoding sessions "
            f"(split): their largest gap between two tokens {largest * 1e3:.0f} ms; the prompt's own "
            f"full prefill alone {alone * 1e3:.0f} ms ({largest / alone:.2f}x)"
        )


if __name__ == "__main__":
    main()
