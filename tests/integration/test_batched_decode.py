"""A batched decode step (``Segment.step_rows``) against each session's own solo steps.

Real tiny models of every generative family, saved as safetensors and split three
ways. Sessions with prompts of different lengths run their decode steps batched
(joining and leaving between steps) and alone, from the same caches: a batch of
one is bitwise the solo step, a batch of many gives each session logits within
1e-4 of its solo run (fp32) and the same greedy tokens, and the caches stay each
session's own (what live migration exports).
"""

from __future__ import annotations

import pytest
import torch

from resplit.models import Checkpoint, load_segment

PROMPTS = [[5, 17, 33], [8, 91, 40, 12, 7, 66, 150], [23], [61, 62, 63, 64, 65], [9, 9, 9, 9]]
STEPS = 8


def _segments(model_dir) -> list:
    checkpoint = Checkpoint(model_dir)
    blocks = checkpoint.config.num_hidden_layers
    cuts = [(0, 2), (2, 4), (4, blocks + 2)]
    return [load_segment(checkpoint, a, b, torch.device("cpu"), torch.float32) for a, b in cuts]


def _prefill(segments, prompt) -> tuple[list, torch.Tensor]:
    states = [s.new_state() for s in segments]
    inputs = {"input_ids": torch.tensor([prompt])}
    for segment, state in zip(segments, states, strict=True):
        out = segment.step(state, **inputs)
        inputs = {"hidden": out.hidden}
    return states, out.logits[0]


def _solo(segments, states, token: int) -> torch.Tensor:
    inputs = {"input_ids": torch.tensor([[token]])}
    for segment, state in zip(segments, states, strict=True):
        out = segment.step(state, **inputs)
        inputs = {"hidden": out.hidden}
    return out.logits[0]


def _batched(segments, states_per_row: list[list], tokens: list[int]) -> torch.Tensor:
    inputs = {"input_ids": torch.tensor([[t] for t in tokens])}
    for k, segment in enumerate(segments):
        out = segment.step_rows([states[k] for states in states_per_row], **inputs)
        inputs = {"hidden": out.hidden}
    return out.logits


def _cache(states) -> list[torch.Tensor]:
    return [
        t
        for s in states
        if s.cache is not None
        for layer in s.cache.layers
        for t in (layer.keys, layer.values)
    ]


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen2-sliding", "qwen3", "mistral", "gpt2"])
def test_sessions_decoding_in_a_batch_get_their_solo_results(tiny_models, family):
    segments = _segments(tiny_models[family])
    batched = [_prefill(segments, p) for p in PROMPTS]
    solo = [_prefill(segments, p) for p in PROMPTS]
    tokens = [int(logits.argmax()) for _, logits in batched]
    solo_tokens = list(tokens)
    for step in range(STEPS):
        # sessions join and leave: row 2 sits out odd steps, row 4 starts at step 3
        rows = [i for i in range(len(PROMPTS)) if not (i == 2 and step % 2) and not (i == 4 and step < 3)]
        logits = _batched(segments, [batched[i][0] for i in rows], [tokens[i] for i in rows])
        for j, i in enumerate(rows):
            expected = _solo(segments, solo[i][0], solo_tokens[i])
            if len(rows) == 1:
                assert torch.equal(logits[j], expected), (family, step)
            else:
                assert torch.allclose(logits[j], expected, atol=1e-4, rtol=0), (family, step, i)
            tokens[i], solo_tokens[i] = int(logits[j].argmax()), int(expected.argmax())
            assert tokens[i] == solo_tokens[i], (family, step, i)
    for (states, _), (solo_states, _) in zip(batched, solo, strict=True):
        assert [s.seq_len for s in states] == [s.seq_len for s in solo_states]
        for a, b in zip(_cache(states), _cache(solo_states), strict=True):
            assert torch.allclose(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen2-sliding", "qwen3", "mistral", "gpt2"])
def test_a_batch_of_one_is_bitwise_the_solo_step(tiny_models, family):
    segments = _segments(tiny_models[family])
    one, solo = _prefill(segments, PROMPTS[1]), _prefill(segments, PROMPTS[1])
    token = int(one[1].argmax())
    for _ in range(STEPS):
        logits = _batched(segments, [one[0]], [token])[0]
        expected = _solo(segments, solo[0], token)
        assert torch.equal(logits, expected)
        token = int(expected.argmax())
    for a, b in zip(_cache(one[0]), _cache(solo[0]), strict=True):
        assert torch.equal(a, b)


def test_the_lean_families_batch_and_the_others_run_row_by_row(tiny_models):
    batches = {family: [s.batches_decode() for s in _segments(tiny_models[family])] for family in tiny_models}
    assert batches["llama"] == batches["qwen2"] == batches["qwen3"] == [True, True, True]
    assert batches["gpt2"] == [False, False, False]
    assert not any(batches["qwen2-sliding"]) or not all(batches["qwen2-sliding"])  # sliding layers: rows
    assert batches["bert"] == [False, False, False]


def _packed(segments, states_per_row: list[list], prompts: list[list[int]]) -> torch.Tensor:
    lengths = [len(p) for p in prompts]
    inputs = {"input_ids": torch.tensor([[t for p in prompts for t in p]])}
    for k, segment in enumerate(segments):
        out = segment.step_packed([states[k] for states in states_per_row], lengths, **inputs)
        inputs = {"hidden": out.hidden}
    return out.logits


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen2-sliding", "qwen3", "mistral", "gpt2"])
def test_prompts_packed_in_one_forward_get_their_solo_results(tiny_models, family):
    """Five sessions' prompts of different lengths as one packed forward (then, for
    three of them, a second chunk over the cache the first filled: a causal mask offset
    by the cache), against each prompt alone: logits within 1e-4, the same caches' worth
    of tokens, and decode steps after it with the same tokens."""
    segments = _segments(tiny_models[family])
    packed = [[s.new_state() for s in segments] for _ in PROMPTS]
    solo = [_prefill(segments, p) for p in PROMPTS]
    logits = _packed(segments, packed, PROMPTS)
    for i in range(len(PROMPTS)):
        assert torch.allclose(logits[i], solo[i][1], atol=1e-4, rtol=0), (family, i)
    more = [[70, 71, 72], [5], [80, 81]]
    logits = _packed(segments, packed[:3], more)
    for i in range(3):
        expected = solo[i][1]
        for token in more[i]:
            expected = _solo(segments, solo[i][0], token)
        assert torch.allclose(logits[i], expected, atol=1e-4, rtol=0), (family, i)
    assert [s.seq_len for s in packed[0]] == [s.seq_len for s in solo[0][0]]


def test_the_lean_families_pack_prompts_and_the_others_run_them_one_by_one(tiny_models):
    packs = {family: [s.batches_prompts() for s in _segments(tiny_models[family])] for family in tiny_models}
    assert packs["llama"] == packs["qwen3"] == [True, True, True]
    assert packs["gpt2"] == packs["mistral"] == packs["bert"] == [False, False, False]
