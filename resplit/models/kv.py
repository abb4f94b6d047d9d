"""Moving a session's KV cache between segments: export and import by layer.

Why by global block index: a segment renumbers its layers locally (block 7
may be local layer 0 here and local layer 3 on the next node after a
re-split), so the cache crosses nodes keyed by the block it belongs to, and
the importing segment files each layer under its own local index. A
sliding-window layer keeps only its window but has seen ``length`` tokens;
that count moves with it so masks and positions stay exactly right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .base import Segment, SessionState


class KvError(ValueError):
    """A cache that does not fit the importing segment or session."""


@dataclass
class LayerKV:
    """One block's cache for one session."""

    block: int
    keys: torch.Tensor
    values: torch.Tensor
    #: Tokens this layer has seen (more than keys.shape[-2] for a sliding window).
    length: int

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()


def _layers(state: SessionState) -> list:
    return [] if state.cache is None else list(state.cache.layers)


def export_layers(segment: Segment, state: SessionState, blocks: Iterable[int]) -> list[LayerKV]:
    """The cache of ``blocks`` (global indexes) that this segment runs, in order."""
    wanted = sorted(set(blocks) & set(segment.block_range))
    layers = _layers(state)
    first = segment.block_range.start
    out = []
    for block in wanted:
        layer = layers[block - first]
        if not getattr(layer, "is_initialized", False):
            continue  # the session has not run a step yet: nothing to move
        length = int(getattr(layer, "cumulative_length", layer.keys.shape[-2]))
        out.append(LayerKV(block, layer.keys, layer.values, length))
    return out


def import_layers(
    segment: Segment, state: SessionState, layers: Iterable[LayerKV], context_tokens: int
) -> int:
    """Install ``layers`` into a fresh ``state`` of ``segment``; returns bytes imported.

    Every block of the segment must be covered when the session has context,
    and every layer must have seen exactly ``context_tokens`` tokens."""
    by_block = {layer.block: layer for layer in layers}
    blocks = list(segment.block_range)
    extra = sorted(set(by_block) - set(blocks))
    if extra:
        raise KvError(f"blocks {extra} are not part of units [{segment.start}, {segment.end})")
    missing = [b for b in blocks if b not in by_block]
    if missing and context_tokens:
        raise KvError(f"no cache arrived for blocks {missing} of units [{segment.start}, {segment.end})")
    targets = _layers(state)
    total = 0
    for block, layer in by_block.items():
        if layer.length != context_tokens:
            raise KvError(f"block {block} has seen {layer.length} tokens, the session {context_tokens}")
        target = targets[block - segment.block_range.start]
        keys, values = layer.keys, layer.values
        if keys.dim() != 4 or keys.shape != values.shape:
            raise KvError(f"block {block}: keys {tuple(keys.shape)} and values {tuple(values.shape)} differ")
        device = next(segment.parameters()).device
        dtype = segment.activation_dtype or next(segment.parameters()).dtype
        keys, values = keys.to(device=device, dtype=dtype), values.to(device=device, dtype=dtype)
        target.lazy_initialization(keys, values)
        target.keys, target.values = keys, values
        if hasattr(target, "cumulative_length"):
            target.cumulative_length = layer.length
        total += layer.nbytes
    state.seq_len = context_tokens
    return total
