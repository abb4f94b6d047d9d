"""A session's KV cache for lean segments: transformers' ``DynamicCache`` for full-attention
layers, without transformers, appended in place.

Why not ``DynamicCache`` itself: importing it brings transformers' package machinery into a
worker (18 MiB of resident memory, measured with ``python -X importtime`` and VmRSS), and
a lean segment needs nothing else from transformers. The interface is the part of
``DynamicCache`` / ``DynamicLayer`` that resplit uses, with the same results: ``update``
appends along the sequence and returns everything cached, ``layers[i]`` has ``keys``,
``values``, ``is_initialized`` and ``lazy_initialization`` (KV migration, ``kv.py``), and
``get_seq_length`` counts what layer 0 holds.

Unlike ``DynamicCache``, which concatenates (``torch.cat``: the whole cache copied at every
step, 2.5 of the 16 ms of a decode step over 2,000 positions of the 15-block benchmark
Llama at int4 on the 2-core Xeon VM), a layer keeps its positions in buffers with room to
spare and writes only the new ones. ``keys`` and ``values`` are views of the filled part:
strided while room is left (each kv head's rows lie a buffer's length apart), which torch's
attention and the native block step (``resplit/kernels/block.py``: a head stride per
session) read in place.
"""

from __future__ import annotations

import torch

#: Room a full buffer grows by: an eighth of what it holds, at least GROW_MIN positions.
#: So a session's cache holds at most 12.5 % + 16 positions more than it uses (the splitter
#: plans a segment's memory by the positions used: kv_bytes_per_token x context), and a
#: long generation copies its cache a few dozen times, not at every step.
GROW_SHARE = 8
GROW_MIN = 16


class LeanLayer:
    """One layer's keys and values [batch, kv_heads, seq, head_dim]."""

    def __init__(self) -> None:
        self._keys: torch.Tensor | None = None  # buffers [batch, kv_heads, room, head_dim]
        self._values: torch.Tensor | None = None
        self._length = 0
        self.is_initialized = False

    @property
    def keys(self) -> torch.Tensor | None:
        return self._filled(self._keys)

    @keys.setter
    def keys(self, tensor: torch.Tensor | None) -> None:
        """A cache put in place whole (an imported session's, ``kv.py``): it is the buffer."""
        self._keys, self._length = tensor, _positions(tensor)

    @property
    def values(self) -> torch.Tensor | None:
        return self._filled(self._values)

    @values.setter
    def values(self, tensor: torch.Tensor | None) -> None:
        self._values, self._length = tensor, _positions(tensor)

    def _filled(self, buffer: torch.Tensor | None) -> torch.Tensor | None:
        if buffer is None:
            return torch.tensor([]) if self.is_initialized else None
        return buffer[..., : self._length, :] if buffer.dim() >= 2 else buffer

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self._keys = self._values = None
        self._length = 0
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self._length, self._length + key_states.shape[-2]
        if self._keys is None or self._keys.dim() != 4 or end > self._keys.shape[-2]:
            room = end + max(end // GROW_SHARE, GROW_MIN)
            self._keys = _grown(self._keys, key_states, start, room)
            self._values = _grown(self._values, value_states, start, room)
        self._keys[..., start:end, :] = key_states
        self._values[..., start:end, :] = value_states
        self._length = end
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._length if self.is_initialized else 0


def _positions(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None or tensor.dim() < 2 else tensor.shape[-2]


def _grown(buffer: torch.Tensor | None, like: torch.Tensor, filled: int, room: int) -> torch.Tensor:
    """A buffer of ``room`` positions shaped and typed as ``like``, holding ``buffer``'s first
    ``filled`` positions."""
    grown = like.new_empty(*like.shape[:-2], room, like.shape[-1])
    if filled:
        grown[..., :filled, :] = buffer[..., :filled, :]
    return grown


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
