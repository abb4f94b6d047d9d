"""Choosing the next token from the head's logits.

Greedy when temperature is 0 (exactly ``argmax``, as ``model.generate`` with
``do_sample=False``); otherwise temperature, then top-k, then top-p (nucleus)
filtering, and a draw seeded by the client's seed and the token's index, so a
seeded generation is reproducible and a session that moves to another node
(or is replayed) mid-generation draws exactly what it would have drawn.

All of it runs where the logits are: on a GPU only the token id and its
log-probability cross to the host, in one copy, where the whole vocabulary's logits
did (issue 23). The draw is an inverse-CDF lookup of one uniform number that a CPU
generator gives for (seed, index), so a CPU node and a GPU node draw the same token
for the same distribution (``torch.multinomial`` with a device's own generator would
not), up to the rounding of the cumulative sum at a boundary.
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
        logits = logits.float()
        if self.temperature == 0:
            token = torch.argmax(logits)
            return _to_host(token, torch.log_softmax(logits, dim=-1)[token])
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
        uniform = torch.rand((), generator=generator, dtype=torch.float64)  # on the CPU: no device sync
        # In float64, uniform < 1 keeps the target below the total: the first position whose
        # running sum exceeds it has a probability above zero (a filtered token never wins).
        cumulative = probs.double().cumsum(dim=-1)
        target = (uniform.to(cumulative.device) * cumulative[-1]).reshape(1)
        token = torch.searchsorted(cumulative, target, right=True)[0].clamp(max=probs.numel() - 1)
        return _to_host(token, torch.log(probs[token]))

    def finish_reason(self, token: int, generated: int) -> str:
        """'' to go on, else why the generation ends after ``token``."""
        if token in self.stop_token_ids:
            return "stop_token"
        if self.max_new_tokens and generated >= self.max_new_tokens:
            return "max_new_tokens"
        return ""


def _to_host(token: torch.Tensor, logprob: torch.Tensor) -> tuple[int, float]:
    """The chosen token id and its log-probability, copied from the logits' device at once."""
    token_id, value = torch.stack([token.double(), logprob.double()]).tolist()
    return int(token_id), value
