"""Any decoder transformers ships whose blocks are one list in its base model.

The common case, by design rather than by list: a causal LM whose base model
(``model``, ``gpt_neox``, ...) holds an input embedding, one ``ModuleList`` of
``num_hidden_layers`` decoder layers that run with a KV cache, and a final norm,
with an LM head beside it. A segment keeps a skeleton of the whole model built
from a config of its own blocks only (renumbered from 0, so its cache starts at
layer 0) and runs transformers' *own* forward on it: the base model's for a
segment without the head (its final norm replaced by the identity), the causal
LM's for the segment with the head. So masks per layer type (sliding and global
layers interleaved), rotary tables per layer type (Gemma 3), partial rotary
(Phi-3, GPT-NeoX), MoE routing inside the layer (Mixtral, Qwen3-MoE), the
layer's own keyword names (GPT-NeoX's ``layer_past``), Granite's residual and
attention multipliers and the head's post-processing (Gemma's final-logit
soft-capping, Granite's ``logits_scaling``) are transformers' code, not ours.

What is handled here, once:

* names: the checkpoint's tensor names go through transformers' own conversion
  mapping (Mixtral's per-expert ``w1``/``w3`` fused into ``gate_up_proj``,
  GPT-NeoX's ``embed_out`` -> ``lm_head``), so units are assigned and tensors
  loaded by the module that holds them, whatever the family calls it;
* tensors transformers' loader skips (old checkpoints' per-layer rotary tables,
  Pythia's saved causal-mask buffers) belong to no unit;
* buffers that are computed, not saved (rotary tables, Gemma's embedding scale):
  materialized by the model's own ``_init_weights``;
* the input scale a base model applies to whatever enters it
  (:data:`INPUT_SCALES`, Granite's ``embedding_multiplier``): kept only in the
  segment that hosts the embedding;
* per-block structure declared by index in the config: lists with one entry per
  block are sliced with the blocks, and the MoE schedule (:func:`_moe_schedule`)
  is renumbered, so a local layer is built as its global block was.

What does not fit is refused up front by :func:`check`, with the reason. These
segments take transformers' path for every step (``lean_unavailable`` says so)
and run batched rows one by one.
"""

from __future__ import annotations

