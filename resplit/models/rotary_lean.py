"""Rotary-decoder segments built from safetensors and the config alone: no transformers modeling code.

Why: a worker's memory. transformers' model classes pull ``torch._dynamo``, sympy, scipy
and ``torch.distributed.tensor`` into the process along with the family's modeling
module (Llama: 258 -> 407 MiB before any weight is read, docs/BENCHMARKS.md, section
vs_llamacpp), more than issue 30's bound leaves a worker beside its weights
(1.2 x segment bytes + 300 MB). A segment of a Llama, Mistral, Qwen2 or Qwen3 whose
layers :mod:`lean` reproduces needs none of it: its tensors go into plain ``nn.Linear``,
``nn.Embedding`` and norm weights under the checkpoint's own names, the rotary table is
computed here as transformers computes it, and every step runs :mod:`lean`'s operations
(a prompt: :func:`lean.prefill`, transformers' layer op for op; a decode step:
:func:`lean.decode`, the native block step where it builds). Nothing of
transformers is needed: a worker reads the config with ``lean_config.py`` and keeps each
session's keys and values in a ``lean_cache.LeanCache`` (``DynamicCache``'s behaviour
for full-attention layers, what KV migration and the native step work with); a config
parsed by transformers works the same (the tests compare against its model classes).

What the lean ops do not reproduce (:func:`why_not`: sliding-window layers, an attention
implementation other than SDPA, head sizes SDPA does not take grouped, a rope that
changes with the sequence length, an activation other than SiLU) is built by
``rotary_hf.py`` on transformers' own layers, imported only when such a segment arrives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from . import lean, quant
from .base import (
    Segment,
    SessionState,
    StepOutput,
    check_materialized,
    load_into,
    local_config,
    renumber,
    strip_prefix,
)
from .lean_cache import LeanCache
from .packed import PackedPrompts
from .rotary import EMBED, HEAD, LAYERS, NORM, layer_types, tied

if TYPE_CHECKING:
    from transformers import PretrainedConfig

#: Rope types whose table is fixed at construction (the dynamic ones, "dynamic" and
#: "longrope", recompute it from the sequence length: transformers' path).
STATIC_ROPES = ("default", "linear", "yarn", "llama3", "proportional")
#: hidden_act values transformers maps to SiLU (``nn.SiLU`` computes the same ``F.silu``).
SILU = ("silu", "swish")
#: Which q/k/v/o projections carry a bias, per family (transformers' attention classes).
ATTENTION_BIAS = {
    "llama": lambda config: (config.attention_bias,) * 4,
    "qwen3": lambda config: (config.attention_bias,) * 4,
    "qwen2": lambda config: (True, True, True, False),
    "mistral": lambda config: (False,) * 4,
}


def why_not(config: PretrainedConfig, blocks: range) -> str | None:
    """Why the lean ops cannot run ``blocks`` of ``config``, or None when they can
    (decided from the config alone, before any tensor is read)."""
    if config.model_type not in ATTENTION_BIAS:
        return f"model type {config.model_type!r}"
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in (None, "sdpa"):
        return f"attention implementation {implementation!r} (the lean step reproduces 'sdpa')"
    if any(kind != "full_attention" for kind in layer_types(config, blocks)):
        return "sliding-window layers"
    if _head_dim(config) > lean.MAX_GQA_HEAD_DIM:
        return f"head size {_head_dim(config)} > {lean.MAX_GQA_HEAD_DIM}"
    if config.hidden_act not in SILU:
        return f"activation {config.hidden_act!r}"
    rope = _rope_type(config)
    if rope not in STATIC_ROPES:
        return f"rope type {rope!r} (its table changes with the sequence length)"
    return None


def _head_dim(config: PretrainedConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope_type(config: PretrainedConfig) -> str:
    parameters = getattr(config, "rope_parameters", None) or {}
    return parameters.get("rope_type", "default")


class RMSNorm(nn.Module):
    """transformers' RMSNorm weight and epsilon (:func:`lean._rms` computes it)."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size), requires_grad=False)
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lean._rms(x, lean._Norm(self.weight, self.variance_epsilon))


class Attention(nn.Module):
    """The attention's weights under transformers' names, with what :func:`lean.lean_blocks` reads."""

    def __init__(self, config: PretrainedConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = _head_dim(config)
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        hidden, heads, kv_heads = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
        q, k, v, o = ATTENTION_BIAS[config.model_type](config)
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=q)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=k)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=v)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=o)
        if config.model_type == "qwen3":  # per-head norms of queries and keys
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)


class MLP(nn.Module):
    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.act_fn = nn.SiLU()


