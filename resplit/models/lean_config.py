"""config.json of a Llama-style model read without transformers, for a worker's lean segments.

Why: transformers' configuration classes are not light. Importing ``LlamaConfig`` runs
``transformers.utils.type_validators``, which imports ``transformers.activations`` and
through its hub-kernel integration the model-loading and ``torch.distributed`` modules
(sympy, FSDP, ``torch.distributed.tensor``): 55 MiB of a worker's resident memory and
about 3 s on the development VM, measured with VmRSS and ``python -X importtime``. A
worker that serves Llama-style segments only reads a dozen numbers from config.json.

:func:`read` returns a :class:`LeanConfig` only for a config the lean segment
(``rotary_lean.py``) can run as transformers would: one of the four rotary families,
full attention in every layer, the default rope, SiLU. Every field the lean build
reads is taken from the file or, where the file omits it, from the family's default in
transformers' configuration class (:data:`DEFAULTS`, checked against those classes by
``tests/unit/test_lean_config.py``). Anything else gives None and the caller parses the
file with transformers (``Checkpoint``), so no config is ever read half right.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

#: transformers' defaults for what a lean segment reads, per family (transformers 5.x
#: configuration classes). None for ``num_key_value_heads``: as many as the query heads;
#: for ``head_dim``: hidden size / heads.
COMMON = {
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "attention_bias": False,
    "mlp_bias": False,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"num_key_value_heads": None, "head_dim": None},
    "mistral": {"num_key_value_heads": 8, "head_dim": None, "sliding_window": 4096},
    "qwen2": {
        "num_key_value_heads": 32,
        "head_dim": None,
        "use_sliding_window": False,
        "max_window_layers": 28,
    },
    "qwen3": {
        "num_key_value_heads": 32,
        "head_dim": 128,
        "use_sliding_window": False,
        "max_window_layers": 28,
    },
}
#: Fields that must be in the file (no family default is trusted for the model's shape).
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
SILU = ("silu", "swish")


class LeanConfig:
    """The attributes of a transformers config that a lean segment and the worker read:
    every key of config.json, with the computed ones (``head_dim``, ``layer_types``,
    ``rope_parameters``...) filled in as transformers fills them."""

    def __init__(self, values: dict[str, Any], source: Path) -> None:
        self.__dict__.update(values)
        self._attn_implementation = None
        #: The directory it was read from (``transformers_config`` parses it again).
        self.source = source

    def to_dict(self) -> dict[str, Any]:
        return {
            k: copy.deepcopy(v) for k, v in vars(self).items() if k not in ("source", "_attn_implementation")
        }

    def transformers_config(self):
        """The same file parsed by transformers (for a segment that needs its model classes)."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.source, local_files_only=True)
        config.num_hidden_layers = self.num_hidden_layers
        if getattr(config, "layer_types", None) is not None:
            config.layer_types = list(self.layer_types)
        return config

    def __repr__(self) -> str:
        return f"LeanConfig({self.model_type}, {self.num_hidden_layers} blocks, from {self.source})"


def read(model_dir: str | Path) -> LeanConfig | None:
    """The lean reading of ``model_dir``/config.json, or None where transformers must parse it."""
    source = Path(model_dir)
    try:
        raw = json.loads((source / "config.json").read_text())
    except (OSError, ValueError):
        return None
    values = parse(raw)
    return None if values is None else LeanConfig(values, source)


def parse(raw: Any) -> dict[str, Any] | None:
    """config.json's dict with transformers' computed fields filled in, or None (see :func:`read`)."""
    if not isinstance(raw, dict) or raw.get("model_type") not in DEFAULTS:
        return None
    if any(not isinstance(raw.get(key), int) or isinstance(raw.get(key), bool) for key in REQUIRED):
        return None
    if any(raw[key] <= 0 for key in REQUIRED):  # transformers' validation says what is wrong
        return None
    if raw.get("quantization_config") or raw.get("output_attentions"):
        return None
    kind = raw["model_type"]
    defaults = {**COMMON, **DEFAULTS[kind]}
    values = {**defaults, **raw}
    if any(values[key] is None for key in COMMON) or (kind == "qwen3" and values["head_dim"] is None):
        return None
    heads = values["num_attention_heads"]
    if values["num_key_value_heads"] is None:
        values["num_key_value_heads"] = heads
    if values["head_dim"] is None:
        values["head_dim"] = values["hidden_size"] // heads
    kv_heads = values["num_key_value_heads"]
    if (
        not isinstance(kv_heads, int)
        or kv_heads <= 0
        or heads % kv_heads
        or not isinstance(values["head_dim"], int)
    ):
        return None
    if values["hidden_act"] not in SILU:
        return None
    rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        return None
    values["rope_parameters"] = {
        "rope_theta": float(rope.get("rope_theta", values["rope_theta"])),
        "rope_type": "default",
    }
    values.pop("rope_scaling", None)
    blocks = values["num_hidden_layers"]
    types = raw.get("layer_types")
    if types is None:
        window = kind == "mistral" and values.get("sliding_window") is not None
        window_from = values.get("max_window_layers", blocks) if values.get("use_sliding_window") else blocks
        types = [
            "sliding_attention" if window or i >= window_from else "full_attention" for i in range(blocks)
        ]
    if len(types) != blocks or any(kind_ != "full_attention" for kind_ in types):
        return None
    values["layer_types"] = list(types)
    values["sliding_window"] = None
    values["dtype"] = values.get("dtype") or values.pop("torch_dtype", None)
    return values
