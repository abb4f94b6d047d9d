"""Read a model directory: its config and only the tensors a segment needs.

A worker hosting a quarter of the blocks must hold a quarter of the weights,
so tensors are read one by one with ``safe_open`` from ``model.safetensors``
or from the shards listed in ``model.safetensors.index.json`` — never the
whole file into memory.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open

from . import lean_config
from .arena import Arena, aligned

if TYPE_CHECKING:
    from transformers import PretrainedConfig

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: safetensors' dtype names -> bytes per element (for sizing an arena from the headers alone).
ITEM_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
FLOATING = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


class CheckpointError(ValueError):
    """The model directory is missing, incomplete or unreadable; the message says how."""


class Checkpoint:
    """A local Hugging Face model directory (config.json + safetensors).

    ``light``: a config the lean segments run (``lean_config.py``) is read without
    transformers, as a :class:`~.lean_config.LeanConfig` (what a worker does, so that
    serving a Llama-style model never imports transformers); any other config, and every
    config without ``light``, is transformers' ``AutoConfig``."""

    def __init__(self, model_dir: str | Path, light: bool = False) -> None:
        self.dir = Path(model_dir)
        if not (self.dir / "config.json").is_file():
            raise CheckpointError(f"no config.json in {self.dir} (is it a Hugging Face model directory?)")
        config = lean_config.read(self.dir) if light else None
        if config is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(self.dir, local_files_only=True)
        self.config: PretrainedConfig | lean_config.LeanConfig = config
        self._files = self._index()

    def _index(self) -> dict[str, Path]:
        """tensor name -> file holding it."""
        if (self.dir / INDEX).is_file():
            weight_map = json.loads((self.dir / INDEX).read_text())["weight_map"]
            return {name: self.dir / file for name, file in weight_map.items()}
        if (self.dir / SINGLE).is_file():
            with safe_open(self.dir / SINGLE, framework="pt") as f:
                return dict.fromkeys(f.keys(), self.dir / SINGLE)
        raise CheckpointError(f"no {SINGLE} or {INDEX} in {self.dir}")

    def names(self) -> list[str]:
        return sorted(self._files)

    def file_of(self, name: str) -> Path:
        """The file holding tensor ``name``."""
        if name not in self._files:
            raise CheckpointError(f"tensor {name!r} is not in the checkpoint at {self.dir}")
        return self._files[name]

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model was saved in (config ``dtype``), fp32 if unset."""
        declared = getattr(self.config, "dtype", None)
        if isinstance(declared, torch.dtype):
            return declared
        return DTYPES.get(str(declared).removeprefix("torch."), torch.float32)

    def load(
        self,
        names: Iterable[str],
        device: torch.device,
        dtype: torch.dtype | None = None,
        huge_pages: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Exactly the tensors ``names``, on ``device``, cast to ``dtype`` if given.

        ``huge_pages`` (CPU only): the tensors live in one :class:`~.arena.Arena`, memory
        the kernel may back with 2 MiB pages; each is copied there as it is read."""
        by_file: dict[Path, list[str]] = defaultdict(list)
        for name in names:
            if name not in self._files:
                raise CheckpointError(f"tensor {name!r} is not in the checkpoint at {self.dir}")
            by_file[self._files[name]].append(name)
        arena = None
        if huge_pages and device.type == "cpu":
            size = self._bytes(by_file, dtype)
            arena = Arena(size) if size else None
        out: dict[str, torch.Tensor] = {}
        for file, wanted in by_file.items():
            with safe_open(file, framework="pt", device=str(device)) as f:
                for name in wanted:
                    tensor = f.get_tensor(name)
                    if dtype is not None and tensor.is_floating_point():
                        tensor = tensor.to(dtype)
                    out[name] = arena.place(tensor) if arena is not None else tensor
        return out

    @staticmethod
    def _bytes(by_file: dict[Path, list[str]], dtype: torch.dtype | None) -> int:
        """What the tensors take once read and cast, each :func:`~.arena.aligned`, from the
        files' headers alone; 0 where a dtype is unknown here (then no arena is used)."""
        total = 0
        for file, wanted in by_file.items():
            with safe_open(file, framework="pt") as f:
                for name in wanted:
                    piece = f.get_slice(name)
                    kind = piece.get_dtype()
                    if kind not in ITEM_BYTES:
                        return 0
                    item = dtype.itemsize if dtype is not None and kind in FLOATING else ITEM_BYTES[kind]
                    numel = 1
                    for extent in piece.get_shape():
                        numel *= extent
                    total += aligned(numel * item)
        return total
