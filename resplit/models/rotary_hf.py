"""Rotary-decoder segments on transformers' own layers (``rotary.py`` says when).

Llama, Qwen2 (incl. sliding-window layers), Qwen3 and Mistral share one block
call: ``layer(h, attention_mask=, position_embeddings=, position_ids=, cache=,
use_cache=)`` with (cos, sin) from the model's rotary module. Masks are built
per layer type, as the whole model builds them, from a config sliced to this
segment's blocks.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, PretrainedConfig
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

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
from .packed import PackedPrompts
from .rotary import EMBED, HEAD, LAYERS, NORM, layer_types, tied


class RotaryDecoderSegment(PackedPrompts, Segment):
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
        self.local = local_config(config, blocks)
        self.types = layer_types(config, blocks)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(
                self.local, attn_implementation=config._attn_implementation
            )
        self.local._attn_implementation = skeleton.config._attn_implementation
        self.embed: nn.Module | None = skeleton.model.embed_tokens if self.has_embedding else None
        self.layers = skeleton.model.layers
        self.norm: nn.Module | None = skeleton.model.norm if self.has_head else None
        self.lm_head: nn.Module | None = skeleton.lm_head if self.has_head else None
        if self.embed is not None:
            load_into(self.embed, strip_prefix(tensors, EMBED), "embedding")
        load_into(
            self.layers, renumber(tensors, LAYERS, blocks.start), f"blocks {blocks.start}..{blocks.stop - 1}"
        )
        if self.norm is not None and self.lm_head is not None:
            load_into(self.norm, strip_prefix(tensors, NORM), "final norm")
            head = {"weight": tensors[EMBED + "weight"]} if tied(config) else strip_prefix(tensors, HEAD)
            load_into(self.lm_head, head, "lm_head")
        self.rotary = None
        if len(blocks):
            with torch.device(device):  # its inv_freq buffer is computed, not loaded
                self.rotary = type(skeleton.model.rotary_emb)(config=self.local)
        self.eval()
        check_materialized(self, f"{config.model_type} units [{start}, {end})")
        self.lean_unavailable = (
            lean.why_not(self.layers, self.types, self.local._attn_implementation)
            if len(self.layers)
            else "no blocks"
        )
        self._lean = lean.lean_blocks(self.layers) if self.lean_unavailable is None else None

    def set_weights(self, weights: str) -> None:
        """Quantized projections (``quant.py``); the lean step runs them as modules. fp32
        leaves the segment exactly as built."""
        if quant.weights_name(weights) == "fp32":
            return
        self.activation_dtype = next(self.parameters()).dtype
        quant.quantize(self, weights)
        if self._lean is not None:
            self._lean = lean.lean_blocks(self.layers)

    def new_state(self) -> SessionState:
        return SessionState(cache=DynamicCache(config=self.local) if len(self.layers) else None)

    def batches_decode(self) -> bool:
        return self.rotary is not None and self._lean is not None and self.lean_decode

    @torch.inference_mode()
    def step(self, state, input_ids=None, hidden=None, attention_mask=None) -> StepOutput:
        h = self.embed(input_ids) if self.embed is not None else hidden
        length = h.shape[1]
        position_ids = torch.arange(state.seq_len, state.seq_len + length, device=h.device).unsqueeze(0)
        if self.rotary is not None and length == 1 and self._lean is not None and self.lean_decode:
            h = lean.decode(self._lean, h, self.rotary(h, position_ids), state.cache)
        elif self.rotary is not None:
            kwargs = {
                "config": self.local,
                "inputs_embeds": h,
                "attention_mask": None,
                "cache": state.cache,
                "position_ids": position_ids,
            }
            masks = {}
            for kind in set(self.types):
                builder = (
                    create_sliding_window_causal_mask if kind == "sliding_attention" else create_causal_mask
                )
                masks[kind] = builder(**kwargs)
            cos_sin = self.rotary(h, position_ids)
            for layer, kind in zip(self.layers, self.types, strict=True):
                h = layer(
                    h,
                    attention_mask=masks[kind],
                    position_embeddings=cos_sin,
                    position_ids=position_ids,
                    cache=state.cache,
                    use_cache=True,
                )
        state.seq_len += length
        if self.lm_head is None:
            return StepOutput(hidden=h)
        return StepOutput(logits=self.lm_head(self.norm(h[:, -1:, :]))[:, -1, :])
