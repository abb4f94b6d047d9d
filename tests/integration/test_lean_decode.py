"""The lean segments (resplit/models/rotary_lean.py, lean.py) against transformers' own layers.

Real tiny models of each rotary family, saved as safetensors and loaded twice as
segments: built by resplit alone (no transformers model code) and on transformers'
layers. The prompt and every decode step run through both and must give bitwise
the same hidden states or logits, and the same cache, when the projections run on
torch's kernels; through the native decode kernels (resplit/kernels, the default
where they build) the sums are ordered otherwise, and every value must be within
1e-5 of transformers'.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen3Config

from resplit.kernels import native
from resplit.models import Checkpoint, lean, load_segment
from resplit.models.tiny import build_tokenizer, tiny_config

PROMPT = [5, 17, 33, 8, 91, 40, 12, 7, 66, 150, 23]
STEPS = 12
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8,
}
_decode = lean.decode


def _save(config, out) -> object:
    """A random model of ``config`` whose biases are random too (transformers starts them at 0,
    where a step that forgot one would still agree)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".bias"):
                parameter.normal_(0, 0.5)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory) -> dict[str, object]:
    root, vocab = tmp_path_factory.mktemp("lean"), len(build_tokenizer())
    # Qwen3 (per-head q/k norms) is served by the rotary adapter but is not a tiny family.
    qwen3 = Qwen3Config(**tiny_config("llama", vocab).to_dict() | {"model_type": "qwen3", "head_dim": 16})
    return {
        **tiny_models,
        "qwen3": _save(qwen3, root / "qwen3"),
        "qwen2": _save(tiny_config("qwen2", vocab), root / "qwen2"),  # q, k and v biases
        "llama-biased": _save(
            tiny_config("llama", vocab, attention_bias=True, mlp_bias=True), root / "llama-b"
        ),
        "mistral-no-window": _save(tiny_config("mistral", vocab, sliding_window=None), root / "mistral"),
        # a rope table scaled at construction (transformers' rope functions compute it for the lean build too)
        "llama-rope3": _save(tiny_config("llama", vocab, rope_parameters=LLAMA3_ROPE), root / "llama-rope3"),
    }


def _segments(model_dir, lean: bool = True) -> list:
    """Three segments (``lean`` off: on transformers' layers, their decode steps too)."""
    checkpoint = Checkpoint(model_dir)
    blocks = checkpoint.config.num_hidden_layers
    cuts = [(0, 2), (2, 4), (4, blocks + 2)]  # embedding + 1 block, 2 blocks, the rest + head
    segments = [
        load_segment(checkpoint, a, b, torch.device("cpu"), torch.float32, lean=lean) for a, b in cuts
    ]
    for segment in segments:
        segment.lean_decode = lean
    return segments


def _cache_tensors(state) -> list[torch.Tensor]:
    return [t for layer in state.cache.layers for t in (layer.keys, layer.values)]


