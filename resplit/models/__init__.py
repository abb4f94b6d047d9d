"""Model adapters: a Hugging Face architecture mapped to units and segments.

Any decoder transformers ships whose base model holds an embedding, one list of
blocks that run with a KV cache and a final norm is served by the generic
:class:`~resplit.models.decoder.Decoder` with no declaration at all (Phi-3, Gemma
2 and 3, Mixtral, Qwen3-MoE, OLMo 2, Granite, GPT-NeoX, ...); what does not fit
is refused with the reason. ``ADAPTERS`` (``resplit.core.families``) names the families with an
adapter of their own: the rotary decoders for their lean build (``rotary_lean.py``:
resplit's own ops, no transformers model code in the process), GPT-2 for its
learned positions, BERT as an encoder. Adapters are imported when a model of
theirs is first used: each pulls in its transformers model classes (BERT's alone
cost two seconds), and a worker process should not pay for families it never hosts.
"""

from __future__ import annotations

import importlib

import torch

from resplit.core.families import ADAPTERS
from resplit.core.weights import WeightsError, weights_name

from .arena import pack, release_freed
from .base import (
    Family,
    Segment,
    SegmentInputError,
    SessionState,
    StepOutput,
    UnsupportedModelError,
    num_blocks,
    num_units,
)
from .checkpoint import Checkpoint, CheckpointError

_loaded: dict[str, Family] = {}
_generic: dict[str, Family] = {}


def family_of(model_type: str) -> Family:
    for types, (module, name) in ADAPTERS.items():
        if model_type in types:
            if module not in _loaded:
                _loaded[module] = getattr(importlib.import_module(f".{module}", __name__), name)()
            return _loaded[module]
    if model_type not in _generic:  # the generic decoder, or UnsupportedModelError saying why not
        from .decoder import Decoder

        _generic[model_type] = Decoder(model_type)
    return _generic[model_type]


def preload() -> None:
    """Import what a worker builds its Llama-style segments with now: the lean rotary
    segment (``rotary_lean.py``), its config reader, cache and kernels. Importing this
    package does not (the CLI, the SDK's control calls and a worker that fails on a bad
    flag never need it); a worker calls this before it reports SERVING, so its first load
    does not carry a one-off import.

    Not transformers: its configuration classes alone bring ``torch.distributed``'s FSDP
    and sympy, its model classes ``torch._dynamo`` and scipy besides (together 100 MiB
    and more of a worker's resident memory, docs/BENCHMARKS.md), which a worker serving
    Llama-style segments never runs. A segment of another family, or a config the lean
    reader declines, imports them when it arrives (``Checkpoint``, ``family_of``)."""
    from . import lean_cache, lean_config, rotary_lean  # noqa: F401

    family_of("llama")


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_segment(
    checkpoint: Checkpoint,
    start: int,
    end: int,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    huge_pages: bool = True,
    weights: str = "fp32",
    lean: bool = True,
) -> Segment:
    """Build units [start, end) of the model from only their tensors.

    ``huge_pages``: on the CPU, the weights go into memory the kernel may back with 2 MiB
    pages (``arena.py``: decode is 10-12 % faster where it does). ``weights``: the format
    (``resplit.core.weights``) the segment quantizes its tensors to as it loads them;
    WeightsError when the family cannot run it. Quantized segments are packed into an
    arena after quantizing, so the full-width tensors they were made from are freed.
    ``lean``: the family's lean build and step where it has one (the rotary decoders:
    ``rotary_lean.py``, no transformers modeling code); off, transformers' layers."""
    weights = weights_name(weights)
    device = device or default_device()
    if weights in ("int8", "int4") and device.type != "cpu":
        raise WeightsError(f"weights {weights} run on CPU kernels; this segment is for {device}")
    total = num_units(checkpoint.config)
    if not 0 <= start < end <= total:
        raise SegmentInputError(f"units [{start}, {end}) are outside the model's [0, {total})")
    family = family_of(checkpoint.config.model_type)
    names = family.tensor_names(checkpoint, start, end)
    in_place = huge_pages and family.loads_in_place and weights == "fp32"
    tensors = checkpoint.load(names, device, dtype or checkpoint.dtype, huge_pages=in_place)
    segment = family.build(checkpoint.config, start, end, tensors, device, lean=lean)
    del tensors
    segment.set_weights(weights)
    if huge_pages and not in_place and device.type == "cpu":
        pack(segment)
    if weights != "fp32" and device.type == "cpu":
        release_freed()
    return segment


__all__ = [
    "ADAPTERS",
    "Checkpoint",
    "CheckpointError",
    "Family",
    "Segment",
    "SegmentInputError",
    "SessionState",
    "StepOutput",
    "UnsupportedModelError",
    "default_device",
    "family_of",
    "load_segment",
    "num_blocks",
    "num_units",
    "preload",
]
