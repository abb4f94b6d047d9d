"""What a decode step costs back to back and after an idle gap, by how a worker runs it.

In a split every hop idles while the others compute, so each of its decode
steps starts cold. Here three segments of one Llama run in this process, one
after another as a split's hops would, either back to back or each after
sleeping ``--gap-ms`` (as a worker waits for its input), in the same rounds:

* transformers' layers: every step through the model's own modules, weights
  as safetensors hands them over (``--no-lean-decode --no-huge-pages``);
* lean step: the one-token step of ``resplit/models/lean.py`` (bitwise the same);
* lean step, huge pages: the same, with the weights in memory advised for 2 MiB
  pages (``resplit/models/arena.py``), as a worker loads them by default.

Two sizes: hidden 64, where the matmuls cost next to nothing and what is left
is the per-operation CPU cost the lean step cuts, and hidden 1024 (the pipeline
benchmark's width), where reading the weights is most of a step.
Usage: python bench/cold_step.py [--blocks 14] [--rounds 6] [--tokens 16] [--gap-ms 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from resplit.models import Checkpoint, load_segment
from resplit.models.arena import thp_mode
from resplit.models.tiny import build_tiny

WIDTHS = {
    "hidden 64": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4},
    "hidden 1024": {"hidden_size": 1024, "intermediate_size": 2816, "num_attention_heads": 16},
}
PROMPT = [5 + (i * 7) % 300 for i in range(16)]
#: column -> (lean step, weights in huge-page memory)
SETUPS = {
    "transformers' layers": (False, False),
    "lean step": (True, False),
    "lean step, huge pages": (True, True),
}


def anon_huge_pages() -> int:
    """Bytes of this process's anonymous memory in huge pages (0 where that cannot be read)."""
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def decode_ms(segments, tokens: int, gap_s: float, lean: bool) -> tuple[float, list[int]]:
    """(median ms per token, generated ids) of greedy decode through ``segments`` in turn."""
    for segment in segments:
        segment.lean_decode = lean
    states = [segment.new_state() for segment in segments]
    inputs, steps, ids = {"input_ids": torch.tensor([PROMPT])}, [], []
    for step in range(tokens + 1):
        busy = 0.0
        for segment, state in zip(segments, states, strict=True):
            if gap_s:
                time.sleep(gap_s)
            start = time.perf_counter()
            out = segment.step(state, **inputs)
            busy += time.perf_counter() - start
            inputs = {"hidden": out.hidden}
        if step:  # not the prefill
            steps.append(busy)
        ids.append(int(out.logits[0].argmax()))
        inputs = {"input_ids": torch.tensor([[ids[-1]]])}
    return statistics.median(steps) * 1e3, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=14)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--gap-ms", type=float, default=20.0, help="idle time before each segment's step")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as co-located workers decode on a small host
    work = Path(tempfile.mkdtemp(prefix="resplit-cold-"))
    third, two_thirds = 1 + args.blocks // 3, 1 + (2 * args.blocks) // 3
    cuts = [(0, third), (third, two_thirds), (two_thirds, args.blocks + 2)]
    table = Table(title=f"Decode ms/token, {args.blocks}-block Llama (fp32, CPU, 1 thread) in 3 segments")
    table.add_column("model")
    for column in ("gap", *SETUPS, "lean / transformers", "huge pages / transformers"):
        table.add_column(column, justify="right")
    huge_share = []  # the process's AnonHugePages after loading each model: the arenas
    for name, width in WIDTHS.items():
        model_dir = build_tiny("llama", work / name.replace(" ", "-"), num_hidden_layers=args.blocks, **width)
        checkpoint = Checkpoint(model_dir)
        loaded = {
            huge: [load_segment(checkpoint, a, b, torch.device("cpu"), huge_pages=huge) for a, b in cuts]
            for huge in (False, True)
        }
        huge_share.append(f"{name}: {anon_huge_pages() / 1e6:.0f} MB")
        gaps = (0.0, args.gap_ms / 1e3)
        runs = {(gap, setup): [] for gap in gaps for setup in SETUPS}
        decode_ms(loaded[True], 4, 0.0, True)  # warm-up
        for _ in range(args.rounds):
            tokens = set()
            for (gap, setup), times in runs.items():
                lean, huge = SETUPS[setup]
                ms, ids = decode_ms(loaded[huge], args.tokens, gap, lean)
                times.append(ms)
                tokens.add(tuple(ids))
            if len(tokens) != 1:
                raise SystemExit(f"the setups generated different tokens: {tokens}")
        for gap in gaps:
            ms = [statistics.median(runs[gap, setup]) for setup in SETUPS]
            label = "back to back" if not gap else f"{args.gap_ms:.0f} ms idle before each hop"
            table.add_row(
                name, label, *(f"{m:.2f}" for m in ms), f"{ms[1] / ms[0]:.3f}", f"{ms[2] / ms[0]:.3f}"
            )
    Console(width=180).print(table)
    print(
        f"{args.rounds} rounds x {args.tokens} tokens; only the steps' own time is counted, not the gaps; "
        "the same greedy tokens in every setup and round; "
        f"THP {thp_mode()}; this process's memory in huge pages after loading {'; '.join(huge_share)}"
    )


if __name__ == "__main__":
    main()
