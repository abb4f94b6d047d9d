"""Sizing the benchmark's Llama to the host: whole-model decode near a target ms/token.

The ratio the pipeline benchmark reports depends on how long a token takes: a
fixed per-hop cost weighs more on a small model. Its target is stated for a
model whose whole-model decode takes 20-50 ms per token on the machine at hand,
and machines differ by 3x (the same 12-block model took 28 ms on one 2-core
development VM and 85 ms on another). So the block count is chosen here, by
measurement, instead of being fixed: decode time is close to linear in the
number of blocks (the vocabulary is tiny), so two probe sizes give the line.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from resplit.models.tiny import build_tiny

HIDDEN = {"hidden_size": 1024, "intermediate_size": 2816, "num_attention_heads": 16}
PROBE_BLOCKS = (3, 12)


def decode_ms(model, prompt: list[int], tokens: int = 12, repeats: int = 3) -> float:
    """Median ms per greedy decode step of ``model`` in this process, over ``repeats`` runs."""
    medians = []
    with torch.inference_mode():
        for _ in range(repeats):
            cache = DynamicCache(config=model.config)
            out = model(torch.tensor([prompt]), cache=cache, use_cache=True)
            token, steps = int(out.logits[0, -1].argmax()), []
            for _ in range(tokens):
                start = time.perf_counter()
                out = model(torch.tensor([[token]]), cache=cache, use_cache=True)
                token = int(out.logits[0, -1].argmax())
                steps.append(time.perf_counter() - start)
            medians.append(statistics.median(steps) * 1e3)
    return statistics.median(medians)


def build(work: Path, blocks: int):
    """(model directory, model loaded whole) for a random Llama with ``blocks`` blocks."""
    model_dir = build_tiny("llama", work / f"llama-{blocks}", num_hidden_layers=blocks, **HIDDEN)
    return model_dir, AutoModelForCausalLM.from_pretrained(model_dir).eval()


def blocks_for(target_ms: float, probe: Callable[[int], float], most: int = 48) -> int:
    """The block count whose decode time, on the line through two probe sizes, is nearest ``target_ms``.

    At least 3 blocks (one per segment of the benchmark's 3-way split), at most ``most``.
    """
    small, large = PROBE_BLOCKS
    t_small, t_large = probe(small), probe(large)
    per_block = max((t_large - t_small) / (large - small), 1e-3)
    fixed = t_small - small * per_block
    return max(small, min(most, round((target_ms - fixed) / per_block)))


def size(work: Path, target_ms: float, prompt: list[int]) -> int:
    """Blocks for ``target_ms`` per token on this machine, from probe models built under ``work``."""
    return blocks_for(target_ms, lambda blocks: decode_ms(build(work, blocks)[1], prompt))
