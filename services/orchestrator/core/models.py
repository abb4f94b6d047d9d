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
    try:
        is_dir = bool(model_dir) and Path(model_dir).is_dir()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        is_dir = False
    if not is_dir:
        raise FileNotFoundError(
            f"model directory {model_dir[:256]!r} does not exist on the orchestrator's host"
        )
    if not (Path(model_dir) / "config.json").is_file():
        raise ModelDirError(f"cannot use the model at {model_dir}: no config.json in it")
    from transformers import AutoConfig

    from resplit.models import UnsupportedModelError, family_of, num_units

    try:  # the weights are the workers' business (emulated workers have none)
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        family = family_of(config.model_type)
    except (UnsupportedModelError, OSError, ValueError) as exc:
        raise ModelDirError(f"cannot use the model at {model_dir}: {exc}") from None
    return ModelInfo(config.model_type, num_units(config), family.generative)
