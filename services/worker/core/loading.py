"""Loading a segment for a deployment epoch: checks first, then only its tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from resplit.core.tensors import COMPRESSIONS
from resplit.models import (
    Checkpoint,
    CheckpointError,
    UnsupportedModelError,
    family_of,
    load_segment,
    num_units,
)
from resplit.models.checkpoint import DTYPES

from .errors import BadInput, LoadFailed, NotHosted
from .hosting import Hosted


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LoadFailed(f"device {name} requested but CUDA is not available on this worker")
    return torch.device(name)


def load_hosted(
    deployment: str,
    epoch: int,
    start: int,
    end: int,
    model_dir: str,
    dtype_name: str,
    compression: int,
    device: torch.device,
) -> Hosted:
    """Build the segment, or raise a WorkerError saying why not."""
    if not deployment:
        raise BadInput("a deployment name is required")
    if epoch < 1:
        raise BadInput(f"epoch must be >= 1, got {epoch}")
    if compression not in COMPRESSIONS.values():
        raise BadInput(f"unknown compression {compression}")
    if dtype_name and dtype_name not in DTYPES:
        raise BadInput(f"dtype must be one of {', '.join(DTYPES)} or empty, got {dtype_name!r}")
    if not Path(model_dir).is_dir():
        raise NotHosted(f"model directory {model_dir!r} does not exist on this worker")
    try:
        checkpoint = Checkpoint(model_dir)
        family = family_of(checkpoint.config.model_type)
    except (CheckpointError, UnsupportedModelError, OSError, ValueError) as exc:
        raise LoadFailed(f"cannot read the model at {model_dir}: {exc}") from None
    total = num_units(checkpoint.config)
    if not 0 <= start < end <= total:
        raise BadInput(f"units [{start}, {end}) are outside the model's [0, {total})")
    dtype = DTYPES[dtype_name] if dtype_name else checkpoint.dtype
    try:
        segment = load_segment(checkpoint, start, end, device, dtype)
    except (CheckpointError, ValueError, RuntimeError) as exc:
        raise LoadFailed(f"cannot load units [{start}, {end}) from {model_dir}: {exc}") from None
    return Hosted(
        deployment=deployment,
        epoch=epoch,
        start=start,
        end=end,
        segment=segment,
        model_dir=model_dir,
        compression=compression,
        dtype=dtype,
        device=device,
        generative=family.generative,
        hidden_size=int(checkpoint.config.hidden_size),
    )
