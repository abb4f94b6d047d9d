"""SafeMERGE's per-block decision and merge, as pure functions over tensors.

SafeMERGE (Djuhera et al., 2025, arXiv:2503.17239) restores the safety of a
fine-tuned model by merging with a safe model only the layers whose fine-tuning
update left the safety subspace. Per weight matrix i:

* the safety direction ``V_i = W_aligned_i - W_base_i`` (the aligned model minus
  the unaligned base it was aligned from) and its projection
  ``C_i = V_i V_i^T / ||V_i||_F``;
* the fine-tuning update ``dW_i = W_finetuned_i - W_aligned_i``;
* ``rho_i = <C_i dW_i, dW_i>_F / (||C_i dW_i||_F ||dW_i||_F)``: the cosine
  similarity between the update and its projection onto the safety subspace;
* a layer with ``rho_i < threshold`` has drifted and is merged,
  ``W = weight * W_finetuned + (1 - weight) * W_safe``; the others stay fine-tuned.

The paper decides per LoRA-adapted matrix; a deployment swaps whole blocks (units),
so a block is merged when any of its weight matrices drifted: its ``rho`` is the
smallest of its matrices' (named in the decision). A matrix the fine-tuning did not
change has nothing to merge (rho 1); one whose safety direction is zero gives the
update no subspace to stay in (rho 0). 1-D tensors (norms, biases) are not judged
but are merged with their block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

#: SafeMERGE's defaults here: merge a block whose rho is below 0.5, half and half.
DEFAULT_THRESHOLD = 0.5
DEFAULT_WEIGHT = 0.5


@dataclass(frozen=True)
class BlockDecision:
    """What the merge decided for one block (unit)."""

    unit: int
    #: The smallest projection cosine of the block's weight matrices.
    rho: float
    #: The matrix that has it ("" when the fine-tuning changed none).
    tensor: str
    #: ||dW||_F / ||W_aligned||_F over the block: how far fine-tuning moved it.
    drift: float
    merge: bool


def projection_cosine(update: torch.Tensor, safety: torch.Tensor) -> float:
    """SafeMERGE's rho of one weight matrix: cos(C dW, dW) with C = V V^T / ||V||_F."""
    delta, v = update.double(), safety.double()
    if not torch.any(delta):
        return 1.0
    norm_v = torch.linalg.matrix_norm(v)
    if norm_v == 0:
        return 0.0
    # C dW without forming the larger of V V^T (out x out) and V^T dW (in x in).
    wide = v.shape[0] <= v.shape[1]
    projected = ((v @ v.T) @ delta if wide else v @ (v.T @ delta)) / norm_v
    size = torch.linalg.matrix_norm(delta)
    reach = torch.linalg.matrix_norm(projected)
    if reach <= 1e-9 * norm_v * size:  # rounding noise: the update has no part in the subspace
        return 0.0
    denominator = reach * size
    return float(torch.sum(projected * delta) / denominator)


def decide_block(
    unit: int,
    finetuned: Mapping[str, torch.Tensor],
    aligned: Mapping[str, torch.Tensor],
    base: Mapping[str, torch.Tensor],
    threshold: float = DEFAULT_THRESHOLD,
) -> BlockDecision:
    """The decision for one block from its tensors in the three models (same names)."""
    rho, worst = 1.0, ""
    moved = size = 0.0
    for name in sorted(finetuned):
        update = finetuned[name].double() - aligned[name].double()
        moved += float(update.square().sum())
        size += float(aligned[name].double().square().sum())
        if finetuned[name].dim() != 2 or not torch.any(update):
            continue
        value = projection_cosine(update, aligned[name].double() - base[name].double())
        if not worst or value < rho:
            rho, worst = value, name
    drift = (moved / size) ** 0.5 if size else 0.0
    return BlockDecision(unit, rho, worst, drift, rho < threshold)


def merged_block(
    finetuned: Mapping[str, torch.Tensor], safe: Mapping[str, torch.Tensor], weight: float = DEFAULT_WEIGHT
) -> dict[str, torch.Tensor]:
    """``weight * finetuned + (1 - weight) * safe``, tensor by tensor, in the fine-tuned dtype."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the merge weight must be in [0, 1], got {weight}")
    return {
        name: (weight * tensor.double() + (1.0 - weight) * safe[name].double()).to(tensor.dtype)
        for name, tensor in finetuned.items()
    }


__all__ = [
    "DEFAULT_THRESHOLD",
    "DEFAULT_WEIGHT",
    "BlockDecision",
    "decide_block",
    "merged_block",
    "projection_cosine",
]