import copy
import inspect
import re
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, PretrainedConfig
from transformers.conversion_mapping import get_model_conversion_mapping
from transformers.core_model_loading import (
    WeightConverter,
    WeightRenaming,
    dot_natural_key,
    rename_source_key,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .base import (
    Family,
    Segment,
    SessionState,
    StepOutput,
    UnsupportedModelError,
    check_materialized,
    load_into,
    num_blocks,
    renumber,
    strip_prefix,
)

#: Config attributes a base model multiplies its input by, whatever the input: only the
#: segment holding the embedding may apply them (elsewhere the input is a hidden state).
INPUT_SCALES = ("embedding_multiplier",)
#: Attention kinds whose cache is keys and values (what migration moves).
ATTENTION_TYPES = frozenset({"full_attention", "sliding_attention", "chunked_attention"})
#: Names a decoder layer gives its KV cache argument.
CACHE_ARGUMENTS = ("cache", "layer_past", "past_key_values")


@dataclass(frozen=True)
class Layout:
    """Where the parts of a family's model live, found on a skeleton of it."""

    body: str  # the base model's attribute on the causal LM ("model", "gpt_neox")
    embed: str  # attribute names on the body
    blocks: str
    norm: str
    head: str  # the LM head's attribute on the causal LM
    conversions: tuple  # transformers' checkpoint -> model renamings and converters
    #: Checkpoint tensors the model no longer has and transformers skips on load (old
    #: checkpoints' per-layer rotary tables, GPT-NeoX's causal-mask buffers).
    ignored: re.Pattern | None = None

    def prefix(self, part: str) -> str:
        return f"{self.body}.{getattr(self, part)}."

    def model_name(self, checkpoint_name: str) -> tuple[str, str | None]:
        """The model parameter a checkpoint tensor feeds, and the converter pattern
        that gathers it (None: a plain rename)."""
        renamings = [c for c in self.conversions if isinstance(c, WeightRenaming)]
        converters = [c for c in self.conversions if isinstance(c, WeightConverter)]
        return rename_source_key(checkpoint_name, renamings, converters)


def tied(config: PretrainedConfig) -> bool:
    return bool(getattr(config, "tie_word_embeddings", False))


def _moe_schedule(config: PretrainedConfig, blocks: range) -> dict:
    """MoE configs say which layers are sparse by global index: Qwen-MoE by
    ``mlp_only_layers`` and ``decoder_sparse_step``, DeepSeek and GLM-MoE by
    ``first_k_dense_replace`` (the first k dense); the same layers, renumbered."""
    dense_first = getattr(config, "first_k_dense_replace", None)
    if isinstance(dense_first, int):
        return {"first_k_dense_replace": min(max(dense_first - blocks.start, 0), len(blocks))}
    if not hasattr(config, "decoder_sparse_step") or not hasattr(config, "mlp_only_layers"):
        return {}
    experts = getattr(config, "num_experts", 0) or 0
    step = config.decoder_sparse_step or 1

    def sparse(g: int) -> bool:
        return g not in config.mlp_only_layers and experts > 0 and (g + 1) % step == 0

    return {
        "decoder_sparse_step": 1,
        "mlp_only_layers": [i for i, g in enumerate(blocks) if not sparse(g)],
    }


def segment_config(config: PretrainedConfig, blocks: range, embedding: bool) -> PretrainedConfig:
    """A copy of ``config`` describing only ``blocks``, renumbered from 0: every list with
    one entry per block (``layer_types`` and the like) sliced, the MoE schedule
    renumbered, and the input scales neutral unless this segment hosts the embedding."""
    local = copy.deepcopy(config)
    total = num_blocks(config)
    for name, value in vars(config).items():
        if "layer" in name and isinstance(value, list | tuple) and len(value) == total:
            setattr(local, name, type(value)(value[i] for i in blocks))
    for name, value in _moe_schedule(config, blocks).items():
        setattr(local, name, value)
    local.num_hidden_layers = len(blocks)
    if not embedding:
        for name in INPUT_SCALES:
            if getattr(local, name, None) is not None:
                setattr(local, name, 1.0)
    return local


def skeleton_of(config: PretrainedConfig) -> nn.Module:
    """The causal LM of ``config`` on the meta device (no memory, no initialization)."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, attn_implementation=config._attn_implementation)


def _layout(skeleton: nn.Module, blocks_expected: int) -> Layout:
    """The layout of ``skeleton``, or UnsupportedModelError saying what does not fit."""
    kind = skeleton.config.model_type
    body_name = getattr(skeleton, "base_model_prefix", "")
    body = getattr(skeleton, body_name, None) if body_name else None
    if body is None or body is skeleton:
        raise UnsupportedModelError(f"model type {kind!r}: its causal LM has no separate base model")
    embed, head = body.get_input_embeddings(), skeleton.get_output_embeddings()
    children = dict(body.named_children())
    names = {id(module): name for name, module in children.items()}
    lists = [n for n, m in children.items() if isinstance(m, nn.ModuleList) and len(m) == blocks_expected]
    heads = [n for n, m in skeleton.named_children() if m is head]
    beside = [
        n
        for n, m in skeleton.named_children()
        if m is not body and m is not head and any(True for _ in m.parameters())
    ]
    if beside:
        what = f"model type {kind!r}: its causal LM holds {beside}"
        raise UnsupportedModelError(f"{what} beside the base model and the head")
    if len(lists) != 1:
        raise UnsupportedModelError(
            f"model type {kind!r}: its base model has no single list of {blocks_expected} blocks"
        )
    if id(embed) not in names or not heads:
        raise UnsupportedModelError(f"model type {kind!r}: no input embedding and LM head of the usual kind")
    others = {n: m for n, m in children.items() if n not in (lists[0], names[id(embed)])}
    rest = [n for n, m in others.items() if any(True for _ in m.parameters())]
    if not rest:  # a norm without weights (OLMo's LayerNorm)
        rest = [n for n, m in others.items() if "Norm" in type(m).__name__]
    if len(rest) != 1:
        raise UnsupportedModelError(
            f"model type {kind!r}: its base model holds {rest or 'no'} weights besides the embedding and "
            f"the blocks, where one final norm was expected"
        )
    layer = children[lists[0]][0]
    arguments = inspect.signature(layer.forward).parameters
    if not any(name in arguments for name in CACHE_ARGUMENTS):
        raise UnsupportedModelError(
            f"model type {kind!r}: its blocks ({type(layer).__name__}) take no KV cache"
        )
    return Layout(
        body=body_name,
        embed=names[id(embed)],
        blocks=lists[0],
        norm=rest[0],
        head=heads[0],
        conversions=tuple(get_model_conversion_mapping(skeleton)),
        ignored=_ignored(skeleton),
    )


def _ignored(skeleton: nn.Module) -> re.Pattern | None:
    """The checkpoint names transformers' loader skips for this model (its declared
    ``_keys_to_ignore_on_load_unexpected`` and the exceptions it adds for every model)."""
    patterns = set(getattr(skeleton, "_keys_to_ignore_on_load_unexpected", None) or ())
    buffers = [name for name, _ in skeleton.named_buffers()]
    if any(name.endswith("rotary_emb.inv_freq") for name in buffers):
        patterns.add(r"rotary_emb\.inv_freq")
    if any(name.endswith("position_ids") for name in buffers):
        patterns.add(r"(^|\.)position_ids$")
    return re.compile("|".join(f"({p})" for p in sorted(patterns))) if patterns else None


def check(config: PretrainedConfig) -> Layout:
    """The layout of ``config``'s family, or UnsupportedModelError with the reason."""
    kind = config.model_type
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UnsupportedModelError(f"model type {kind!r} is not a causal LM transformers ships")
    if getattr(config, "num_hidden_layers", None) is None:
        raise UnsupportedModelError(
            f"model type {kind!r}: its config has no num_hidden_layers (a composite model; its text "
            "model's type may fit, e.g. gemma3_text)"
        )
    types = set(getattr(config, "layer_types", None) or ()) - ATTENTION_TYPES
    if types:
        raise UnsupportedModelError(
            f"model type {kind!r}: layers of type {sorted(types)} keep state other than an attention "
            "KV cache, which a split cannot move"
        )
    small = segment_config(config, range(min(1, num_blocks(config))), embedding=True)
    try:
        skeleton = skeleton_of(small)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        raise UnsupportedModelError(f"model type {kind!r}: cannot build it ({exc})") from None
    return _layout(skeleton, num_blocks(small))


