"""Tokenizers from the deployment's own model directory, and incremental text.

transformers is imported when the first tokenizer is needed, not with the SDK: a
client that sends token ids never pays for it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@lru_cache(maxsize=16)
def tokenizer_for(model_dir: str) -> PreTrainedTokenizerBase:
    """The model's own tokenizer files (never fetched from a hub)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


class TextStream:
    """Turns a growing list of token ids into text deltas without splitting characters."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the rest
            return ""
        delta, self.text = text[len(self.text) :], text
        return delta
