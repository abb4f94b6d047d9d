"""The model families resplit has an adapter of its own for, as plain data.

Why not in ``resplit.models``: importing that package imports torch (1-1.5 s and about
200 MiB), and the orchestrator, which only needs a model's family, unit count and kind
to deploy it, should not pay for torch or transformers for these families. For any
other model type the orchestrator asks transformers (the generic decoder decides
whether it can be served), which does import them.
"""

from __future__ import annotations

from typing import Any

#: model types -> (module under resplit.models, its Family subclass); each class's
#: ``model_types`` must match (tests/unit/test_families_table.py).
ADAPTERS: dict[tuple[str, ...], tuple[str, str]] = {
    ("llama", "qwen2", "qwen3", "mistral"): ("rotary", "RotaryDecoder"),
    ("gpt2",): ("gpt2", "GPT2"),
    ("bert",): ("bert", "Bert"),
}
#: Adapted model types that encode (no head that samples tokens).
ENCODERS = frozenset({"bert"})
#: Where a config.json keeps its block count, by the names transformers' configuration
#: classes save it under (GPT-2 writes ``n_layer``).
BLOCK_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def adapted(model_type: str) -> bool:
    """Whether ``model_type`` has an adapter of its own (else the generic decoder decides)."""
    return any(model_type in types for types in ADAPTERS)


def blocks_in(config: dict[str, Any]) -> int | None:
    """The block count a config.json states, or None when it states none usable."""
    for key in BLOCK_KEYS:
        if key in config:
            value = config[key]
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            return value if ok else None
    return None
