"""What the orchestrator needs to know about a model before deploying it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ModelDirError(ValueError):
    """The model directory is missing or unusable."""


@dataclass(frozen=True)
class ModelInfo:
    family: str
    num_units: int
    generative: bool


def inspect_model(model_dir: str) -> ModelInfo:
    """Family, unit count and kind of the model at ``model_dir`` (reads config.json only)."""
    if not model_dir or not Path(model_dir).is_dir():
        raise FileNotFoundError(f"model directory {model_dir!r} does not exist on the orchestrator's host")
    from resplit.models import Checkpoint, CheckpointError, UnsupportedModelError, family_of, num_units

    try:
        checkpoint = Checkpoint(model_dir)
        family = family_of(checkpoint.config.model_type)
    except (CheckpointError, UnsupportedModelError, OSError, ValueError) as exc:
        raise ModelDirError(f"cannot use the model at {model_dir}: {exc}") from None
    return ModelInfo(checkpoint.config.model_type, num_units(checkpoint.config), family.generative)
