"""Blocks whose weights come from another checkpoint: a swapped or merged layer.

A deployment reads every unit from its model directory but for the blocks it
names in ``unit_sources`` (``resplit layers swap`` / ``merge``), which are read
from another directory of the same architecture. :class:`Sourced` is a checkpoint
that does exactly that, so a segment is loaded as always (``load_segment``) and
holds only its own tensors. :func:`check_compatible` is the refusal: the other
directory must hold every tensor of those blocks under the same name, with the
same shape and dtype, and a config that computes a block the same way; what
differs is named. It reads the files' headers only, so the orchestrator checks a
swap before any worker loads anything, and each worker checks again what it reads.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import safe_open

from . import merge
from .base import num_blocks
from .checkpoint import SINGLE, Checkpoint, CheckpointError

#: Config fields that shape what a block computes; a swap source must agree on each one
#: either config sets (vocabulary, depth, token ids and the like may differ).
BLOCK_FIELDS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "rms_norm_eps",
    "layer_norm_eps",
    "attention_bias",
    "mlp_bias",
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "partial_rotary_factor",
    "sliding_window",
    "num_local_experts",
    "num_experts",
    "num_experts_per_tok",
)


class LayerSourceError(CheckpointError):
    """A block cannot be read from the other checkpoint; the message names what differs."""


def block_units(units: Iterable[int], config) -> list[int]:
    """``units`` sorted, each a block (1..L); LayerSourceError for the embedding or the head."""
    blocks = num_blocks(config)
    out = sorted(set(units))
    for unit in out:
        if not 1 <= unit <= blocks:
            raise LayerSourceError(
                f"unit {unit} is not a transformer block: only blocks 1..{blocks} can be swapped "
                f"(0 is the embedding, {blocks + 1} the head)"
            )
    return out


def _header(checkpoint: Checkpoint, name: str) -> tuple[str, list[int]]:
    """(safetensors dtype, shape) of one tensor, from its file's header."""
    with safe_open(checkpoint.file_of(name), framework="pt") as f:
        piece = f.get_slice(name)
        return piece.get_dtype(), list(piece.get_shape())


def tensors_of(checkpoint: Checkpoint, units: Iterable[int]) -> dict[int, list[str]]:
    """unit -> the names of its tensors in ``checkpoint`` (blocks only: no tied weights)."""
    from . import family_of

    family = family_of(checkpoint.config.model_type)
    wanted = set(units)
    out: dict[int, list[str]] = {unit: [] for unit in wanted}
    for name in checkpoint.names():
        for unit in family.unit_of(name, checkpoint.config) & wanted:
            out[unit].append(name)
    return out


def check_compatible(base: Checkpoint, other: Checkpoint, units: Iterable[int]) -> None:
    """Raise LayerSourceError unless ``other`` can stand in for ``base`` at block ``units``."""
    units = block_units(units, base.config)
    for key in BLOCK_FIELDS:
        mine, theirs = getattr(base.config, key, None), getattr(other.config, key, None)
        if mine != theirs:
            raise LayerSourceError(
                f"config of {other.dir} differs from the deployment's in {key}: {theirs!r} != {mine!r}"
            )
    if units and num_blocks(other.config) < units[-1]:
        raise LayerSourceError(
            f"{other.dir} has {num_blocks(other.config)} blocks; block unit {units[-1]} is not among them"
        )
    ours, theirs = tensors_of(base, units), tensors_of(other, units)
    for unit in units:
        missing = sorted(set(ours[unit]) - set(theirs[unit]))
        extra = sorted(set(theirs[unit]) - set(ours[unit]))
        if missing:
            raise LayerSourceError(f"{other.dir} lacks tensor {missing[0]} of block unit {unit}")
        if extra:
            raise LayerSourceError(f"{other.dir} has tensor {extra[0]}, which the deployment's block lacks")
        for name in ours[unit]:
            (dtype_a, shape_a), (dtype_b, shape_b) = _header(base, name), _header(other, name)
            if shape_a != shape_b:
                raise LayerSourceError(
                    f"tensor {name} of {other.dir} has shape {shape_b}, expected {shape_a}"
                )
            if dtype_a != dtype_b:
                raise LayerSourceError(f"tensor {name} of {other.dir} is {dtype_b}, expected {dtype_a}")


