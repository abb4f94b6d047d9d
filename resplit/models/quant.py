"""Weight-only quantization of a segment's projections (``resplit.core.weights``).

Each worker quantizes its own segment's tensors as it loads them: every
``nn.Linear`` of the blocks and the head becomes a :class:`QuantLinear`, the
embedding a bf16 table. The engine of each format was picked by measurement on
the 2-core development CPU (``bench/weights.py``; docs/BENCHMARKS.md): a
1024 x 2816 projection at batch 1 takes ~300-400 us as an fp32 GEMV, ~220 us as a
bf16 one, ~70 us through ``_weight_int8pack_mm`` and ``_weight_int4pack_mm_for_cpu``
when the activation is bf16, but 1.7-2.7 ms through the same two kernels with an
fp32 activation (the slow path the issue measured). So every quantized projection
casts its input row to bf16, runs the kernel, and casts the result back to the
deployment's dtype: activations, the KV cache and everything between hops keep
that dtype. Each row of a batch is computed on its own (weight-only: no
activation statistics are shared across rows), so a batched decode step and a
split give the same tokens as one session on the whole model with the same format.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from resplit.core.weights import INT4_GROUP, WeightsError, weights_name


class QuantLinear(nn.Module):
    """``nn.Linear`` with its weight in ``bf16``, ``int8`` or ``int4``; the bias, the
    input and the output keep the original dtype. Quantized tensors are parameters
    (``requires_grad=False``) so that ``param_bytes`` and the huge-page arena count
    them like any weight."""

    def __init__(self, linear: nn.Linear, weights: str) -> None:
        super().__init__()
        self.weights = weights
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bias = linear.bias
        w = linear.weight.detach().to(torch.float32)
        if weights == "bf16":
            tensors = {"weight": w.to(torch.bfloat16)}
        elif weights == "int8":
            scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-8)
            q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
            tensors = {"qweight": q, "scales": scale.to(torch.bfloat16)}
        elif weights == "int4":
            tensors = _int4(w)
        else:
            raise WeightsError(f"QuantLinear has no format {weights!r}")
        for name, tensor in tensors.items():
            self.register_parameter(name, nn.Parameter(tensor.contiguous(), requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        if self.weights == "bf16":
            out = F.linear(rows, self.weight)
        elif self.weights == "int8":
            out = torch.ops.aten._weight_int8pack_mm(rows, self.qweight, self.scales)
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.qweight, INT4_GROUP, self.qscales)
        out = out.to(x.dtype).view(*shape[:-1], self.out_features)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, weights={self.weights}"


def _int4(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Asymmetric 4-bit groups of INT4_GROUP columns, packed for the CPU int4 kernel:
    w ~= (q - 8) * scale + zero, q in 0..15."""
    rows, cols = w.shape
    if cols % INT4_GROUP:
        raise WeightsError(f"int4 needs input sizes divisible by {INT4_GROUP}, a projection has {cols}")
    groups = w.reshape(rows, cols // INT4_GROUP, INT4_GROUP)
    low, high = groups.amin(dim=2), groups.amax(dim=2)
    scale = ((high - low) / 15).clamp(min=1e-6).to(torch.bfloat16)
    zero = (low + scale.float() * 8).to(torch.bfloat16)
    start = zero.float() - scale.float() * 8
    q = ((groups - start[..., None]) / scale.float()[..., None]).round().clamp(0, 15).to(torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.reshape(rows, cols), 1)
    qscales = torch.stack([scale, zero], dim=2).transpose(0, 1).contiguous()  # [groups, rows, 2]
    return {"qweight": packed, "qscales": qscales}


class BF16Embedding(nn.Module):
    """A token embedding stored in bf16 whose lookups come back in ``dtype``."""

    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self.dtype = embedding.weight.dtype
        self.padding_idx = embedding.padding_idx
        self.weight = nn.Parameter(embedding.weight.detach().to(torch.bfloat16), requires_grad=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight).to(self.dtype)


def quantize(segment: nn.Module, weights: str) -> None:
    """Replace, in place, every ``nn.Linear`` of ``segment`` by a :class:`QuantLinear`
    of format ``weights`` and its ``embed`` by a :class:`BF16Embedding`; fp32 leaves it
    as it is. WeightsError when a projection does not fit the format."""
    weights = weights_name(weights)
    if weights == "fp32":
        return
    for name, module in list(segment.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, child_name, QuantLinear(child, weights))
        del name
    embed = getattr(segment, "embed", None)
    if isinstance(embed, nn.Embedding):
        segment.embed = BF16Embedding(embed)
