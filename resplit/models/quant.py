"""Weight-only quantization of a segment's projections (``resplit.core.weights``).

Each worker quantizes its own segment's tensors as it loads them: every
``nn.Linear`` of the blocks and the head becomes a :class:`QuantLinear`, the
embedding a bf16 table. Which code runs a projection was picked by measurement on
the 2-core development CPU (``bench/weights.py``, ``bench/vs_llamacpp.py``;
docs/BENCHMARKS.md):

* bf16, int8 and int4 decode steps (few rows) run on resplit's native kernels
  (``resplit/kernels``) where they build, streaming the weights at close to the
  memory bandwidth: bf16 with fp32 activations, int8 with each activation row as
  int16, int4 with each row as int8 in blocks of 32 columns (``vpdpbusd``; the
  cost in accuracy is in docs/BENCHMARKS.md, ``bench/gemv.py``); a prefill
  dequantizes the matrix to fp32 for the call and runs one GEMM.
* Elsewhere (no C compiler, ``RESPLIT_NATIVE_KERNELS=0``), torch's
  kernels run: ``_weight_int8pack_mm`` / ``_weight_int4pack_mm_for_cpu`` are fast
  only with a bf16 activation (1.7-2.7 ms with an fp32 one against ~70 us for a
  1024 x 2816 projection), so the input row is cast to bf16 and the result back.

Activations, the KV cache and everything between hops keep the deployment's dtype.
Each row of a batch is computed on its own (no activation statistics are shared
across rows), so a batched decode step and a split give the same tokens as one
session on the whole model with the same format.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from resplit.core.weights import INT4_GROUP, WeightsError, weights_name
from resplit.kernels import linear as kernels
from resplit.kernels import native

#: Input sizes each format's native kernel takes (multiples of).
NATIVE_ALIGN = {"bf16": native.ALIGN, "int8": native.ALIGN, "int4": 2 * INT4_GROUP}


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
        #: Whether the native kernels run this projection's decode steps (resplit/kernels);
        #: int4 is then packed for them alone and a prefill dequantizes per call.
        self.native = (
            weights in NATIVE_ALIGN
            and self.in_features % NATIVE_ALIGN[weights] == 0
            and linear.weight.device.type == "cpu"
            and native.active()
        )
        w = linear.weight.detach().to(torch.float32)
        if weights == "bf16":
            tensors = {"weight": w.to(torch.bfloat16)}
        elif weights == "int8":
            scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-8)
            q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
            tensors = {"qweight": q, "scales": scale.to(torch.bfloat16)}
        elif weights == "int4":
            tensors = _int4(w, self.native)
        else:
            raise WeightsError(f"QuantLinear has no format {weights!r}")
        for name, tensor in tensors.items():
            self.register_parameter(name, nn.Parameter(tensor.contiguous(), requires_grad=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.native:
            out = self._native(x)
            return out if self.bias is None else out + self.bias
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

    def _native(self, x: torch.Tensor) -> torch.Tensor:
        """A decode step through the kernels; more rows (a prefill) through torch, int8 with
        the same scales in fp32, int4 dequantized for the call."""
        lib, dtype = native.library(), x.dtype
        x32 = x.to(torch.float32)
        if not kernels.takes(x32, self.in_features, kernels.QUANTIZED_ROWS):
            return F.linear(x32, self._fp32_weight()).to(dtype)
        if self.weights == "bf16":
            call = lambda rows: native.gemv_dense(lib, rows, self.weight)  # noqa: E731
            return kernels.rows_through(x32, self.out_features, call, native.MAX_FP32_ROWS).to(dtype)
        if self.weights == "int8":
            call = lambda rows: native.gemv_int8(lib, rows, self.qweight, self.scales)  # noqa: E731
        else:
            call = lambda rows: native.gemv_int4(lib, rows, self.packed, self.scales, self.zeros)  # noqa: E731
        return kernels.rows_through(x32, self.out_features, call).to(dtype)

    def _fp32_weight(self) -> torch.Tensor:
        """The fp32 weight the native tensors stand for (a prefill's one GEMM)."""
        if self.weights == "bf16":
            return self.weight.float()
        if self.weights == "int8":
            return self.qweight.float() * self.scales.float()[:, None]
        return self._int4_weight()

    def _int4_weight(self) -> torch.Tensor:
        """The fp32 weight the native int4 tensors stand for."""
        low, high = self.packed & 15, self.packed >> 4
        rows, groups = self.packed.shape[0], self.in_features // INT4_GROUP
        q = torch.cat([low.view(rows, groups, 16), high.view(rows, groups, 16)], dim=2).float()
        scale, zero = self.scales.float()[..., None], self.zeros.float()[..., None]
        return ((q - 8) * scale + zero).view(rows, self.in_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, weights={self.weights}"


def _int4(w: torch.Tensor, for_native: bool) -> dict[str, torch.Tensor]:
    """Asymmetric 4-bit groups of INT4_GROUP columns, packed for torch's CPU int4 kernel or,
    ``for_native``, for resplit's (the same values): w ~= (q - 8) * scale + zero, q in 0..15."""
    rows, cols = w.shape
    if cols % INT4_GROUP:
        raise WeightsError(f"int4 needs input sizes divisible by {INT4_GROUP}, a projection has {cols}")
    groups = w.reshape(rows, cols // INT4_GROUP, INT4_GROUP)
    low, high = groups.amin(dim=2), groups.amax(dim=2)
    scale = ((high - low) / 15).clamp(min=1e-6).to(torch.bfloat16)
    zero = (low + scale.float() * 8).to(torch.bfloat16)
    start = zero.float() - scale.float() * 8
    q = ((groups - start[..., None]) / scale.float()[..., None]).round().clamp(0, 15).to(torch.int32)
    if for_native:
        return {"packed": native.pack_int4(q.reshape(rows, cols)), "scales": scale, "zeros": zero}
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
