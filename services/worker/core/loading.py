"""Loading a segment for a deployment epoch: checks first, then only its tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from resplit.core.compression import COMPRESSIONS
from resplit.core.emulation import EmulatedDevice
from resplit.core.weights import WeightsError, check_family, weights_name
from resplit.models import (
    CheckpointError,
    Segment,
    UnsupportedModelError,
    family_of,
    load_segment,
    num_units,
)
from resplit.models.arena import huge_bytes_at, thp_mode
from resplit.models.checkpoint import DTYPES
from resplit.models.emulated import EmulatedSegment
from resplit.models.layers import LayerSourceError, open_sourced

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
    emulated: EmulatedDevice | None = None,
    lean_decode: bool = True,
    huge_pages: bool = True,
    weights: str = "",
    sources: dict[int, str] | None = None,
) -> Hosted:
    """Build the segment, or raise a WorkerError saying why not. With ``emulated``
    only the model's config.json is read: the segment waits instead of computing.
    ``weights``: the format the segment quantizes its tensors to (INVALID_ARGUMENT for
    one that does not exist or that the model's family cannot run). ``sources``: blocks
    of the segment read from another checkpoint directory (a swapped layer): NOT_FOUND
    when it is not on this worker, INVALID_ARGUMENT naming a tensor that does not fit."""
    sources = {u: d for u, d in (sources or {}).items() if start <= u < end}
    if not deployment:
        raise BadInput("a deployment name is required")
    if epoch < 1:
        raise BadInput(f"epoch must be >= 1, got {epoch}")
    if compression not in COMPRESSIONS.values():
        raise BadInput(f"unknown compression {compression}")
    try:
        weights = weights_name(weights)
    except WeightsError as exc:
        raise BadInput(str(exc)) from None
    if dtype_name and dtype_name not in DTYPES:
        raise BadInput(f"dtype must be one of {', '.join(DTYPES)} or empty, got {dtype_name!r}")
    for directory in [model_dir, *sources.values()]:
        if not _is_dir(directory):
            raise NotHosted(f"model directory {directory[:256]!r} does not exist on this worker")
    if emulated is None:
        segment, generative, hidden_size, dtype = _real(
            start, end, model_dir, dtype_name, device, huge_pages, weights, sources, lean_decode
        )
        segment.lean_decode = lean_decode
    else:
        segment, generative, hidden_size, dtype = _emulated(
            start, end, model_dir, dtype_name, emulated, weights
        )
        device = torch.device("cpu")
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
        generative=generative,
        hidden_size=hidden_size,
        weights=weights,
        sources=tuple(sorted(sources.items())),
    )


def _is_dir(path: str) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def decode_path(segment: Segment) -> str:
    """How the segment runs decode steps, for the load log line."""
    if segment.lean_unavailable is not None:
        return f"through the model's layers ({segment.lean_unavailable})"
    return "lean" if segment.lean_decode else "through the model's layers (--no-lean-decode)"


def huge_page_share(segment: Segment) -> str:
    """How much of the segment's weights the kernel backs with huge pages, for the load log line."""
    params = list(segment.parameters())
    if not params or params[0].device.type != "cpu":
        return "weights not in host memory" if params else "no weights"
    total = sum(p.numel() * p.element_size() for p in params)
    huge = huge_bytes_at(max(params, key=lambda p: p.numel()).data_ptr())
    if huge is None:
        return "huge pages unknown (no /proc/self/smaps)"
    return f"{min(huge, total) / 1e6:.1f} of {total / 1e6:.1f} MB in huge pages (THP {thp_mode()})"


def _real(
    start: int,
    end: int,
    model_dir: str,
    dtype_name: str,
    device: torch.device,
    huge_pages: bool = True,
    weights: str = "fp32",
    sources: dict[int, str] | None = None,
    lean: bool = True,
) -> tuple[Segment, bool, int, torch.dtype]:
    """(segment, generative, hidden size, dtype) with only the tensors of units [start, end),
    the blocks in ``sources`` read from their own directories. ``lean`` off
    (``--no-lean-decode``): transformers' layers even where the lean build would run."""
    try:
        checkpoint = open_sourced(model_dir, sources or {}, light=lean)
        family = family_of(checkpoint.config.model_type)
    except LayerSourceError as exc:
        raise BadInput(f"cannot swap blocks of units [{start}, {end}): {exc}") from None
    except (CheckpointError, UnsupportedModelError, OSError, ValueError) as exc:
        raise LoadFailed(f"cannot read the model at {model_dir}: {exc}") from None
    total = num_units(checkpoint.config)
    if not 0 <= start < end <= total:
        raise BadInput(f"units [{start}, {end}) are outside the model's [0, {total})")
    dtype = DTYPES[dtype_name] if dtype_name else checkpoint.dtype
    try:
        check_family(weights, checkpoint.config.model_type)
        segment = load_segment(
            checkpoint, start, end, device, dtype, huge_pages=huge_pages, weights=weights, lean=lean
        )
    except WeightsError as exc:
        raise BadInput(f"cannot load units [{start}, {end}) of {model_dir}: {exc}") from None
    except (CheckpointError, ValueError, RuntimeError) as exc:
        raise LoadFailed(f"cannot load units [{start}, {end}) from {model_dir}: {exc}") from None
    return segment, family.generative, int(checkpoint.config.hidden_size), dtype


def _emulated(
    start: int, end: int, model_dir: str, dtype_name: str, emulated: EmulatedDevice, weights: str = "fp32"
) -> tuple[Segment, bool, int, torch.dtype]:
    """The same from config.json alone: a segment that waits as long as ``emulated`` would compute."""
    try:
        segment = EmulatedSegment(model_dir, start, end, emulated, DTYPES.get(dtype_name), weights)
        family = family_of(segment.config.model_type)
    except (OSError, ValueError) as exc:
        raise LoadFailed(f"cannot emulate units [{start}, {end}) of {model_dir}: {exc}") from None
    return segment, family.generative, segment.hidden_size, segment.dtype
