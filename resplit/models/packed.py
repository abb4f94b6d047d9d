"""Several sessions' steps as one forward, for the rotary decoder segments.

Why a module of its own: the transformers-built segment (``rotary_hf.py``) and the lean
one (``rotary_lean.py``) run batched decode steps (:func:`lean.decode_rows`) and packed
prompts (:func:`lean.rows`) the same way; one copy keeps them from drifting apart.
"""

from __future__ import annotations

import torch

from . import lean
from .base import StepOutput


class PackedPrompts:
    """``step_rows``, ``batches_prompts`` and ``step_packed`` for a segment with ``embed``,
    ``rotary``, ``_lean`` (its lean blocks), ``norm`` and ``lm_head``, whose
    ``batches_decode`` says whether its lean step runs (a prompt batch takes the same path)."""

    @torch.inference_mode()
    def step_rows(self, states, input_ids=None, hidden=None) -> StepOutput:
        """One new token of each session as one batched forward (``lean.decode_rows``):
        per-row positions, per-session caches and attention."""
        if not self.batches_decode():
            return super().step_rows(states, input_ids, hidden)
        h = self.embed(input_ids) if self.embed is not None else hidden
        position_ids = torch.tensor([[s.seq_len] for s in states], device=h.device)
        h = lean.decode_rows(self._lean, h, self.rotary(h, position_ids), [s.cache for s in states])
        for state in states:
            state.seq_len += 1
        if self.lm_head is None:
            return StepOutput(hidden=h)
        return StepOutput(logits=self.lm_head(self.norm(h[:, -1:, :]))[:, -1, :])

    def batches_prompts(self) -> bool:
        return self.batches_decode()

    @torch.inference_mode()
    def step_packed(self, states, lengths, input_ids=None, hidden=None) -> StepOutput:
        """Several sessions' prompts as one forward (``lean.rows``): the projections and
        MLPs over every token at once, attention per session."""
        if not self.batches_prompts():
            return super().step_packed(states, lengths, input_ids, hidden)
        h = self.embed(input_ids) if self.embed is not None else hidden
        positions = [torch.arange(s.seq_len, s.seq_len + n) for s, n in zip(states, lengths, strict=True)]
        position_ids = torch.cat(positions).unsqueeze(0).to(h.device)
        cos_sin = self.rotary(h, position_ids)
        h = lean.rows(self._lean, h, cos_sin, [s.cache for s in states], lengths)
        for state, length in zip(states, lengths, strict=True):
            state.seq_len += length
        if self.lm_head is None:
            return StepOutput(hidden=h)
        last = torch.tensor(lengths, device=h.device).cumsum(0) - 1
        return StepOutput(logits=self.lm_head(self.norm(h[:, last, :]))[0])