@cache
def check_type(model_type: str) -> Layout:
    """:func:`check` on the family's default config (what ``family_of`` can know)."""
    try:
        config = AutoConfig.for_model(model_type)
    except (ValueError, KeyError):
        raise UnsupportedModelError(f"model type {model_type!r} is not one transformers knows") from None
    return check(config)


def convert(layout: Layout, tensors: dict[str, torch.Tensor], skeleton: nn.Module) -> dict[str, torch.Tensor]:
    """Checkpoint tensors -> model parameters, through transformers' conversion mapping
    (renamed; per-expert tensors merged into the fused ones the layers hold)."""
    patterns = {p: c for c in layout.conversions if isinstance(c, WeightConverter) for p in c.source_patterns}
    pending: dict[str, WeightRenaming | WeightConverter] = {}
    for name, tensor in sorted(tensors.items(), key=lambda kv: dot_natural_key(kv[0])):
        target, pattern = layout.model_name(name)
        if pattern is None:
            pending.setdefault(target, WeightRenaming(name, target))
            pattern = name
        else:
            pending.setdefault(target, copy.deepcopy(patterns[pattern]))
        pending[target].add_tensor(target, name, pattern, tensor)
    out = {}
    for target, transform in pending.items():
        for name, value in transform.convert(target, model=skeleton, config=skeleton.config).items():
            out[name] = value[0] if isinstance(value, list) else value
    return out


def _materialize_buffers(skeleton: nn.Module, device: torch.device) -> None:
    """Buffers computed at construction (rotary tables, embedding scales) are on the meta
    device in a skeleton; the model's own ``_init_weights`` fills them in on ``device``.
    Runs before the weights are assigned, so it cannot overwrite them."""
    for module in skeleton.modules():
        meta = [name for name, buffer in module.named_buffers(recurse=False) if buffer.is_meta]
        for name in meta:
            module._buffers[name] = torch.empty_like(module._buffers[name], device=device)
        if meta:
            skeleton._init_weights(module)


