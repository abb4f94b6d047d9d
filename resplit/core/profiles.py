"""Model profiles: per-unit bytes and FLOPs computed from a transformers config.

Shared by the splitter (its cost model) and the worker (emulated-compute
segments time themselves with the same numbers).

Why from the config and not from loading the model: the splitter must reason
about a 70B model on a machine that could never load it, and the numbers are
exact functions of the architecture. Counting rules, per family (weights,
biases and norms are all counted; FLOPs are 2 per multiply-accumulate of the
weight matrices plus attention's 4 * heads * head_dim per attended position):

* llama / mistral / qwen2 / qwen3 (gated MLP, RMSNorm, grouped KV heads):
  q, k, v, o projections, 3 * hidden * intermediate MLP, two norms; qwen2 adds
  q/k/v biases, qwen3 per-head q/k norms. Llama-3-8B: 218,112,000 parameters
  per decoder layer, 8 KiB activation per token in fp16, 4 KiB KV per token.
* gpt2: fused c_attn, c_proj, c_fc, c_proj with biases and two LayerNorms; the
  head carries the (tied) token embedding it multiplies by.
* bert: encoder layers with biases and LayerNorms, no KV cache; the head unit
  is the pooler.
* any other decoder (the generic family, ``resplit/models/decoder.py``): every
  tensor of the model transformers builds from the config, counted on the meta
  device (no memory, so a 70B model profiles anywhere), by the unit that holds
  it; FLOPs are 2 per weight-matrix element a token passes through, so an MoE
  block counts ``num_experts_per_tok`` of its experts; KV from the config's
  key/value heads. Importing transformers makes this the slow path (seconds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .weights import WeightsError, check_family, embedding_bytes, matrix_bytes


@dataclass(frozen=True)
class Unit:
    index: int
    kind: str
    param_bytes: int
    kv_bytes_per_token: int
    flops_per_token: float
    activation_bytes_per_token: int
    attention_flops_per_position: float = 0.0


@dataclass(frozen=True)
class Model:
    name: str
    family: str
    dtype: str
    units: tuple[Unit, ...]

    @property
    def num_units(self) -> int:
        return len(self.units)

    @property
    def num_blocks(self) -> int:
        return len(self.units) - 2


DTYPE_BYTES = {
    "float32": 4,
    "fp32": 4,
    "float": 4,
    "float16": 2,
    "fp16": 2,
    "half": 2,
    "bfloat16": 2,
    "bf16": 2,
    "float8": 1,
    "fp8": 1,
    "int8": 1,
}
GATED_DECODERS = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED = (*GATED_DECODERS, "gpt2", "bert")


class ConfigError(ValueError):
    """The config cannot be profiled; the message says which key or value is wrong."""


class ModelNotFound(FileNotFoundError):
    """No config.json where the request said the model is."""


def load_config(model_dir: str) -> dict[str, Any]:
    """config.json of a model directory (or the path of a config file itself)."""
    path = Path(model_dir)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelNotFound(f"no config.json at {path}")
    return parse_config(path.read_text(), str(path))


def parse_config(text: str, where: str = "config_json") -> dict[str, Any]:
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(config).__name__}")
    return config


def _int(config: dict[str, Any], key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise ConfigError(f"config has no {key!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"config {key!r} must be a positive integer, got {value!r}")
    return value


def dtype_bytes(config: dict[str, Any], dtype: str) -> tuple[str, int]:
    name = (dtype or config.get("torch_dtype") or config.get("dtype") or "float16").lower()
    name = name.removeprefix("torch.")
    if name not in DTYPE_BYTES:
        raise ConfigError(f"dtype {name!r} is not one of {', '.join(sorted(DTYPE_BYTES))}")
    return name, DTYPE_BYTES[name]


def profile(config: dict[str, Any], dtype: str = "", name: str = "", weights: str = "") -> Model:
    """The unit profile of the model ``config`` describes (embedding, L blocks, head).

    ``weights``: the deployment's weight format (``resplit.core.weights``); parameter
    bytes are what the workers hold in it. ConfigError when the family cannot run it."""
    family = str(config.get("model_type", "")).lower()
    dtype_name, width = dtype_bytes(config, dtype)
    try:
        weights = check_family(weights, family)
    except WeightsError as exc:
        raise ConfigError(str(exc)) from None
    if weights != "fp32":
        units = _gated_decoder(config, family, width, weights)
    elif family not in SUPPORTED:
        units = _generic_decoder(config, family, width)
    elif family in GATED_DECODERS:
        units = _gated_decoder(config, family, width)
    elif family == "gpt2":
        units = _gpt2(config, width)
    else:
        units = _bert(config, width)
    label = name or str(config.get("_name_or_path") or family)
    return Model(label, family, dtype_name, tuple(units))


def _units(
    embed: tuple[int, float],
    block: tuple[int, float, int, float],
    head: tuple[int, float, int],
    layers: int,
    hidden_bytes: int,
) -> list[Unit]:
    """Units from (params, flops) of the embedding, (params, flops, kv, attn) of a block, and the head."""
    units = [Unit(0, "embedding", embed[0], 0, embed[1], hidden_bytes, 0.0)]
    params, flops, kv, attn = block
    units += [Unit(i, "block", params, kv, flops, hidden_bytes, attn) for i in range(1, layers + 1)]
    units.append(Unit(layers + 1, "head", head[0], 0, head[1], head[2], 0.0))
    return units


def _gated_decoder(config: dict[str, Any], family: str, width: int, weights: str = "fp32") -> list[Unit]:
    hidden = _int(config, "hidden_size")
    layers = _int(config, "num_hidden_layers")
    heads = _int(config, "num_attention_heads")
    kv_heads = _int(config, "num_key_value_heads", heads)
    head_dim = _int(config, "head_dim") if config.get("head_dim") is not None else hidden // heads
    inter = _int(config, "intermediate_size")
    vocab = _int(config, "vocab_size")
    q, kv = heads * head_dim, kv_heads * head_dim
    matmul = hidden * q + 2 * hidden * kv + q * hidden + 3 * hidden * inter
    extra = 2 * hidden  # input and post-attention RMSNorm
    qkv_bias = family == "qwen2" or bool(config.get("attention_bias", False))
    if qkv_bias:
        extra += q + 2 * kv
    if family != "qwen2" and config.get("attention_bias", False):
        extra += hidden  # o_proj bias follows attention_bias in llama and mistral
    if config.get("mlp_bias", False):
        extra += 2 * inter + hidden
    if family == "qwen3":
        extra += 2 * head_dim  # per-head q_norm and k_norm
    shapes = [(q, hidden), (kv, hidden), (kv, hidden), (hidden, q), (inter, hidden), (inter, hidden)]
    matrices = sum(matrix_bytes(rows, cols, weights, width) for rows, cols in [*shapes, (hidden, inter)])
    block = (matrices + extra * width, 2.0 * matmul, 2 * kv * width, 4.0 * q)
    embed = (embedding_bytes(vocab, hidden, weights, width), 0.0)
    head_bytes = hidden * width + matrix_bytes(vocab, hidden, weights, width)
    head = (head_bytes, 2.0 * vocab * hidden, vocab * width)
    return _units(embed, block, head, layers, hidden * width)


def _gpt2(config: dict[str, Any], width: int) -> list[Unit]:
    hidden = _int(config, "n_embd")
    layers = _int(config, "n_layer")
    _int(config, "n_head")
    inter = _int(config, "n_inner") if config.get("n_inner") is not None else 4 * hidden
    vocab = _int(config, "vocab_size")
    positions = _int(config, "n_positions", 1024)
    matmul = 3 * hidden * hidden + hidden * hidden + 2 * hidden * inter
    extra = 3 * hidden + hidden + inter + hidden + 4 * hidden  # biases, then two LayerNorms
    block = ((matmul + extra) * width, 2.0 * matmul, 2 * hidden * width, 4.0 * hidden)
    embed = ((vocab + positions) * hidden * width, 0.0)
    head = ((2 * hidden + vocab * hidden) * width, 2.0 * vocab * hidden, vocab * width)
    return _units(embed, block, head, layers, hidden * width)


def _bert(config: dict[str, Any], width: int) -> list[Unit]:
    hidden = _int(config, "hidden_size")
    layers = _int(config, "num_hidden_layers")
    _int(config, "num_attention_heads")
    inter = _int(config, "intermediate_size")
    vocab = _int(config, "vocab_size")
    positions = _int(config, "max_position_embeddings", 512)
    types = _int(config, "type_vocab_size", 2)
    matmul = 4 * hidden * hidden + 2 * hidden * inter
    extra = 4 * hidden + inter + hidden + 4 * hidden  # biases, then two LayerNorms
    block = ((matmul + extra) * width, 2.0 * matmul, 0, 4.0 * hidden)
    embed = (((vocab + positions + types) * hidden + 2 * hidden) * width, 0.0)
    head = ((hidden * hidden + hidden) * width, 2.0 * hidden * hidden, hidden * width)
    return _units(embed, block, head, layers, hidden * width)


def _generic_decoder(config: dict[str, Any], family: str, width: int) -> list[Unit]:
    """Units of a decoder the generic family serves, counted on the model's meta skeleton."""
    from resplit.models import UnsupportedModelError, family_of

    try:
        layout = family_of(family).layout  # refuses what the workers could not split
    except (UnsupportedModelError, AttributeError):
        raise ConfigError(f"model_type {family or '(missing)'!r} is not supported") from None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    try:
        parsed = AutoConfig.for_model(family, **settings)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(parsed)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"cannot build a {family} model from its config: {exc}") from None
    body = getattr(model, layout.body)
    hidden, vocab = int(parsed.hidden_size), int(parsed.vocab_size)
    heads = int(parsed.num_attention_heads)
    head_dim = int(getattr(parsed, "head_dim", None) or hidden // heads)
    kv_heads = getattr(parsed, "num_key_value_heads", None) or getattr(parsed, "num_kv_heads", None)
    if getattr(parsed, "multi_query", False) and not getattr(parsed, "new_decoder_architecture", False):
        kv_heads = 1  # Falcon-7B style: one shared key/value head
    kv_heads = int(kv_heads or heads)
    experts = next(
        (
            getattr(parsed, k)
            for k in ("num_local_experts", "num_experts", "n_routed_experts")
            if getattr(parsed, k, None)
        ),
        None,
    )
    active = (getattr(parsed, "num_experts_per_tok", None) or 1) / experts if experts else 1.0

    def size(module) -> tuple[int, float]:
        params, flops = 0, 0.0
        for name, tensor in module.state_dict(keep_vars=True).items():  # parameters and saved buffers
            params += tensor.numel()
            if tensor.dim() >= 2:
                flops += 2.0 * tensor.numel() * (active if "experts." in name else 1.0)
        return params, flops

    units = [Unit(0, "embedding", size(getattr(body, layout.embed))[0] * width, 0, 0.0, hidden * width, 0.0)]
    for i, block in enumerate(getattr(body, layout.blocks), start=1):
        params, flops = size(block)
        kv = 2 * kv_heads * head_dim * width
        units.append(Unit(i, "block", params * width, kv, flops, hidden * width, 4.0 * heads * head_dim))
    norm = size(getattr(body, layout.norm))[0]
    units.append(
        Unit(len(units), "head", (norm + vocab * hidden) * width, 0, 2.0 * vocab * hidden, vocab * width)
    )
    return units
