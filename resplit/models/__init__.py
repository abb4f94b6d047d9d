"""Model adapters: a Hugging Face architecture mapped to units and segments.

Adding a family is one small file with a :class:`~resplit.models.base.Family`
subclass, registered in ``FAMILIES`` below.
"""

from __future__ import annotations

import torch

from .base import Family, Segment, SegmentInputError, SessionState, StepOutput, num_blocks, num_units
from .bert import Bert
from .checkpoint import Checkpoint, CheckpointError
from .gpt2 import GPT2
from .rotary import RotaryDecoder

FAMILIES: list[Family] = [RotaryDecoder(), GPT2(), Bert()]


class UnsupportedModelError(ValueError):
    """No adapter knows this architecture."""


def family_of(model_type: str) -> Family:
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = sorted(t for f in FAMILIES for t in f.model_types)
    raise UnsupportedModelError(f"model type {model_type!r} is not supported (supported: {', '.join(known)})")


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_segment(
    checkpoint: Checkpoint,
    start: int,
    end: int,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Segment:
    """Build units [start, end) of the model from only their tensors."""
    total = num_units(checkpoint.config)
    if not 0 <= start < end <= total:
        raise SegmentInputError(f"units [{start}, {end}) are outside the model's [0, {total})")
    family = family_of(checkpoint.config.model_type)
    device = device or default_device()
    names = family.tensor_names(checkpoint, start, end)
    tensors = checkpoint.load(names, device, dtype or checkpoint.dtype)
    return family.build(checkpoint.config, start, end, tensors, device)


__all__ = [
    "FAMILIES",
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
]
