"""GPT-2: learned positions added at the embedding unit, head tied to ``wte``.

Checkpoints saved from ``GPT2LMHeadModel`` prefix tensors with
``transformer.``; ones saved from ``GPT2Model`` do not. Both are accepted.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, PretrainedConfig
from transformers.masking_utils import create_causal_mask

from .base import (
    Family,
    Segment,
    SessionState,
    StepOutput,
    check_materialized,
    load_into,
    local_config,
    num_blocks,
    renumber,
    strip_prefix,
)


def _prefix(names: list[str] | dict) -> str:
    return "transformer." if any(n.startswith("transformer.") for n in names) else ""


def _tied(config: PretrainedConfig) -> bool:
    return bool(getattr(config, "tie_word_embeddings", True))


class GPT2Segment(Segment):
    def __init__(
        self,
        config: PretrainedConfig,
        start: int,
        end: int,
        tensors: dict[str, torch.Tensor],
        device: torch.device,
    ) -> None:
        super().__init__(config, start, end)
        p = _prefix(tensors)
        blocks = self.block_range
        self.local = local_config(config, blocks)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(
                self.local, attn_implementation=config._attn_implementation
            )
        self.local._attn_implementation = skeleton.config._attn_implementation
        body = skeleton.transformer
        self.wte: nn.Module | None = body.wte if self.has_embedding else None
        self.wpe: nn.Module | None = body.wpe if self.has_embedding else None
        self.h = body.h
        self.ln_f: nn.Module | None = body.ln_f if self.has_head else None
        self.lm_head: nn.Module | None = skeleton.lm_head if self.has_head else None

        if self.wte is not None and self.wpe is not None:
            load_into(self.wte, strip_prefix(tensors, f"{p}wte."), "wte")
            load_into(self.wpe, strip_prefix(tensors, f"{p}wpe."), "wpe")
        load_into(
            self.h, renumber(tensors, f"{p}h.", blocks.start), f"blocks {blocks.start}..{blocks.stop - 1}"
        )
        if self.ln_f is not None and self.lm_head is not None:
            load_into(self.ln_f, strip_prefix(tensors, f"{p}ln_f."), "ln_f")
            head = (
                {"weight": tensors[f"{p}wte.weight"]} if _tied(config) else strip_prefix(tensors, "lm_head.")
            )
            load_into(self.lm_head, head, "lm_head")
        self.eval()
        check_materialized(self, f"gpt2 units [{start}, {end})")

    def new_state(self) -> SessionState:
        return SessionState(cache=DynamicCache(config=self.local) if len(self.h) else None)

    @torch.inference_mode()
    def step(self, state, input_ids=None, hidden=None, attention_mask=None) -> StepOutput:
        length = (input_ids if input_ids is not None else hidden).shape[1]
        device = (input_ids if input_ids is not None else hidden).device
        position_ids = torch.arange(state.seq_len, state.seq_len + length, device=device).unsqueeze(0)
        if self.wte is not None and self.wpe is not None:
            h = self.wte(input_ids) + self.wpe(position_ids)
        else:
            h = hidden
        if len(self.h):
            mask = create_causal_mask(
                config=self.local,
                inputs_embeds=h,
                attention_mask=None,
                cache=state.cache,
                position_ids=position_ids,
            )
            for block in self.h:
                h = block(
                    h, cache=state.cache, attention_mask=mask, use_cache=True, position_ids=position_ids
                )
        state.seq_len += length
        if self.lm_head is None:
            return StepOutput(hidden=h)
        return StepOutput(logits=self.lm_head(self.ln_f(h[:, -1:, :]))[:, -1, :])


class GPT2(Family):
    model_types = ("gpt2",)

    def unit_of(self, name: str, config: PretrainedConfig) -> set[int]:
        head = num_blocks(config) + 1
        bare = name.removeprefix("transformer.")
        if bare.startswith("wte."):
            return {0, head} if _tied(config) else {0}
        if bare.startswith("wpe."):
            return {0}
        if bare.startswith("h."):
            return {int(bare.split(".", 2)[1]) + 1}
        if bare.startswith("ln_f.") or (name.startswith("lm_head.") and not _tied(config)):
            return {head}
        return set()

    def build(self, config, start, end, tensors, device, lean=True) -> Segment:
        return GPT2Segment(config, start, end, tensors, device)