class LeanDecoderLayer(nn.Module):
    """One block's weights, named as transformers names them (``self_attn.q_proj.weight``...),
    so a checkpoint's tensors load by name and quantization finds its ``nn.Linear``s."""

    def __init__(self, config: PretrainedConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class Rotary(nn.Module):
    """The (cos, sin) tables of transformers' rotary embedding, computed the same way."""

    def __init__(self, config: PretrainedConfig, device: torch.device) -> None:
        super().__init__()
        rope = _rope_type(config)
        if rope == "default":
            base, dim = config.rope_parameters["rope_theta"], _head_dim(config)
            with torch.device(device):
                inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
            self.attention_scaling = 1.0
        else:
            from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

            inv_freq, self.attention_scaling = ROPE_INIT_FUNCTIONS[rope](config, device)
        self.register_buffer("inv_freq", inv_freq.to(device), persistent=False)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


class LeanRotarySegment(PackedPrompts, Segment):
    """Units [start, end) of a rotary decoder on :mod:`lean`'s ops (see the module's docstring)."""

    #: Which code runs this segment's steps (the worker's load log and metrics name it).
    engine = "lean"

    def __init__(
        self,
        config: PretrainedConfig,
        start: int,
        end: int,
        tensors: dict[str, torch.Tensor],
        device: torch.device,
    ) -> None:
        super().__init__(config, start, end)
        blocks = self.block_range
        reason = why_not(config, blocks)
        if reason is not None:
            raise ValueError(f"no lean segment for {reason}")
        self.local = local_config(config, blocks)
        with torch.device("meta"):
            self.embed: nn.Module | None = None
            if self.has_embedding:  # given a weight, no random init: on meta, that would import torch._dynamo
                shape = (config.vocab_size, config.hidden_size)
                self.embed = nn.Embedding(*shape, _weight=torch.empty(shape))
            self.layers = nn.ModuleList(LeanDecoderLayer(self.local, i) for i in range(len(blocks)))
            self.norm: nn.Module | None = None
            self.lm_head: nn.Module | None = None
            if self.has_head:
                self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
                self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if self.embed is not None:
            load_into(self.embed, strip_prefix(tensors, EMBED), "embedding")
        load_into(
            self.layers, renumber(tensors, LAYERS, blocks.start), f"blocks {blocks.start}..{blocks.stop - 1}"
        )
        if self.norm is not None and self.lm_head is not None:
            load_into(self.norm, strip_prefix(tensors, NORM), "final norm")
            head = {"weight": tensors[EMBED + "weight"]} if tied(config) else strip_prefix(tensors, HEAD)
            load_into(self.lm_head, head, "lm_head")
        self.rotary = Rotary(self.local, device) if len(blocks) else None
        self.eval()
        check_materialized(self, f"{config.model_type} units [{start}, {end})")
        self.lean_unavailable = None if len(blocks) else "no blocks"
        self._lean = lean.lean_blocks(self.layers)

    def set_weights(self, weights: str) -> None:
        """Quantized projections (``quant.py``), run as modules by the lean ops; fp32 leaves
        the segment exactly as built."""
        if quant.weights_name(weights) == "fp32":
            return
        self.activation_dtype = next(self.parameters()).dtype
        quant.quantize(self, weights)
        self._lean = lean.lean_blocks(self.layers)

    def new_state(self) -> SessionState:
        return SessionState(cache=LeanCache(len(self.layers)) if len(self.layers) else None)

    def batches_decode(self) -> bool:
        return self.rotary is not None and self.lean_decode

    def _head(self, h: torch.Tensor) -> StepOutput:
        return StepOutput(logits=self.lm_head(self.norm(h))[:, -1, :])

    @torch.inference_mode()
    def step(self, state, input_ids=None, hidden=None, attention_mask=None) -> StepOutput:
        """A prompt (or a chunk of one) through :func:`lean.prefill`, transformers' layer op
        for op; one token through :func:`lean.decode` (the same ops, the native block step
        where it builds), or through :func:`lean.prefill` too with ``lean_decode`` off."""
        h = self.embed(input_ids) if self.embed is not None else hidden
        length = h.shape[1]
        if self.rotary is not None:
            position_ids = torch.arange(state.seq_len, state.seq_len + length, device=h.device).unsqueeze(0)
            cos_sin = self.rotary(h, position_ids)
            if length == 1 and self.lean_decode:
                h = lean.decode(self._lean, h, cos_sin, state.cache)
            else:
                h = lean.prefill(self._lean, h, cos_sin, state.cache)
        state.seq_len += length
        return StepOutput(hidden=h) if self.lm_head is None else self._head(h[:, -1:, :])


__all__ = ["LeanRotarySegment", "why_not"]
