"""The lean segments' KV cache (resplit/models/lean_cache.py): DynamicCache's results,
appended in place."""

from __future__ import annotations

import torch

from resplit.models.lean_cache import GROW_MIN, GROW_SHARE, LeanCache


def _states(generator: torch.Generator, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, 2, tokens, 8)
    return torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)


def test_appends_return_what_concatenation_would_and_copy_only_when_full():
    """A prompt, then one position at a time: every update returns exactly the concatenation
    of everything appended; the buffer moves only when full (a few times over 300 steps),
    and a view handed out earlier keeps its values."""
    g = torch.Generator().manual_seed(3)
    cache = LeanCache(2)
    keys, values = _states(g, 12)
    seen_k, seen_v = keys, values
    got_k, got_v = cache.update(keys, values, 1)
    assert torch.equal(got_k, seen_k) and torch.equal(got_v, seen_v)
    first_view = got_k
    moves, where = 0, got_k.data_ptr()
    for _ in range(300):
        k, v = _states(g, 1)
        seen_k, seen_v = torch.cat([seen_k, k], dim=-2), torch.cat([seen_v, v], dim=-2)
        got_k, got_v = cache.update(k, v, 1)
        assert torch.equal(got_k, seen_k) and torch.equal(got_v, seen_v)
        moves += got_k.data_ptr() != where
        where = got_k.data_ptr()
    assert cache.get_seq_length(1) == 312 and cache.get_seq_length(0) == 0
    assert 1 <= moves <= 25, moves  # growth by an eighth: a few dozen copies at most, not 300
    assert torch.equal(first_view, seen_k[..., :12, :])
    room = cache.layers[1]._keys.shape[-2]
    assert 312 <= room <= 312 + max(312 // GROW_SHARE, GROW_MIN)  # the room left is bounded


def test_a_cache_put_in_place_whole_is_read_and_extended():
    """KV migration (kv.py import_layers) sets ``keys``/``values`` after lazy_initialization:
    they read back as set, and appending goes on after them."""
    g = torch.Generator().manual_seed(4)
    cache = LeanCache(1)
    layer = cache.layers[0]
    keys, values = _states(g, 5)
    layer.lazy_initialization(keys, values)
    assert layer.keys.numel() == 0 and cache.get_seq_length() == 0
    layer.keys, layer.values = keys, values
    assert torch.equal(layer.keys, keys) and cache.get_seq_length() == 5
    k, v = _states(g, 3)
    got_k, got_v = cache.update(k, v, 0)
    assert torch.equal(got_k, torch.cat([keys, k], dim=-2))
    assert torch.equal(got_v, torch.cat([values, v], dim=-2))


def test_an_untouched_layer_reports_nothing():
    layer = LeanCache(1).layers[0]
    assert layer.keys is None and layer.values is None and not layer.is_initialized
    assert layer.get_seq_length() == 0
