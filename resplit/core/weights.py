"""Weight formats a deployment can ask its workers for, apart from the torch code
that applies them (``resplit.models.quant``), so the control services and the
splitter size and validate them without importing torch.

* ``fp32``: the checkpoint's tensors at the deployment's dtype, unquantized (the
  default; ``""`` means the same).
* ``bf16``: every projection matrix of the blocks and the head stored in bfloat16.
* ``int8``: the same matrices as int8 with one bfloat16 scale per output row.
* ``int4``: the same as 4-bit integers in groups of :data:`INT4_GROUP` input
  columns, each group with a bfloat16 scale and zero point.

In every format but fp32 the token embedding is stored in bfloat16 too; norms and
biases keep the deployment's dtype, and activations between hops, the KV cache and
the logits stay in it as well (weight-only quantization).
"""

from __future__ import annotations

WEIGHTS = ("fp32", "bf16", "int8", "int4")
#: Input columns per int4 group (one bf16 scale and zero point each).
INT4_GROUP = 32
#: Families whose segments can run quantized weights (``resplit.models.quant``): the
#: rotary decoders, whose projections are all ``nn.Linear``.
QUANTIZABLE_FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


class WeightsError(ValueError):
    """A weight format that does not exist or that this model cannot run."""


def weights_name(name: str) -> str:
    """The canonical format for ``name`` ("" is fp32), or WeightsError."""
    name = (name or "fp32").lower()
    if name not in WEIGHTS:
        raise WeightsError(f"weights must be one of {', '.join(WEIGHTS)}, got {name!r}")
    return name


def check_family(weights: str, family: str) -> str:
    """The canonical format, or WeightsError saying why ``family`` cannot run it."""
    weights = weights_name(weights)
    if weights != "fp32" and family not in QUANTIZABLE_FAMILIES:
        raise WeightsError(
            f"weights {weights} need a rotary decoder ({', '.join(QUANTIZABLE_FAMILIES)}); "
            f"model type {family!r} runs fp32 only"
        )
    return weights


def matrix_bytes(rows: int, cols: int, weights: str, width: int) -> int:
    """Bytes of one [rows, cols] projection matrix in ``weights`` (``width``: bytes per
    element of the deployment's dtype, what fp32 keeps)."""
    weights = weights_name(weights)
    if weights == "fp32":
        return rows * cols * width
    if weights == "bf16":
        return rows * cols * 2
    if weights == "int8":
        return rows * cols + rows * 2
    groups = -(-cols // INT4_GROUP)
    return rows * cols // 2 + rows * groups * 4


def embedding_bytes(rows: int, cols: int, weights: str, width: int) -> int:
    """Bytes of the token embedding: bf16 in every format but fp32."""
    return rows * cols * (width if weights_name(weights) == "fp32" else 2)