class Sourced(Checkpoint):
    """``base`` with the tensors of some blocks read from other checkpoints.

    Built from already-open checkpoints (no second parse of config.json); the
    config, the dtype and the tensor names are the base's."""

    def __init__(self, base: Checkpoint, sources: Mapping[int, Checkpoint]) -> None:
        self.dir, self.config, self._files = base.dir, base.config, dict(base._files)
        self.sources = dict(sources)
        for unit, names in tensors_of(base, self.sources).items():
            for name in names:
                self._files[name] = self.sources[unit].file_of(name)


def open_sourced(model_dir: str | Path, unit_dirs: Mapping[int, str], light: bool = False) -> Checkpoint:
    """The checkpoint of a deployment's model with ``unit_dirs`` (block -> directory) read from
    elsewhere, each checked with :func:`check_compatible` (LayerSourceError names the tensor).
    ``light``: configs read without transformers where they can be (``Checkpoint``)."""
    base = Checkpoint(model_dir, light=light)
    if not unit_dirs:
        return base
    opened = {
        directory: Checkpoint(directory, light=light) for directory in dict.fromkeys(unit_dirs.values())
    }
    for directory, other in opened.items():
        check_compatible(base, other, [u for u, d in unit_dirs.items() if d == directory])
    return Sourced(base, {unit: opened[d] for unit, d in unit_dirs.items()})


def block_tensors(checkpoint: Checkpoint, unit: int) -> dict[str, torch.Tensor]:
    """Every tensor of one block, on the CPU, as saved."""
    names = tensors_of(checkpoint, [unit])[unit]
    return checkpoint.load(names, torch.device("cpu"))


def decide_merge(
    finetuned: Checkpoint,
    safe: Checkpoint,
    base: Checkpoint,
    aligned: Checkpoint | None = None,
    threshold: float = merge.DEFAULT_THRESHOLD,
) -> list[merge.BlockDecision]:
    """SafeMERGE's decision for every block of ``finetuned`` (the deployment's weights).
    ``aligned``: the model the fine-tuning started from (default: ``safe``). Every
    checkpoint must fit the fine-tuned one at every block (LayerSourceError)."""
    aligned = aligned or safe
    units = list(range(1, num_blocks(finetuned.config) + 1))
    for other in dict.fromkeys([safe, base, aligned]):
        check_compatible(finetuned, other, units)
    return [
        merge.decide_block(
            unit,
            block_tensors(finetuned, unit),
            block_tensors(aligned, unit),
            block_tensors(base, unit),
            threshold,
        )
        for unit in units
    ]


def write_merged(
    out_dir: str | Path,
    finetuned: Checkpoint,
    safe: Checkpoint,
    units: Iterable[int],
    weight: float = merge.DEFAULT_WEIGHT,
) -> Path:
    """A checkpoint directory holding only the merged blocks ``units`` (config.json of the
    fine-tuned model, model.safetensors): a swap source for exactly those blocks."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for unit in block_units(units, finetuned.config):
        tensors.update(merge.merged_block(block_tensors(finetuned, unit), block_tensors(safe, unit), weight))
    shutil.copyfile(finetuned.dir / "config.json", out / "config.json")
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / SINGLE, metadata={"format": "pt"})
    return out


__all__ = [
    "BLOCK_FIELDS",
    "LayerSourceError",
    "Sourced",
    "block_tensors",
    "block_units",
    "check_compatible",
    "decide_merge",
    "open_sourced",
    "tensors_of",
    "write_merged",
]
