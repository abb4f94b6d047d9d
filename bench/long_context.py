"""Decode time as the context grows, resplit's lean cache against transformers' DynamicCache.

Why: a decode step over a long context reads every cached key and value once per block;
on top of that, a cache that grows by concatenation (``DynamicCache``: ``torch.cat`` at
every step) copies itself whole at every step. resplit's lean segments append in place
(``resplit/models/lean_cache.py``) and the native block step reads the cache where it
lies (``resplit/kernels/block.c``, a head stride per session). Here the benchmark's
15-block Llama (hidden 1024), whole in this process, decodes greedily after prompts of
``--contexts`` tokens with each cache in turn (alternating in every round), and the
tokens must be equal. Printed: ms per decode step with each, and lean / DynamicCache.

Usage: python bench/long_context.py [--formats int4,fp32] [--contexts 12 512 2000]
    [--tokens 16] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _sizing import HIDDEN
from rich.console import Console
from rich.table import Table
from transformers import DynamicCache

from resplit.models import Checkpoint, load_segment
from resplit.models.base import SessionState
from resplit.models.tiny import build_tiny


def decode_ms(segment, prompt: list[int], tokens: int, cache=None) -> tuple[float, list[int]]:
    """(median ms per decode step, greedy ids) after ``prompt``; ``cache`` replaces the
    segment's own (None: its lean cache)."""
    state = segment.new_state() if cache is None else SessionState(cache=cache)
    out = segment.step(state, input_ids=torch.tensor([prompt]))
    ids, steps = [int(out.logits[0].argmax())], []
    for _ in range(tokens):
        start = time.perf_counter()
        out = segment.step(state, input_ids=torch.tensor([[ids[-1]]]))
        steps.append(time.perf_counter() - start)
        ids.append(int(out.logits[0].argmax()))
    return statistics.median(steps) * 1e3, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default="int4,fp32")
    parser.add_argument("--contexts", type=int, nargs="+", default=[12, 512, 2000])
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="resplit-context-"))
    longest = max(args.contexts) + args.tokens + 1
    model_dir = build_tiny(
        "llama", work / "llama", num_hidden_layers=args.blocks, max_position_embeddings=longest, **HIDDEN
    )
    table = Table(
        title=f"decode ms/token, {args.blocks}-block Llama (hidden 1024) whole, {args.threads} threads, "
        f"median of {args.rounds} rounds x {args.tokens} tokens"
    )
    columns = ("weights", "context", "lean cache (in place)", "DynamicCache (torch.cat)", "lean / Dynamic")
    for column in columns:
        table.add_column(column, justify="right")
    for weights in [f for f in args.formats.split(",") if f]:
        checkpoint = Checkpoint(model_dir)
        segment = load_segment(checkpoint, 0, args.blocks + 2, torch.device("cpu"), weights=weights)
        decode_ms(segment, [5, 6, 7], 4)  # warm-up: the native library, the first allocations
        for context in args.contexts:
            prompt = [5 + (i * 7) % 300 for i in range(context)]
            lean, dynamic = [], []
            for _ in range(args.rounds):
                ms_lean, ids_lean = decode_ms(segment, prompt, args.tokens)
                ms_dynamic, ids_dynamic = decode_ms(segment, prompt, args.tokens, DynamicCache())
                if ids_lean != ids_dynamic:
                    raise SystemExit(f"{weights}, context {context}: the caches generated different tokens")
                lean.append(ms_lean)
                dynamic.append(ms_dynamic)
            a, b = statistics.median(lean), statistics.median(dynamic)
            table.add_row(weights, str(context), f"{a:.2f}", f"{b:.2f}", f"{a / b:.3f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
