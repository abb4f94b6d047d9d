"""Choosing the next token from the head's logits.

Greedy when temperature is 0 (exactly ``argmax``, as ``model.generate`` with
``do_sample=False``); otherwise temperature, then top-k, then top-p (nucleus)
filtering, and a draw seeded by the client's seed and the token's index, so a
seeded generation is reproducible and a session that moves to another node
(or is replayed) mid-generation draws exactly what it would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Sampler:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 0.0
    seed: int = 0
    stop_token_ids: frozenset[int] = frozenset()
    max_new_tokens: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")

    def choose(self, logits: torch.Tensor, index: int = 0) -> tuple[int, float]:
        """(token id, its log-probability under the final distribution) for 1-D ``logits``;
        ``index`` is the 0-based position of this token among the generated ones."""
        logits = logits.float().cpu()
        if self.temperature == 0:
            token = int(torch.argmax(logits))
            return token, float(torch.log_softmax(logits, dim=-1)[token])
        scores = logits / self.temperature
        if self.top_k > 0:
            k = min(self.top_k, scores.numel())
            kth = torch.topk(scores, k).values[-1]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if 0 < self.top_p < 1:
            ordered, order = torch.sort(scores, descending=True)
            cumulative = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
            drop = cumulative > self.top_p
            drop[1:] = drop[:-1].clone()  # keep the token that crosses the threshold
            drop[0] = False
            scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % (1 << 63))
        token = int(torch.multinomial(probs, 1, generator=generator))
        return token, float(torch.log(probs[token]))

    def finish_reason(self, token: int, generated: int) -> str:
        """'' to go on, else why the generation ends after ``token``."""
        if token in self.stop_token_ids:
            return "stop_token"
        if self.max_new_tokens and generated >= self.max_new_tokens:
            return "max_new_tokens"
        return ""
