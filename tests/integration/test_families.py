"""The generic decoder family (resplit/models/decoder.py) against the whole model.

One tiny random checkpoint of each family it serves, built locally from the
family's config class with what is special about it switched on (tiny.GENERIC):
split 1-4 ways as segments, a prefill and one-token decode steps give the greedy
tokens of ``model.generate`` on the whole model and its logits within 1e-4 (fp32).
Half way the session migrates: every segment's KV cache is exported by block
(``kv.export_layers``) and imported into the segments of another split (one of
them units with no blocks: the embedding alone, the head alone), as a re-split
does between workers, and decoding goes on there. A family that does not
fit is refused up front, naming it and saying why.
"""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch
from safetensors.torch import save_file
from support import greedy

from resplit.models import Checkpoint, UnsupportedModelError, family_of, kv, load_segment, num_units
from resplit.models.decoder import Decoder, DecoderSegment
from resplit.models.tiny import GENERIC_FAMILIES, build_tiny

PROMPT = [5, 17, 33, 40, 41, 8, 99, 100, 12, 13, 7, 250]  # longer than the 8-token windows
NEW_TOKENS = 10
MIGRATE_AFTER = 5  # tokens generated before the session moves to another split
CPU = torch.device("cpu")
#: Segments before the migration -> after ("edges": embedding and head alone, no blocks).
RESPLIT = {1: "edges", 2: 3, 3: 2, 4: 1}


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, tuple[Checkpoint, list[int], torch.Tensor]]:
    """Each family's checkpoint, with the whole model's greedy tokens and logits."""
    root, out = tmp_path_factory.mktemp("families"), {}
    for family in GENERIC_FAMILIES:
        model_dir = build_tiny(family, root / family)
        tokens, logits = greedy(model_dir, PROMPT, NEW_TOKENS)
        out[family] = (Checkpoint(model_dir), tokens, logits)
    return out


def _split(checkpoint: Checkpoint, pieces: int | str) -> list:
    """``pieces`` even segments, or "edges": the embedding alone, every block, the head alone."""
    units = num_units(checkpoint.config)
    if pieces == "edges":
        cuts = [0, 1, units - 1, units]
    else:
        cuts = [round(i * units / pieces) for i in range(pieces + 1)]
    pairs = itertools.pairwise(cuts)
    return [load_segment(checkpoint, a, b, CPU, torch.float32, huge_pages=False) for a, b in pairs]


def _step(segments, states, token_ids: list[int]) -> torch.Tensor:
    inputs = {"input_ids": torch.tensor([token_ids])}
    for segment, state in zip(segments, states, strict=True):
        out = segment.step(state, **inputs)
        inputs = {"hidden": out.hidden}
    return out.logits[0]


def _migrate(old_segments, old_states, new_segments, context: int) -> list:
    """Every block's cache out of the old split and into fresh states of the new one."""
    layers = [
        layer
        for segment, state in zip(old_segments, old_states, strict=True)
        for layer in kv.export_layers(segment, state, segment.block_range)
    ]
    states = []
    for segment in new_segments:
        state = segment.new_state()
        mine = [layer for layer in layers if layer.block in segment.block_range]
        kv.import_layers(segment, state, mine, context)
        assert state.seq_len == context
        states.append(state)
    return states


