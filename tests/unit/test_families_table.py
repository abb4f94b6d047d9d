"""The adapted families as plain data (resplit/core/families.py) and the orchestrator's
reading of a model with it (services/orchestrator/core/models.py), against the adapters
and transformers' own parse: the same family, unit count and kind either way, and for an
adapted family without importing torch or transformers at all."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import BertConfig, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from resplit.core.families import ADAPTERS, ENCODERS, adapted, blocks_in
from resplit.models import family_of
from services.orchestrator.core.models import (
    ModelDirError,
    _adapted_info,
    _transformers_info,
    inspect_model,
)

SMALL = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128}
CONFIGS = {
    "llama": LlamaConfig(num_hidden_layers=3, **SMALL),
    "mistral": MistralConfig(num_hidden_layers=5, **SMALL),
    "qwen2": Qwen2Config(num_hidden_layers=2, **SMALL),
    "qwen3": Qwen3Config(num_hidden_layers=4, **SMALL),
    "gpt2": GPT2Config(n_layer=3, n_embd=64, n_head=4),
    "bert": BertConfig(num_hidden_layers=6, **SMALL),
}


def test_the_table_matches_the_adapters():
    assert sorted(t for types in ADAPTERS for t in types) == sorted(CONFIGS)
    for types in ADAPTERS:
        for model_type in types:
            family = family_of(model_type)
            assert model_type in family.model_types
            assert family.generative == (model_type not in ENCODERS)
    assert not adapted("phi3") and not adapted("")


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_an_adapted_family_reads_the_same_as_through_transformers(model_type, tmp_path):
    CONFIGS[model_type].save_pretrained(tmp_path)
    plain = _adapted_info(tmp_path / "config.json")
    assert plain is not None
    assert plain == _transformers_info(str(tmp_path)) == inspect_model(str(tmp_path))


@pytest.mark.parametrize(
    "change",
    [
        {"num_hidden_layers": None},  # removed: transformers' default applies
        {"num_hidden_layers": 0},
        {"num_hidden_layers": True},
        {"num_hidden_layers": 2.5},
        {"model_type": "phi3"},  # not adapted: the generic decoder decides
    ],
)
def test_what_the_plain_reading_cannot_take_goes_to_transformers(change, tmp_path):
    raw = CONFIGS["llama"].to_dict() | change
    raw = {k: v for k, v in raw.items() if v is not None}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert _adapted_info(tmp_path / "config.json") is None


def test_a_missing_block_count_takes_transformers_default(tmp_path):
    raw = {k: v for k, v in CONFIGS["llama"].to_dict().items() if k != "num_hidden_layers"}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert inspect_model(str(tmp_path)).num_units == LlamaConfig().num_hidden_layers + 2


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"model_type": "no-such-family"}'])
def test_an_unreadable_config_is_a_clear_error(text, tmp_path):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ModelDirError, match="cannot use the model at"):
        inspect_model(str(tmp_path))


def test_blocks_in_reads_each_key_transformers_saves():
    assert blocks_in({"num_hidden_layers": 4}) == 4
    assert blocks_in({"n_layer": 3}) == 3
    assert blocks_in({"num_layers": 2}) == 2
    assert blocks_in({"hidden_size": 8}) is None


def test_reading_an_adapted_family_imports_neither_torch_nor_transformers(tmp_path):
    CONFIGS["llama"].save_pretrained(tmp_path)
    code = (
        "import sys\n"
        "from services.orchestrator.core.models import inspect_model\n"
        f"info = inspect_model({str(tmp_path)!r})\n"
        "print(info.num_units, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["5", "False", "False"]