class DecoderSegment(Segment):
    def __init__(
        self,
        config: PretrainedConfig,
        start: int,
        end: int,
        tensors: dict[str, torch.Tensor],
        device: torch.device,
        layout: Layout,
    ) -> None:
        super().__init__(config, start, end)
        blocks = self.block_range
        self.local = segment_config(config, blocks, embedding=self.has_embedding)
        skeleton = skeleton_of(self.local)
        self.local._attn_implementation = skeleton.config._attn_implementation
        body = getattr(skeleton, layout.body)
        self.embed: nn.Module | None = getattr(body, layout.embed) if self.has_embedding else None
        self.layers: nn.ModuleList = getattr(body, layout.blocks)
        self.norm: nn.Module | None = getattr(body, layout.norm) if self.has_head else None
        self.lm_head: nn.Module | None = getattr(skeleton, layout.head) if self.has_head else None
        if not self.has_head:
            setattr(body, layout.norm, nn.Identity())
        _materialize_buffers(skeleton, device)
        named = convert(layout, tensors, skeleton)
        embed_weights = strip_prefix(named, layout.prefix("embed"))
        if self.embed is not None:
            load_into(self.embed, embed_weights, "embedding")
        load_into(
            self.layers,
            renumber(named, layout.prefix("blocks"), blocks.start),
            f"blocks {blocks.start}..{blocks.stop - 1}",
        )
        if self.norm is not None and self.lm_head is not None:
            load_into(self.norm, strip_prefix(named, layout.prefix("norm")), "final norm")
            head = embed_weights if tied(config) else strip_prefix(named, f"{layout.head}.")
            load_into(self.lm_head, head, "lm_head")
        # transformers' forward on the skeleton, held as a bound call so the skeleton stays
        # out of the module tree: the segment's parameters are the hosted ones only.
        self._run = (skeleton if self.has_head else body).__call__
        skeleton.eval()
        self.eval()
        check_materialized(self, f"{config.model_type} units [{start}, {end})")
        kind = type(self.layers[0]).__name__ if len(self.layers) else config.model_type
        self.lean_unavailable = f"no lean step for {kind} layers"

    def new_state(self) -> SessionState:
        return SessionState(cache=DynamicCache(config=self.local) if len(self.layers) else None)

    @torch.inference_mode()
    def step(self, state, input_ids=None, hidden=None, attention_mask=None) -> StepOutput:
        inputs = {"input_ids": input_ids} if self.embed is not None else {"inputs_embeds": hidden}
        length = next(iter(inputs.values())).shape[1]
        device = next(iter(inputs.values())).device
        position_ids = torch.arange(state.seq_len, state.seq_len + length, device=device).unsqueeze(0)
        extra = {"logits_to_keep": 1} if self.has_head else {}
        out = self._run(
            **inputs, position_ids=position_ids, cache=state.cache, use_cache=state.cache is not None, **extra
        )
        state.seq_len += length
        if self.has_head:
            return StepOutput(logits=out.logits[:, -1, :])
        return StepOutput(hidden=out.last_hidden_state)


class Decoder(Family):
    """The generic decoder family of one ``model_type`` (see the module's docstring)."""

    def __init__(self, model_type: str) -> None:
        self.model_types = (model_type,)
        self.layout = check_type(model_type)
        # a converter makes new tensors (fused experts) from the ones read
        self.loads_in_place = not any(isinstance(c, WeightConverter) for c in self.layout.conversions)

    def unit_of(self, name: str, config: PretrainedConfig) -> set[int]:
        head = num_blocks(config) + 1
        if self.layout.ignored is not None and self.layout.ignored.search(name):
            return set()
        target, _ = self.layout.model_name(name)
        if target.startswith(self.layout.prefix("embed")):
            return {0, head} if tied(config) else {0}
        if target.startswith(self.layout.prefix("blocks")):
            return {int(target[len(self.layout.prefix("blocks")) :].split(".", 1)[0]) + 1}
        if target.startswith(self.layout.prefix("norm")):
            return {head}
        if target.startswith(f"{self.layout.head}.") and not tied(config):
            return {head}
        return set()

    def build(self, config, start, end, tensors, device, lean=True) -> Segment:
        check(config)
        return DecoderSegment(config, start, end, tensors, device, self.layout)