def _generate(segments: list, moved: list | None = None) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and their logits through ``segments``: the prompt, then one token a
    step; with ``moved``, the session migrates there after MIGRATE_AFTER tokens."""
    states = [s.new_state() for s in segments]
    tokens, logits, inputs = [], [], PROMPT
    for step in range(NEW_TOKENS):
        if moved is not None and step == MIGRATE_AFTER:
            states = _migrate(segments, states, moved, len(PROMPT) + step - 1)
            segments = moved
        logits.append(_step(segments, states, inputs))
        tokens.append(int(logits[-1].argmax()))
        inputs = [tokens[-1]]
    return tokens, torch.stack(logits)


@pytest.mark.parametrize("pieces", [1, 2, 3, 4])
@pytest.mark.parametrize("family", GENERIC_FAMILIES)
def test_split_decode_and_migration_match_the_whole_model(families, family, pieces):
    checkpoint, expected_tokens, expected_logits = families[family]
    segments = _split(checkpoint, pieces)
    assert [s.lean_unavailable is not None and not s.batches_decode() for s in segments] == [True] * pieces
    moved = _split(checkpoint, RESPLIT[pieces])  # re-split into another number of segments
    tokens, logits = _generate(segments, moved)
    assert tokens == expected_tokens
    assert (logits - expected_logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("family", ["llama", "qwen2-sliding", "mistral"])
def test_the_generic_decoder_serves_the_rotary_families_too(tiny_models, family):
    """Llama, Qwen2 and Mistral keep an adapter of their own for its lean one-token step
    only: the generic decoder splits them exactly as well (GPT-2 it refuses: its base
    model adds learned positions to whatever enters it)."""
    checkpoint = Checkpoint(tiny_models[family])
    generic = Decoder(checkpoint.config.model_type)
    units = num_units(checkpoint.config)
    cuts = [(0, 2), (2, 4), (4, units)]
    tensors = [checkpoint.load(generic.tensor_names(checkpoint, a, b), CPU) for a, b in cuts]
    config = checkpoint.config
    segments = [generic.build(config, a, b, t, CPU) for (a, b), t in zip(cuts, tensors, strict=True)]
    assert all(isinstance(s, DecoderSegment) for s in segments)
    expected_tokens, expected_logits = greedy(tiny_models[family], PROMPT, NEW_TOKENS)
    tokens, logits = _generate(segments)
    assert tokens == expected_tokens
    assert (logits - expected_logits).abs().max().item() <= 1e-5
    with pytest.raises(UnsupportedModelError, match="'gpt2': its base model holds \\['wpe', 'ln_f'\\]"):
        Decoder("gpt2")


def test_only_the_hosted_tensors_are_loaded(families):
    """A middle segment holds its blocks' weights, nothing of the embedding or head; the
    head of a tied family (Gemma) loads the embedding matrix it multiplies by."""
    checkpoint = families["mixtral"][0]
    middle = load_segment(checkpoint, 2, 4, CPU, torch.float32, huge_pages=False)
    names = [n for n, _ in middle.named_parameters()]
    assert names and all(n.startswith(("layers.0.", "layers.1.")) for n in names)
    assert any("experts.gate_up_proj" in n for n in names)  # per-expert checkpoint tensors, fused
    gemma = families["gemma2"][0]
    head_unit = num_units(gemma.config) - 1
    family = family_of("gemma2")
    assert family.unit_of("model.embed_tokens.weight", gemma.config) == {0, head_unit}
    assert family.unit_of("model.layers.2.mlp.up_proj.weight", gemma.config) == {3}
    neox = families["gpt_neox"][0]
    assert family_of("gpt_neox").unit_of("embed_out.weight", neox.config) == {num_units(neox.config) - 1}


def test_tensors_transformers_skips_on_load_are_skipped_too(families, tmp_path):
    """Old GPT-NeoX checkpoints (Pythia as published) carry each layer's causal-mask
    buffers and rotary table; transformers' loader skips them, and so does a segment."""
    checkpoint, expected_tokens, expected_logits = families["gpt_neox"]
    tensors = checkpoint.load(checkpoint.names(), CPU)
    for block in range(checkpoint.config.num_hidden_layers):
        prefix = f"gpt_neox.layers.{block}.attention."
        tensors[prefix + "bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool).tril()
        tensors[prefix + "masked_bias"] = torch.tensor(-1e9)
        tensors[prefix + "rotary_emb.inv_freq"] = torch.ones(2)
    shutil.copy(checkpoint.dir / "config.json", tmp_path / "config.json")
    save_file(tensors, tmp_path / "model.safetensors")
    old = Checkpoint(tmp_path)
    tokens, logits = _generate(_split(old, 3))
    assert tokens == expected_tokens
    assert (logits - expected_logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize(
    ("model_type", "reason"),
    [
        ("mamba", "'mamba': layers of type \\[.linear_attention.\\] keep state"),
        ("gemma3", "'gemma3': its config has no num_hidden_layers"),
        ("bloom", "'bloom': its base model holds .* besides the embedding"),
        ("t5", "'t5' is not a causal LM transformers ships"),
        ("opt", "'opt': its base model has no single list of 1 blocks"),
        ("qwen3_next", "'qwen3_next': layers of type \\['linear_attention'\\] keep state"),
    ],
)
def test_a_family_that_does_not_fit_is_refused_with_the_reason(model_type, reason):
    with pytest.raises(UnsupportedModelError, match=reason):
        family_of(model_type)
