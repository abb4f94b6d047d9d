"""Rotary-position decoders: Llama, Qwen2 (incl. sliding-window layers), Qwen3, Mistral.

They share one layout (``model.embed_tokens``, ``model.layers.N``, ``model.norm``,
``lm_head``), so one family maps their tensors to units. Two builders run a segment:
``rotary_lean.py`` (resplit's own ops, no transformers modeling code in the process:
what a worker builds whenever the config allows it) and ``rotary_hf.py``
(transformers' own layers: sliding windows, other attention implementations, a worker
run with ``--no-lean-decode``), imported only when a segment needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Family, Segment, num_blocks

if TYPE_CHECKING:
    from transformers import PretrainedConfig

EMBED, LAYERS, NORM, HEAD = "model.embed_tokens.", "model.layers.", "model.norm.", "lm_head."


def tied(config: PretrainedConfig) -> bool:
    return bool(getattr(config, "tie_word_embeddings", False))


def layer_types(config: PretrainedConfig, blocks: range) -> list[str]:
    """Attention type of each block, as the whole model would use it."""
    declared = getattr(config, "layer_types", None)
    if declared is not None:
        return [declared[i] for i in blocks]
    if config.model_type == "mistral" and getattr(config, "sliding_window", None) is not None:
        return ["sliding_attention"] * len(blocks)
    return ["full_attention"] * len(blocks)


class RotaryDecoder(Family):
    model_types = ("llama", "qwen2", "qwen3", "mistral")

    def unit_of(self, name: str, config: PretrainedConfig) -> set[int]:
        head = num_blocks(config) + 1
        if name.startswith(EMBED):
            return {0, head} if tied(config) else {0}
        if name.startswith(LAYERS):
            return {int(name[len(LAYERS) :].split(".", 1)[0]) + 1}
        if name.startswith((NORM, HEAD)):
            return set() if name.startswith(HEAD) and tied(config) else {head}
        return set()

    def build(self, config, start, end, tensors, device, lean=True) -> Segment:
        from . import rotary_lean

        blocks = range(max(start, 1) - 1, min(end, num_blocks(config) + 1) - 1)
        if lean and rotary_lean.why_not(config, blocks) is None:
            return rotary_lean.LeanRotarySegment(config, start, end, tensors, device)
        from .lean_config import LeanConfig
        from .rotary_hf import RotaryDecoderSegment

        if isinstance(config, LeanConfig):  # read without transformers; its layers need its config
            config = config.transformers_config()
        return RotaryDecoderSegment(config, start, end, tensors, device)
