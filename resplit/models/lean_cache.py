"""A session's KV cache for lean segments: transformers' ``DynamicCache`` for full-attention
layers, without transformers.

Why not ``DynamicCache`` itself: importing it brings transformers' package machinery into a
worker (18 MiB of resident memory, measured with ``python -X importtime`` and VmRSS), and
a lean segment needs nothing else from transformers. The interface is the part of
``DynamicCache`` / ``DynamicLayer`` that resplit uses, with the same behaviour:
``update`` appends along the sequence with ``torch.cat`` and returns everything cached,
``layers[i]`` has ``keys``, ``values``, ``is_initialized`` and ``lazy_initialization``
(KV migration, ``kv.py``), and ``get_seq_length`` counts what layer 0 holds.
"""

from __future__ import annotations

import torch


class LeanLayer:
    """One layer's keys and values [batch, kv_heads, seq, head_dim], grown by concatenation."""

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.is_initialized = False

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.keys = torch.tensor([], dtype=key_states.dtype, device=key_states.device)
        self.values = torch.tensor([], dtype=value_states.dtype, device=value_states.device)
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys = torch.cat([self.keys, key_states], dim=-2)
        self.values = torch.cat([self.values, value_states], dim=-2)
        return self.keys, self.values

    def get_seq_length(self) -> int:
        if not self.is_initialized or self.keys.numel() == 0:
            return 0
        return self.keys.shape[-2]


class LeanCache:
    """The cache of a segment's ``num_layers`` full-attention layers, numbered from 0."""

    def __init__(self, num_layers: int) -> None:
        self.layers = [LeanLayer() for _ in range(num_layers)]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layers[layer_idx].update(key_states, value_states)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[layer_idx].get_seq_length() if layer_idx < len(self.layers) else 0
