"""Per-token cost of running a model split over three worker processes.

Builds a random Llama (fp32, hidden 1024) with as many blocks as make
whole-model decode take about 35 ms per token on this machine (``_sizing.py``
measures two sizes and fits the line; ``--blocks`` fixes the count instead),
then, alternating in every round:

* whole: transformers runs the whole model in this process (KV cache, greedy);
* segment code whole: resplit's segment code runs the whole model (one segment of
  every unit) in this process. Workers decode with a lean one-token step
  (``resplit/models/lean.py``, bitwise the same result) that transformers' module
  calls do not take, from weights in memory advised for 2 MiB pages
  (``resplit/models/arena.py``) where transformers leaves them in 4 KiB pages; this
  does both, so split / this is the split's cost with the same compute on both
  sides, and whole / this what the two save;
* split: `resplit up` starts Redis, the services and three workers; the model
  is deployed as S1 | S2 | S3 on worker-0 | worker-1 | worker-2 and the SDK
  streams greedy tokens over loopback gRPC, with the first hop running the
  decode loop (the default) and, for comparison, with the client sending
  every step (``server_loop=False``);
* paper placement: the same three segments as the paper's {S1, S2, S3} and the
  orchestrator's default deploy place them: S1 and S3 on one trusted worker
  (worker-0), S2 on worker-1; three segments and three network hops, two processes;
* 1 worker: the same model deployed as one segment on worker-1 (the data plane
  and a process boundary, no split);
* plain: the same three segments in three plain processes chained by pipes
  (``_plain_pipeline.py``): what splitting into processes costs on this host
  before any data plane. split / plain is the data plane's own share.

Also counted, from the workers' own counters (``resplit_worker_messages_sent_total``):
the data-plane messages per generated token, which on the ring (each hop forwards
its activation, the head returns the token straight to the first hop) are three
over three workers and two in the paper's placement, where the token never leaves
worker-0. Before the ring a token came back through every hop: four and three.

Workers and plain processes decode with the intra-op threads `resplit up` gives
three co-located workers (``--decode-threads``: one each on a host of fewer than
six cores, else all of them) and prefill with all; the whole model keeps torch's
default.

The ratio is the median over rounds of (mode median / whole median) within
a round, so drift of a shared machine's speed between rounds cancels out; the
range over rounds is printed next to it. Also printed: the overhead per token
and per network hop against the segment code whole (the same compute), and
prefill throughput for a 128-token prompt.
With ``--device cuda`` every mode runs its segments (or the whole model) on the
GPU: the same comparison where compute is fast and the data plane's fixed cost
per hop weighs more. A GPU decodes this model far below 20 ms per token, so give
``--blocks`` there; the sizing stops at 48 blocks.
Usage: python bench/pipeline_overhead.py [--tokens 20] [--rounds 24] [--target-ms 35 | --blocks N] [--secure]
       [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _plain_pipeline import PlainPipeline
from _sizing import model_for, segment_run, whole_run
from _stack import deploy, fixed_placement, median_range, worker_metrics
from rich.console import Console
from rich.progress import track
from rich.table import Table

from resplit.launcher import stack as stack_mod
from resplit.launcher.stack import host_cores, shared_decode_threads
from resplit.models import Checkpoint, load_segment
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client, Sampling

WINDOW_MS = (20.0, 50.0)  # the whole-model decode time the target ratio is stated for


def three_segments(blocks: int) -> list[tuple[int, int, str]]:
    """S1 | S2 | S3 over worker-0..2: units 0..blocks+1, the blocks shared out as evenly as they go."""
    first, second = 1 + blocks // 3, 1 + (2 * blocks) // 3
    return [(0, first, "worker-0"), (first, second, "worker-1"), (second, blocks + 2, "worker-2")]


def paper_placement(segments: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The same segments with S3 on S1's worker, as the paper and the default deploy place them."""
    first_node = segments[0][2]
    return [(a, b, first_node if i == len(segments) - 1 else n) for i, (a, b, n) in enumerate(segments)]


def messages_sent(stack) -> float:
    """Data-plane messages every worker has sent so far (its Prometheus counter)."""
    return sum(value for _, value in worker_metrics(stack, "resplit_worker_messages_sent_total "))


