"""BERT encoders (e.g. the real all-MiniLM-L6-v2): embeddings, encoder layers,
and a head unit that mean-pools over the padding mask and L2-normalizes, as
sentence-transformers does for that model. The BERT pooler is not used.

Encoders run one step per session (the whole batch); the padding mask travels
with the activation because every layer needs it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertModel, PretrainedConfig
from transformers.masking_utils import create_bidirectional_mask

from .base import (
    Family,
    Segment,
    SessionState,
    StepOutput,
    check_materialized,
    load_into,
    local_config,
    renumber,
    strip_prefix,
)


def _prefix(names) -> str:
    return "bert." if any(n.startswith("bert.") for n in names) else ""


def mean_pool_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' Pooling(mean) followed by Normalize()."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(summed / counts, p=2, dim=1)


class BertSegment(Segment):
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
            skeleton = BertModel(self.local, add_pooling_layer=False)
        self.local._attn_implementation = skeleton.config._attn_implementation
        self.embeddings: nn.Module | None = skeleton.embeddings if self.has_embedding else None
        self.layers = skeleton.encoder.layer

        if self.embeddings is not None:
            weights = {
                k: v
                for k, v in strip_prefix(tensors, f"{p}embeddings.").items()
                if k not in ("position_ids", "token_type_ids")
            }
            load_into(self.embeddings, weights, "embeddings")
            positions = config.max_position_embeddings
            self.embeddings.position_ids = torch.arange(positions, device=device).expand((1, -1))
            self.embeddings.token_type_ids = torch.zeros((1, positions), dtype=torch.long, device=device)
        layers = renumber(tensors, f"{p}encoder.layer.", blocks.start)
        load_into(self.layers, layers, f"layers {blocks.start}..{blocks.stop - 1}")
        self.eval()
        check_materialized(self, f"bert units [{start}, {end})")

    def new_state(self) -> SessionState:
        return SessionState()

    @torch.inference_mode()
    def step(self, state, input_ids=None, hidden=None, attention_mask=None) -> StepOutput:
        h = self.embeddings(input_ids=input_ids) if self.embeddings is not None else hidden
        if attention_mask is None:
            attention_mask = torch.ones(h.shape[:2], dtype=torch.long, device=h.device)
        if len(self.layers):
            mask = create_bidirectional_mask(
                config=self.local, inputs_embeds=h, attention_mask=attention_mask
            )
            for layer in self.layers:
                out = layer(h, attention_mask=mask)
                h = out[0] if isinstance(out, tuple) else out
        state.seq_len += h.shape[1]
        if self.has_head:
            return StepOutput(embeddings=mean_pool_normalize(h, attention_mask))
        return StepOutput(hidden=h)


class Bert(Family):
    model_types = ("bert",)
    generative = False

    def unit_of(self, name: str, config: PretrainedConfig) -> set[int]:
        bare = name.removeprefix("bert.")
        if bare.startswith("embeddings."):
            return {0}
        if bare.startswith("encoder.layer."):
            return {int(bare.split(".", 3)[2]) + 1}
        return set()  # pooler and task heads: not used by the embedding head

    def build(self, config, start, end, tensors, device, lean=True) -> Segment:
        return BertSegment(config, start, end, tensors, device)
