"""What a split's idle time costs each hop's decode step, by weight format, without any network.

Why: over three workers on one host, each worker computes a third of a token and then
waits for the two others: its next step starts after an idle gap. Whole, in one process,
the same blocks run back to back. Here the benchmark's 15-block Llama is cut into the
split's three segments, all in this process, and decoded greedily with, before each
segment's step, either

* nothing (back to back: the whole model's pattern);
* a busy gap of ``--gap-ms`` (this thread spins: no core sleeps, no other process wakes,
  so neither CPU idle states nor thread wake-ups are in it);
* this process reading ``--evict-mb`` of other memory (what the other workers' weights do
  to the shared last-level cache on a real host).

Only the steps' own time is counted. If a gap's cost grows with the gap's length, matches
the eviction's, and concerns formats whose whole model fits in the last-level cache, then
what the split loses there is that cache (the weights re-read from DRAM at every hop),
not its messages. The tokens must be equal in every setup. Usage:
  python bench/idle_gap.py [--formats fp32,bf16,int8,int4] [--gap-ms 0.5 2 5 20]
      [--threads 2] [--tokens 24] [--rounds 3] [--evict-mb 400]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _sizing import HIDDEN
from pipeline_overhead import three_segments
from rich.console import Console
from rich.table import Table

from resplit.models import Checkpoint, load_segment
from resplit.models.tiny import build_tiny

PROMPT = [5 + (i * 7) % 300 for i in range(12)]


def last_level_cache_mb() -> float | None:
    """The largest CPU cache this machine reports (sysfs), in MiB; None where unreadable."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        units = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}
        sizes.append(float(text[:-1]) * units.get(text[-1], 1 / 2**20))
    return max(sizes) if sizes else None


def decode(segments, tokens: int, before) -> tuple[float, list[int]]:
    """(median ms per segment step, greedy ids) decoding through ``segments`` in turn,
    calling ``before()`` ahead of every segment's step (not timed)."""
    states = [segment.new_state() for segment in segments]
    ids, times = torch.tensor([PROMPT]), []
    out_ids = []
    for step in range(tokens + 1):
        hidden = None
        for index, (segment, state) in enumerate(zip(segments, states, strict=True)):
            before()
            start = time.perf_counter()
            out = segment.step(state, input_ids=ids) if index == 0 else segment.step(state, hidden=hidden)
            if step:  # not the prefill
                times.append(time.perf_counter() - start)
            hidden = out.hidden
        ids = out.logits.argmax(-1, keepdim=True)
        out_ids.append(int(ids))
    return statistics.median(times) * 1e3, out_ids


def spin(ms: float):
    def before() -> None:
        until = time.perf_counter() + ms / 1e3
        while time.perf_counter() < until:
            pass

    return before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default="fp32,bf16,int8,int4")
    parser.add_argument("--gap-ms", type=float, nargs="+", default=[0.5, 2.0, 5.0, 20.0])
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (a worker's decode threads)")
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--evict-mb", type=int, default=400, help="MB read before each step (evict)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="resplit-gap-"))
    model_dir = build_tiny("llama", work / "llama", num_hidden_layers=args.blocks, **HIDDEN)
    checkpoint = Checkpoint(model_dir)
    other = torch.ones(args.evict_mb * 2**20 // 4)
    setups = {"back to back": lambda: None}
    setups.update({f"{ms:g} ms busy": spin(ms) for ms in args.gap_ms})
    setups[f"{args.evict_mb} MB read"] = lambda: float(other.sum())
    table = Table(
        title=f"ms per segment step, {args.blocks}-block Llama (hidden 1024) in the split's 3 segments, "
        f"one process, {args.threads} threads, median of {args.rounds} rounds x {args.tokens} tokens"
    )
    for column in ("weights", "model MB", *setups, "slowest / back to back"):
        table.add_column(column, justify="right")
    for weights in [f for f in args.formats.split(",") if f]:
        segments = [
            load_segment(checkpoint, a, b, torch.device("cpu"), weights=weights)
            for a, b, _ in three_segments(args.blocks)
        ]
        tensors = [t for segment in segments for t in segment.state_dict().values()]
        megabytes = sum(t.numel() * t.element_size() for t in tensors) / 2**20
        decode(segments, 4, lambda: None)  # warm-up
        runs: dict[str, list[float]] = {name: [] for name in setups}
        reference = None
        for _ in range(args.rounds):
            for name, before in setups.items():
                ms, ids = decode(segments, args.tokens, before)
                reference = reference or ids
                if ids != reference:
                    raise SystemExit(f"{weights}, {name}: tokens {ids} differ from {reference}")
                runs[name].append(ms)
        medians = [statistics.median(v) for v in runs.values()]
        table.add_row(
            weights, f"{megabytes:.0f}", *(f"{m:.2f}" for m in medians), f"{max(medians) / medians[0]:.2f}"
        )
        del segments
    Console(width=200).print(table)
    cache = last_level_cache_mb()
    size = f"{cache:.0f} MiB" if cache else "unknown"
    print(f"last-level cache: {size} (shared with whatever else runs on the host)")


if __name__ == "__main__":
    main()
