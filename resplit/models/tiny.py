"""Tiny random models of each supported family, saved like real checkpoints.

Nothing is downloaded at run time, so tests, the demo and benchmarks build
their models here: a config from the family's config class, random weights
(seeded), ``model.safetensors`` (optionally sharded), and a small byte-level
BPE tokenizer trained on a built-in text so generated ids decode to text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

CORPUS = (
    """\
Split inference runs one model across several nodes. The edge node keeps the
embedding and the head, so raw text and the generated tokens never leave it.
The middle blocks run where compute is cheap: a MEC server or the cloud.
When a link slows down or a node gets busy, the orchestrator moves a segment
or moves the split. Tokens stream back to the client one by one.
The quick brown fox jumps over the lazy dog. Hello world, hello edge, hello cloud.
"""
    * 4
)

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
FAMILIES = ("llama", "qwen2", "qwen2-sliding", "qwen3", "mistral", "gpt2", "bert")
#: Families served by the generic decoder (``decoder.py``), each with what is special about
#: it switched on: overrides on the decoder defaults of :func:`tiny_config`. Adding one
#: here is what it takes to put a family under test.
GENERIC = {
    "phi3": {"partial_rotary_factor": 0.5},  # fused qkv and gate_up projections, half the head rotated
    "gemma2": {  # sliding and global layers alternate; an 8-token window; soft-capped logits
        "head_dim": 16,
        "sliding_window": 8,
        "tie_word_embeddings": True,
        "final_logit_softcapping": 30.0,
        "attn_logit_softcapping": 50.0,
    },
    "gemma3_text": {  # two sliding layers, a global one, a sliding one: a rotary table per kind
        "head_dim": 16,
        "sliding_window": 8,
        "tie_word_embeddings": True,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        "final_logit_softcapping": 30.0,
    },
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    # dense and MoE blocks alternate: the schedule is by global block index
    "qwen3_moe": {
        "head_dim": 16,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "decoder_sparse_step": 2,
    },
    "olmo2": {},  # norms after attention and MLP, q/k norms over all heads
    "granite": {
        "embedding_multiplier": 6.0,
        "residual_multiplier": 0.5,
        "attention_multiplier": 0.1,
        "logits_scaling": 4.0,
    },
    "gpt_neox": {"rotary_pct": 0.25, "num_key_value_heads": None},  # parallel residual
    "falcon": {},  # transformer.h, one shared key/value head, parallel attention and MLP
    "stablelm": {},  # LayerNorm, a quarter of each head rotated
    "glm4_moe": {  # DeepSeek-style MoE: the first block dense, a shared expert beside the routed ones
        "head_dim": 16,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "first_k_dense_replace": 1,
        "n_shared_experts": 1,
        "n_group": 1,
        "topk_group": 1,
    },
}
#: Not in FAMILIES: the shared test fixture builds those for every run.
GENERIC_FAMILIES = tuple(GENERIC)


def build_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def tiny_config(family: str, vocab_size: int, **overrides: Any):
    """A small config of ``family`` (4 blocks, hidden 64) with ids inside the vocabulary."""
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}
    decoder = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
        **ids,
    }
    if family == "llama":
        config = LlamaConfig(**{**decoder, **overrides})
    elif family == "qwen2":
        config = Qwen2Config(**{**decoder, **overrides})
    elif family == "qwen2-sliding":
        # Layers 2 and 3 (0-based) use an 8-token window: decode crosses it quickly.
        config = Qwen2Config(
            **{
                **decoder,
                "use_sliding_window": True,
                "sliding_window": 8,
                "max_window_layers": 2,
                **overrides,
            }
        )
    elif family == "qwen3":  # q/k norms; head_dim set apart from hidden / heads
        config = Qwen3Config(**{**decoder, "head_dim": 16, **overrides})
    elif family == "mistral":
        config = MistralConfig(**{**decoder, "sliding_window": 16, **overrides})
    elif family == "gpt2":
        config = GPT2Config(
            **{
                "vocab_size": vocab_size,
                "n_embd": 64,
                "n_layer": 4,
                "n_head": 4,
                "n_positions": 512,
                **ids,
                **overrides,
            }
        )
    elif family in GENERIC:
        from transformers import AutoConfig

        settings = {k: v for k, v in {**decoder, **GENERIC[family]}.items() if v is not None}
        config = AutoConfig.for_model(family, **{**settings, **overrides})
    elif family == "bert":
        config = BertConfig(
            **{
                "vocab_size": vocab_size,
                "hidden_size": 64,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "intermediate_size": 128,
                "max_position_embeddings": 512,
                "pad_token_id": 3,
                **overrides,
            }
        )
    else:
        raise ValueError(
            f"unknown tiny family {family!r}; choose from {', '.join(FAMILIES + GENERIC_FAMILIES)}"
        )
    return config


def build_tiny(
    family: str, out_dir: str | Path, seed: int = 0, max_shard_size: str | None = None, **overrides: Any
) -> Path:
    """Save a tiny random ``family`` model with its tokenizer under ``out_dir``; returns the path."""
    out = Path(out_dir)
    tokenizer = build_tokenizer()
    config = tiny_config(family, len(tokenizer), **overrides)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config) if family == "bert" else AutoModelForCausalLM.from_config(config)
    model.eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, **kwargs)
    tokenizer.save_pretrained(out)
    return out
