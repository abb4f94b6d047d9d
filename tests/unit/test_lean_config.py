"""config.json read without transformers (resplit/models/lean_config.py) against transformers' own parse.

Every field a lean segment reads must come out as transformers' configuration class
makes it, whether the file states it or leaves it to the family's default; a config
the lean build cannot run must be declined (None), so transformers parses it.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig

from resplit.models import Checkpoint, load_segment
from resplit.models.lean_config import LeanConfig, parse, read
from resplit.models.rotary import layer_types
from resplit.models.rotary_lean import ATTENTION_BIAS, why_not
from resplit.models.tiny import build_tiny

SHAPE = {
    "vocab_size": 320,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
}
WIDE = {"num_attention_heads": 32, "hidden_size": 256}
#: (model_type, fields beyond SHAPE): files as people write them, most fields left to defaults.
FILES = [
    ("llama", {}),
    (
        "llama",
        {"num_key_value_heads": 2, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16"},
    ),
    ("llama", {"attention_bias": True, "mlp_bias": True, "head_dim": 32, "tie_word_embeddings": True}),
    ("llama", {"rope_scaling": {"rope_type": "default"}, "rope_theta": 5.0, "head_dim": None}),
    ("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}),
    ("mistral", {"sliding_window": None, **WIDE}),  # WIDE: the default key/value heads divide 32
    ("mistral", {"sliding_window": None, "num_key_value_heads": 4, "head_dim": 32}),
    ("qwen2", {"num_key_value_heads": 2}),
    ("qwen2", {"use_sliding_window": True, "max_window_layers": 8, "sliding_window": 16, **WIDE}),
    ("qwen3", WIDE),
    ("qwen3", {"head_dim": 16, "num_key_value_heads": 2, "attention_bias": True}),
]
#: Files the lean build cannot run as transformers would: declined.
DECLINED = [
    ("mistral", {}),  # a 4096-token sliding window by default
    ("qwen2", {"use_sliding_window": True, "max_window_layers": 2, "sliding_window": 16}),
    ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}),
    ("llama", {"hidden_act": "gelu"}),
    ("llama", {"quantization_config": {"quant_method": "gptq"}}),
    ("gpt2", {}),
    ("llama", {"num_key_value_heads": 3}),  # not a divisor of the heads: transformers' error
    ("llama", {"hidden_size": -64}),
]


def _transformers(tmp_path, raw: dict):
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return AutoConfig.from_pretrained(tmp_path, local_files_only=True)


def _read(tmp_path, raw: dict) -> LeanConfig | None:
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return read(tmp_path)


@pytest.mark.parametrize(("kind", "fields"), FILES)
def test_every_field_the_lean_build_reads_is_transformers_value(tmp_path, kind, fields):
    raw = {"model_type": kind, **SHAPE, **fields}
    expected, got = _transformers(tmp_path, raw), _read(tmp_path, raw)
    assert got is not None and why_not(expected, range(4)) is None
    blocks = range(expected.num_hidden_layers)
    for name in (*SHAPE, "num_key_value_heads", "hidden_act", "rms_norm_eps", "tie_word_embeddings"):
        assert getattr(got, name) == getattr(expected, name), name
    heads = expected.num_attention_heads
    assert got.head_dim == (getattr(expected, "head_dim", None) or expected.hidden_size // heads)
    assert got.rope_parameters == expected.rope_parameters
    assert ATTENTION_BIAS[kind](got) == ATTENTION_BIAS[kind](expected)
    assert bool(getattr(got, "mlp_bias", False)) == bool(getattr(expected, "mlp_bias", False))
    assert layer_types(got, blocks) == layer_types(expected, blocks)
    assert str(got.dtype).removeprefix("torch.") == str(expected.dtype).removeprefix("torch.")


@pytest.mark.parametrize(("kind", "fields"), DECLINED)
def test_configs_the_lean_build_cannot_run_are_left_to_transformers(kind, fields):
    assert parse({"model_type": kind, **SHAPE, **fields}) is None


def test_a_light_checkpoint_builds_the_same_segment_bit_for_bit(tmp_path):
    model_dir = build_tiny("llama", tmp_path / "llama")
    light, full = Checkpoint(model_dir, light=True), Checkpoint(model_dir)
    assert isinstance(light.config, LeanConfig) and not isinstance(full.config, LeanConfig)
    assert light.dtype == full.dtype
    outputs = []
    for checkpoint in (light, full):
        segment = load_segment(checkpoint, 0, 6, torch.device("cpu"))
        assert segment.engine == "lean"
        state, ids, logits = segment.new_state(), torch.tensor([[5, 17, 33, 8]]), []
        for _ in range(4):
            logits.append(segment.step(state, input_ids=ids).logits)
            ids = logits[-1].argmax(-1, keepdim=True)
        outputs.append(torch.stack(logits))
    assert torch.equal(*outputs)


def test_a_light_config_that_must_take_transformers_layers_is_parsed_by_transformers(tmp_path):
    model_dir = build_tiny("llama", tmp_path / "llama")
    segment = load_segment(Checkpoint(model_dir, light=True), 1, 3, torch.device("cpu"), lean=False)
    assert segment.engine == "transformers" and not isinstance(segment.config, LeanConfig)
