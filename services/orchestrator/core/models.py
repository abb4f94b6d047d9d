"""What the orchestrator needs to know about a model before deploying it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from resplit.core.families import ENCODERS, adapted, blocks_in


class ModelDirError(ValueError):
    """The model directory is missing or unusable."""


@dataclass(frozen=True)
class ModelInfo:
    family: str
    num_units: int
    generative: bool


def inspect_model(model_dir: str) -> ModelInfo:
    """Family, unit count and kind of the model at ``model_dir`` (reads config.json only).

    A family resplit adapts itself is read from the file as it stands, without
    transformers or torch (2-3 s of start-up and about 200 MiB the orchestrator would
    otherwise carry for good); any other model type goes through transformers, whose
    generic decoder decides whether it can be served and says why not."""
    try:
        is_dir = bool(model_dir) and Path(model_dir).is_dir()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        is_dir = False
    if not is_dir:
        raise FileNotFoundError(
            f"model directory {model_dir[:256]!r} does not exist on the orchestrator's host"
        )
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ModelDirError(f"cannot use the model at {model_dir}: no config.json in it")
    info = _adapted_info(path)
    return info if info is not None else _transformers_info(model_dir)


def _adapted_info(path: Path) -> ModelInfo | None:
    """What config.json states of a family with an adapter of its own; None for any other
    model type, and for a file this reading cannot take as is (transformers then reads it
    and names what is wrong)."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str) or not adapted(model_type):
        return None
    blocks = blocks_in(config)
    if blocks is None:
        return None
    return ModelInfo(model_type, blocks + 2, model_type not in ENCODERS)


def _transformers_info(model_dir: str) -> ModelInfo:
    from transformers import AutoConfig

    from resplit.models import UnsupportedModelError, family_of, num_units

    try:  # the weights are the workers' business (emulated workers have none)
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        family = family_of(config.model_type)
    except (UnsupportedModelError, OSError, ValueError) as exc:
        raise ModelDirError(f"cannot use the model at {model_dir}: {exc}") from None
    return ModelInfo(config.model_type, num_units(config), family.generative)