def split_run(client: Client, route, prompt: list[int], tokens: int) -> tuple[float, list[float], list[int]]:
    got = list(client.generate_ids(prompt, route, Sampling(max_new_tokens=tokens)))
    return got[0].latency_s, [t.latency_s for t in got[1:]], [t.token_id for t in got]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument(
        "--target-ms", type=float, default=35.0, help="whole-model decode ms/token to size the model for"
    )
    parser.add_argument("--blocks", type=int, help="use this many blocks (>= 3) instead of sizing")
    parser.add_argument("--secure", action="store_true", help="mutual TLS on every hop (default: plaintext)")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the whole model, the workers' segments and the plain processes run (default: cpu)",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the workers and the plain processes only, e.g. OMP_WAIT_POLICY=ACTIVE",
    )
    args = parser.parse_args()
    if args.blocks is not None and args.blocks < 3:
        parser.error(f"--blocks must be at least 3 (one per segment), got {args.blocks}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device on this machine")
    # This process's OpenMP read its settings when torch loaded: the whole model keeps torch's defaults.
    # The workers' --device, so that a CPU run on a GPU machine is a CPU run.
    worker_env = {"RESPLIT_DEVICE": args.device, **dict(item.split("=", 1) for item in args.worker_env)}
    console = Console(width=220)
    work = Path(tempfile.mkdtemp(prefix="resplit-bench-"))
    decode_prompt = [5 + (i * 7) % 300 for i in range(16)]
    with console.status("sizing the model to this machine"):
        blocks, model_dir, model = model_for(work, args.blocks, args.target_ms, decode_prompt, args.device)
    params = sum(p.numel() for p in model.parameters())
    prefill_prompt = [5 + (i * 13) % 300 for i in range(128)]
    with console.status("starting the stack"):
        # All three trusted, so the head may sit on worker-2: three distinct processes.
        # Plaintext by default: loopback, and the ratio is about the data path, not TLS.
        os.environ.update(worker_env)
        stack = stack_mod.up(
            work / "stack", workers=3, trusted=3, secure=args.secure, extra_args=fixed_placement()
        )
    # What `resplit up` gave each worker for decode steps; the plain processes do the same.
    decode_threads = int(os.environ.get("RESPLIT_DECODE_THREADS", shared_decode_threads(3, host_cores())))
    segments = three_segments(blocks)
    # The plain processes get the OpenMP settings a worker gives itself (services/worker/__main__.py).
    omp_default = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "3000"}
    plain_env = worker_env if omp_default.keys() & worker_env.keys() else {**omp_default, **worker_env}
    try:
        address = stack.by_name("orchestrator").address
        deploy(address, "bench", model_dir, segments)
        deploy(address, "bench-one", model_dir, [(0, blocks + 2, "worker-1")])
        deploy(address, "bench-paper", model_dir, paper_placement(segments))
        engine = load_segment(Checkpoint(model_dir), 0, blocks + 2, torch.device(args.device))
        modes = ("whole", "engine", "one", "plain", "split", "paper", "stepped")
        decode = {m: [] for m in modes}  # per round: that round's per-token latencies
        prefill = {m: [] for m in modes}
        with (
            Client(address) as looping,
            Client(address, server_loop=False) as stepped,
            PlainPipeline(
                model_dir, [(a, b) for a, b, _ in segments], plain_env, decode_threads, args.device
            ) as plain,
        ):
            route, one, paper = (looping.route(n) for n in ("bench", "bench-one", "bench-paper"))
            runs = {
                "whole": lambda prompt, n: whole_run(model, prompt, n),
                "engine": lambda prompt, n: segment_run(engine, prompt, n),
                "one": lambda prompt, n: split_run(looping, one, prompt, n),
                "plain": plain.generate,
                "split": lambda prompt, n: split_run(looping, route, prompt, n),
                "paper": lambda prompt, n: split_run(looping, paper, prompt, n),
                "stepped": lambda prompt, n: split_run(stepped, route, prompt, n),
            }
            for run in runs.values():  # warm-up
                run(decode_prompt, 4)
            messages = {}
            for mode in ("split", "paper", "one"):  # per generated token, prefill's step included
                before = messages_sent(stack)
                runs[mode](decode_prompt, args.tokens)
                messages[mode] = (messages_sent(stack) - before) / args.tokens
            for _ in track(range(args.rounds), description="rounds", console=console, transient=True):
                ids = {}
                for mode, run in runs.items():
                    _, steps, ids[mode] = run(decode_prompt, args.tokens)
                    decode[mode].append(steps)
                if len({tuple(i) for i in ids.values()}) != 1:
                    raise SystemExit(f"the modes generated different tokens: {ids}")
                for mode, run in runs.items():
                    prefill[mode].append(run(prefill_prompt, 1)[0])
            ping = _ping(route)
    finally:
        stack_mod.down(work / "stack")
    medians = {m: [statistics.median(r) * 1e3 for r in decode[m]] for m in modes}

    def ratios(mode: str, base: str) -> list[float]:
        return [s / w for s, w in zip(medians[mode], medians[base], strict=True)]

    hops = 3  # client -> worker-0 -> worker-1 -> worker-2 (or -0), and the token back to worker-0
    columns = {
        "whole": "whole (1 process)",
        "engine": "segment code whole",
        "one": "resplit, 1 worker",
        "plain": "plain, 3 processes",
        "split": "resplit, 3 workers",
        "paper": "resplit, S1+S3 on worker-0",
        "stepped": "resplit, 3 workers, client-stepped",
    }
    split_blocks = "+".join(str(b - a - (a == 0) - (b == blocks + 2)) for a, b, _ in segments)
    table = Table(
        title=f"3-segment split vs whole model, {params / 1e6:.0f} M-parameter Llama, {blocks} blocks "
        f"split {split_blocks} (fp32, {_device_name(args.device)})"
    )
    table.add_column("metric")
    for title in columns.values():
        table.add_column(title, justify="right")
    table.add_row("decode, median ms/token", *(f"{statistics.median(medians[m]):.2f}" for m in modes))
    table.add_row(
        "/ whole, median of rounds (range)", "1", *(median_range(ratios(m, "whole")) for m in modes[1:])
    )
    table.add_row(
        "/ segment code whole (same compute)",
        "",
        "1",
        *(median_range(ratios(m, "engine")) for m in modes[2:]),
    )
    table.add_row(
        "/ plain (data plane's share)",
        "",
        "",
        "",
        "1",
        *(median_range(ratios(m, "plain")) for m in ("split", "paper", "stepped")),
    )
    # Against the same compute code: what the split itself adds per token and per hop.
    overhead = {
        m: statistics.median(a - b for a, b in zip(medians[m], medians["engine"], strict=True)) for m in modes
    }
    table.add_row(
        "overhead per token vs segment code whole, ms", "", "", *(f"{overhead[m]:.2f}" for m in modes[2:])
    )
    table.add_row(
        f"overhead per network hop ({hops} hops), ms",
        "",
        "",
        "",
        "",
        *(f"{overhead[m] / hops:.2f}" for m in ("split", "paper", "stepped")),
    )
    rates = {m: len(prefill_prompt) / statistics.median(prefill[m]) for m in modes}
    table.add_row(
        "prefill (128 tokens), tokens/s",
        f"{rates['whole']:.0f}",
        *(f"{rates[m]:.0f} ({rates[m] / rates['whole']:.2f}x)" for m in modes[1:]),
    )
    table.add_row(
        "data-plane messages per token (workers' counters)",
        "",
        "",
        f"{messages['one']:.2f}",
        "",
        f"{messages['split']:.2f}",
        f"{messages['paper']:.2f}",
        "",
    )
    table.add_row("gRPC Ping round trip to worker-1, median ms", "", "", "", "", f"{ping:.2f}", "", "")
    console.print(table)
    console.print(
        f"{args.rounds} rounds x {args.tokens} tokens, {'mutual TLS' if args.secure else 'plaintext'}, "
        f"worker environment {worker_env} (OpenMP as the workers set it unless named); "
        f"workers and plain processes decode with {decode_threads or 'all'} intra-op thread(s) "
        f"(prefill with all; the whole model with {torch.get_num_threads()}); "
        "the same greedy tokens in every mode and round; target ratio split / whole <= 1.10 "
        "(whole: transformers in one process; the segment-code row compares the same compute code)"
    )
    whole_ms = statistics.median(medians["whole"])
    sized = f"--blocks {args.blocks}" if args.blocks else f"sized for {args.target_ms:.0f} ms/token"
    inside = WINDOW_MS[0] <= whole_ms <= WINDOW_MS[1]
    console.print(
        f"model: {blocks} blocks ({sized}); whole-model decode {whole_ms:.1f} ms/token, "
        + ("inside " if inside else "[bold red]outside[/] ")
        + f"the {WINDOW_MS[0]:.0f}-{WINDOW_MS[1]:.0f} ms the target is stated for"
    )


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "CPU"


def _ping(route) -> float:
    from resplit.v1 import worker_pb2, worker_pb2_grpc

    with sync_channel(route.hops[1].address) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        samples = []
        for _ in range(200):
            start = time.perf_counter()
            stub.Ping(worker_pb2.PingRequest(payload=b"x" * 64), timeout=5)
            samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


if __name__ == "__main__":
    main()
