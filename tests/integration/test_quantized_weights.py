"""Quantized weights (``--weights``): each segment quantizes its own tensors as it loads.

The exactness contract, for the same engine and weights: a model split one to
three ways gives the same greedy tokens as the whole model loaded in the same
format, logits within 1e-4; so do the batched decode step, transformers' path
(no lean step), and a session whose KV cache was exported and imported midway
(migration). ``param_bytes`` reports the quantized bytes the splitter profiles.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from resplit.core.profiles import load_config, profile
from resplit.core.weights import WeightsError
from resplit.models import Checkpoint, load_segment, num_units
from resplit.models.kv import export_layers, import_layers
from resplit.models.tiny import build_tiny

PROMPTS = [[5, 17, 33], [8, 91, 40, 12, 7, 66, 150], [23], [61, 62, 63, 64, 65]]
STEPS = 6
FORMATS = ["bf16", "int8", "int4"]
CUTS = {1: [], 2: [3], 3: [2, 4]}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return build_tiny("llama", tmp_path_factory.mktemp("q") / "llama")


def _load(model_dir, weights: str, pieces: int = 1, lean: bool = True) -> list:
    checkpoint = Checkpoint(model_dir)
    bounds = [0, *CUTS[pieces], num_units(checkpoint.config)]
    segments = [
        load_segment(checkpoint, a, b, torch.device("cpu"), torch.float32, weights=weights, lean=lean)
        for a, b in itertools.pairwise(bounds)
    ]
    for segment in segments:
        segment.lean_decode = lean
    return segments


def _generate(segments, prompt: list[int], states=None) -> tuple[list[int], list[torch.Tensor]]:
    states = states or [s.new_state() for s in segments]
    tokens, logits, ids = [], [], prompt
    for _ in range(STEPS):
        inputs = {"input_ids": torch.tensor([ids])}
        for segment, state in zip(segments, states, strict=True):
            out = segment.step(state, **inputs)
            inputs = {"hidden": out.hidden}
        logits.append(out.logits[0])
        ids = [int(out.logits[0].argmax())]
        tokens += ids
    return tokens, logits


def _same(got, expected) -> None:
    assert got[0] == expected[0]
    for a, b in zip(got[1], expected[1], strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=0), (a - b).abs().max()


@pytest.mark.parametrize("weights", FORMATS)
@pytest.mark.parametrize("pieces", [1, 2, 3])
def test_split_quantized_matches_whole_quantized(llama, weights, pieces):
    whole = _load(llama, weights)
    split = _load(llama, weights, pieces)
    for prompt in PROMPTS:
        _same(_generate(split, prompt), _generate(whole, prompt))


@pytest.mark.parametrize("weights", FORMATS)
def test_quantized_lean_step_matches_the_model_layers(llama, weights):
    lean, layers = _load(llama, weights, 3), _load(llama, weights, 3, lean=False)
    assert all(s.lean_unavailable is None for s in lean[:2])
    assert [s.engine for s in lean] == ["lean"] * 3 and [s.engine for s in layers] == ["transformers"] * 3
    for prompt in PROMPTS:
        _same(_generate(lean, prompt), _generate(layers, prompt))


@pytest.mark.parametrize("weights", FORMATS)
def test_quantized_batched_decode_matches_solo_steps(llama, weights):
    segments = _load(llama, weights, 3)
    assert all(s.batches_decode() for s in segments)
    states = [[s.new_state() for s in segments] for _ in PROMPTS]
    solo = [[s.new_state() for s in segments] for _ in PROMPTS]
    tokens = []
    for prompt, a, b in zip(PROMPTS, states, solo, strict=True):
        _generate(segments, prompt, a)
        _generate(segments, prompt, b)
        tokens.append(prompt[0])
    for _ in range(STEPS):
        inputs = {"input_ids": torch.tensor([[t] for t in tokens])}
        for k, segment in enumerate(segments):
            out = segment.step_rows([row[k] for row in states], **inputs)
            inputs = {"hidden": out.hidden}
        for i, row in enumerate(solo):
            single = {"input_ids": torch.tensor([[tokens[i]]])}
            for segment, state in zip(segments, row, strict=True):
                expected = segment.step(state, **single)
                single = {"hidden": expected.hidden}
            assert torch.allclose(out.logits[i], expected.logits[0], atol=1e-4, rtol=0)
        tokens = [int(t) for t in out.logits.argmax(-1)]


@pytest.mark.parametrize("weights", FORMATS)
def test_quantized_kv_cache_migrates(llama, weights):
    segments = _load(llama, weights, 3)
    prompt = PROMPTS[1]
    states = [s.new_state() for s in segments]
    _generate(segments, prompt[:3], states)  # 3 prompt tokens and 5 generated: 8 in the cache
    moved = [s.new_state() for s in segments]
    for segment, state, target in zip(segments, states, moved, strict=True):
        layers = export_layers(segment, state, segment.block_range)
        import_layers(segment, target, layers, state.seq_len)
        assert all(layer.keys.dtype == torch.float32 for layer in target.cache.layers if layers)
    _same(_generate(segments, [7], moved), _generate(segments, [7], states))


@pytest.mark.parametrize("weights", FORMATS)
def test_quantized_param_bytes_match_the_splitter_profile(llama, weights):
    model = profile(load_config(str(llama)), "float32", weights=weights)
    fp32 = profile(load_config(str(llama)), "float32")
    for pieces in (1, 3):
        bounds = [0, *CUTS[pieces], len(model.units)]
        for segment, (a, b) in zip(_load(llama, weights, pieces), itertools.pairwise(bounds), strict=True):
            planned = sum(u.param_bytes for u in model.units[a:b])
            assert segment.param_bytes() == planned, (weights, a, b)
            assert planned < sum(u.param_bytes for u in fp32.units[a:b])


@pytest.mark.parametrize("weights", FORMATS)
def test_quantized_tokens_stay_close_to_fp32(llama, weights):
    """The error a format costs, against fp32 (loose: random tiny weights)."""
    fp32 = _load(llama, "fp32")
    quantized = _load(llama, weights)
    bound = {"bf16": 0.05, "int8": 0.1, "int4": 0.5}[weights]
    for prompt in PROMPTS:
        expected = _generate(fp32, prompt)[1][0]
        got = _generate(quantized, prompt)[1][0]
        assert (got - expected).abs().max() < bound


def test_a_family_that_cannot_run_a_format_is_refused(tiny_models):
    with pytest.raises(WeightsError, match="int8"):
        load_segment(Checkpoint(tiny_models["gpt2"]), 0, 2, torch.device("cpu"), weights="int8")
    with pytest.raises(WeightsError, match="one of"):
        load_segment(Checkpoint(tiny_models["llama"]), 0, 2, torch.device("cpu"), weights="int3")


def test_int4_needs_inputs_in_whole_groups(tmp_path):
    model = build_tiny("llama", tmp_path / "odd", hidden_size=48, intermediate_size=96, head_dim=12)
    with pytest.raises(WeightsError, match="divisible by 32"):
        load_segment(Checkpoint(model), 1, 2, torch.device("cpu"), weights="int4")
