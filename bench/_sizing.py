"""The whole model in one process, and sizing the benchmark's Llama to the host.

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


def whole_run(model, prompt: list[int], tokens: int) -> tuple[float, list[float], list[int]]:
    """(prefill seconds, decode seconds per token, generated ids) with transformers in-process."""
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        start = time.perf_counter()
        out = model(torch.tensor([prompt], device=model.device), cache=cache, use_cache=True)
        token = int(out.logits[0, -1].argmax())
        prefill = time.perf_counter() - start
        ids, steps = [token], []
        for _ in range(tokens - 1):
            start = time.perf_counter()
            out = model(torch.tensor([[token]], device=model.device), cache=cache, use_cache=True)
            token = int(out.logits[0, -1].argmax())  # waits for the device: the step is complete
            steps.append(time.perf_counter() - start)
            ids.append(token)
    return prefill, steps, ids


def segment_run(segment, prompt: list[int], tokens: int) -> tuple[float, list[float], list[int]]:
    """The same as :func:`whole_run` with resplit's segment code: one segment holding every unit.

    Its decode steps take the lean step (``resplit/models/lean.py``) where the model allows, so
    against it a split is compared with the same compute code, and only the split's cost remains."""
    state = segment.new_state()
    device = next(segment.parameters()).device
    start = time.perf_counter()
    out = segment.step(state, input_ids=torch.tensor([prompt], device=device))
    token = int(out.logits[0].argmax())
    prefill = time.perf_counter() - start
    ids, steps = [token], []
    for _ in range(tokens - 1):
        start = time.perf_counter()
        out = segment.step(state, input_ids=torch.tensor([[token]], device=device))
        token = int(out.logits[0].argmax())
        steps.append(time.perf_counter() - start)
        ids.append(token)
    return prefill, steps, ids


def decode_ms(model, prompt: list[int], tokens: int = 12, repeats: int = 3) -> float:
    """Median ms per greedy decode step of ``model`` in this process, over ``repeats`` runs."""
    runs = [statistics.median(whole_run(model, prompt, tokens + 1)[1]) * 1e3 for _ in range(repeats)]
    return statistics.median(runs)


def build(work: Path, blocks: int, device: str = "cpu"):
    """(model directory, model loaded whole on ``device``) for a random Llama with ``blocks`` blocks."""
    model_dir = build_tiny("llama", work / f"llama-{blocks}", num_hidden_layers=blocks, **HIDDEN)
    return model_dir, AutoModelForCausalLM.from_pretrained(model_dir).eval().to(device)


def blocks_for(target_ms: float, probe: Callable[[int], float], most: int = 48) -> int:
    """The block count whose decode time, on the line through two probe sizes, is nearest ``target_ms``.

    At least 3 blocks (one per segment of the benchmark's 3-way split), at most ``most``.
    """
    small, large = PROBE_BLOCKS
    t_small, t_large = probe(small), probe(large)
    per_block = max((t_large - t_small) / (large - small), 1e-3)
    fixed = t_small - small * per_block
    return max(small, min(most, round((target_ms - fixed) / per_block)))


def size(work: Path, target_ms: float, prompt: list[int], device: str = "cpu") -> int:
    """Blocks for ``target_ms`` per token on this machine, from probe models built under ``work``."""
    return blocks_for(target_ms, lambda blocks: decode_ms(build(work, blocks, device)[1], prompt))


def model_for(work: Path, blocks: int | None, target_ms: float, prompt: list[int], device: str = "cpu"):
    """(blocks, model directory, model loaded whole on ``device``): ``blocks`` of them when given,
    else as many as make whole-model decode take ``target_ms`` per token here."""
    blocks = blocks if blocks is not None else size(work, target_ms, prompt, device)
    model_dir, model = build(work, blocks, device)
    return blocks, model_dir, model