def _same(kernels: str, a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a, b) if kernels == "torch" else torch.allclose(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kernels", ["torch", "native"])
@pytest.mark.parametrize(
    "family", ["llama", "llama-biased", "llama-rope3", "qwen2", "qwen3", "mistral-no-window"]
)
def test_lean_decode_steps_are_bitwise_those_of_transformers_layers(models, family, kernels, monkeypatch):
    if kernels == "native" and not native.active():
        pytest.skip("the native decode kernels could not be built here")
    monkeypatch.setenv("RESPLIT_NATIVE_KERNELS", "1" if kernels == "native" else "0")
    segments, plain = _segments(models[family]), _segments(models[family], lean=False)
    calls = []
    monkeypatch.setattr(lean, "decode", lambda *args: calls.append(1) or _decode(*args))
    assert [s.lean_unavailable for s in segments] == [None, None, None]
    assert [s.engine for s in segments] == ["lean"] * 3 and [s.engine for s in plain] == ["transformers"] * 3
    lean_states = [s.new_state() for s in segments]
    plain_states = [s.new_state() for s in plain]
    inputs = {"input_ids": torch.tensor([PROMPT])}
    for step in range(STEPS + 1):
        lean_inputs, plain_inputs = dict(inputs), dict(inputs)
        for segment, other, lean_state, plain_state in zip(
            segments, plain, lean_states, plain_states, strict=True
        ):
            lean_out = segment.step(lean_state, **lean_inputs)
            plain_out = other.step(plain_state, **plain_inputs)
            if lean_out.hidden is not None:
                assert _same(kernels, lean_out.hidden, plain_out.hidden), (family, step, segment.start)
                lean_inputs, plain_inputs = {"hidden": lean_out.hidden}, {"hidden": plain_out.hidden}
            else:
                assert _same(kernels, lean_out.logits, plain_out.logits), (family, step)
                token = int(lean_out.logits[0].argmax())
            if len(segment.block_range):
                assert lean_state.seq_len == plain_state.seq_len == len(PROMPT) + step
                for a, b in zip(_cache_tensors(lean_state), _cache_tensors(plain_state), strict=True):
                    assert _same(kernels, a, b)
        inputs = {"input_ids": torch.tensor([[token]])}
    assert len(calls) == STEPS * len(segments)  # every decode step of every segment took the lean step


@pytest.mark.parametrize(
    "family", ["llama", "llama-biased", "llama-rope3", "qwen2", "qwen3", "mistral-no-window"]
)
def test_a_prompt_in_chunks_is_bitwise_what_transformers_layers_compute(models, family):
    """A prompt run in chunks after a cache (the worker's --prefill-chunk-tokens): the lean
    prefill's masked, grouped-query path against transformers' layers, bit for bit (a
    prompt's projections run on torch's kernels in both)."""
    segments, plain = _segments(models[family]), _segments(models[family], lean=False)
    for segment, other in zip(segments, plain, strict=True):
        lean_state, plain_state = segment.new_state(), other.new_state()
        for start in range(0, len(PROMPT), 4):
            if segment.has_embedding:
                inputs = {"input_ids": torch.tensor([PROMPT[start : start + 4]])}
            else:
                torch.manual_seed(start)
                inputs = {
                    "hidden": torch.randn(1, len(PROMPT[start : start + 4]), segment.config.hidden_size)
                }
            got, expected = segment.step(lean_state, **inputs), other.step(plain_state, **inputs)
            if got.hidden is not None:
                assert torch.equal(got.hidden, expected.hidden), (family, segment.start, start)
            else:
                assert torch.equal(got.logits, expected.logits), (family, start)
        for a, b in zip(_cache_tensors(lean_state), _cache_tensors(plain_state), strict=True):
            assert torch.equal(a, b)


def test_lean_decode_matches_the_whole_model(models):
    """Qwen3 has no split-correctness test of its own: the lean split against transformers whole."""
    segments = _segments(models["qwen3"])
    model = AutoModelForCausalLM.from_pretrained(models["qwen3"]).eval()
    expected = model.generate(
        torch.tensor([PROMPT]),
        max_new_tokens=STEPS,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    states = [s.new_state() for s in segments]
    inputs, tokens, logits = {"input_ids": torch.tensor([PROMPT])}, [], []
    for _ in range(STEPS):
        for segment, state in zip(segments, states, strict=True):
            out = segment.step(state, **inputs)
            inputs = {"hidden": out.hidden}
        tokens.append(int(out.logits[0].argmax()))
        logits.append(out.logits[0])
        inputs = {"input_ids": torch.tensor([[tokens[-1]]])}
    assert tokens == expected.sequences[0, len(PROMPT) :].tolist()
    assert torch.allclose(torch.stack(logits), torch.cat(expected.logits), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("family", "reason"),
    [("qwen2-sliding", "sliding-window layers"), ("mistral", "sliding-window layers")],
)
def test_layers_the_lean_step_does_not_reproduce_keep_transformers_path(models, family, reason, monkeypatch):
    segments = _segments(models[family])
    assert any(s.lean_unavailable == reason for s in segments)
    assert all(s.engine == "transformers" for s in segments if s.lean_unavailable == reason)
    calls = []
    monkeypatch.setattr(lean, "decode", lambda *args: calls.append(1) or _decode(*args))
    for segment in segments:  # a decode step of the sliding-window segments takes transformers' path
        if segment.lean_unavailable:
            state = segment.new_state()
            if segment.has_embedding:
                segment.step(state, input_ids=torch.tensor([PROMPT]))
                segment.step(state, input_ids=torch.tensor([[9]]))
            else:
                hidden = torch.zeros(1, 4, segment.config.hidden_size)
                segment.step(state, hidden=hidden)
                segment.step(state, hidden=hidden[:, :1])
    assert calls == []


def test_eager_attention_keeps_transformers_path(models):
    checkpoint = Checkpoint(models["llama"])
    checkpoint.config._attn_implementation = "eager"
    segment = load_segment(checkpoint, 1, 3, torch.device("cpu"))
    assert "eager" in segment.lean_unavailable and segment.engine == "transformers"


def test_the_worker_setting_reaches_the_segment_and_its_load_log(models):
    from services.worker.core.loading import decode_path, load_hosted

    on, off = (
        load_hosted("lean", 1, 1, 3, str(models["llama"]), "", 0, torch.device("cpu"), lean_decode=flag)
        for flag in (True, False)
    )
    assert (on.segment.lean_decode, off.segment.lean_decode) == (True, False)
    assert (on.segment.engine, off.segment.engine) == ("lean", "transformers")
    assert decode_path(on.segment) == "lean"
    assert decode_path(off.segment) == "through the model's layers (--no-lean-decode)"
    sliding = load_hosted("lean", 1, 3, 5, str(models["qwen2-sliding"]), "", 0, torch.device("cpu"))
    assert decode_path(sliding.segment) == "through the model's layers (sliding-window layers)"
    embedding = load_hosted("lean", 1, 0, 1, str(models["llama"]), "", 0, torch.device("cpu"))
    assert decode_path(embedding.segment) == "through the model's layers (no blocks)"
    bert = load_hosted("lean", 1, 1, 3, str(models["bert"]), "", 0, torch.device("cpu"))
    assert decode_path(bert.segment) == "through the model's layers (no lean step for this family)"
