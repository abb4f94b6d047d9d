"""Projections of a decode step through the native kernels, torch's beyond their reach.

fp32: a step of at most ``native.MAX_FP32_ROWS`` (16) activation rows goes to the kernels
in one call: 1.4-3.8x torch's GEMV/GEMM for 1-16 rows of a 2816 x 1024 matrix on the
development CPU (the rows in tiles of four against four weight rows); more rows (a
prefill) are compute-bound work for torch's GEMM.
bf16 / int8 / int4 (``QuantLinear``): torch's alternative for many rows is dequantizing the
matrix for the call, so the kernels take up to ``QUANTIZED_ROWS`` rows, in calls of
``MAX_ROWS`` rows (bf16: ``MAX_FP32_ROWS``, its tiles), each streaming the weights once;
a prefill dequantizes.
Every row is computed on its own either way, so a session's tokens do not depend on
its batch mates beyond float rounding.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from . import native

#: Quantized steps of up to this many rows take the kernels (in calls of MAX_ROWS rows).
QUANTIZED_ROWS = 64


def takes(x: torch.Tensor, in_features: int, most_rows: int = native.MAX_ROWS) -> bool:
    """Whether ``x`` (fp32 on the CPU, ``[..., in_features]``, at most ``most_rows`` rows)
    goes to the native kernels."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or in_features % native.ALIGN:
        return False
    rows = x.numel() // in_features
    return 0 < rows <= most_rows and native.active()


def rows_through(x: torch.Tensor, out_features: int, one_call, chunk: int = native.MAX_ROWS) -> torch.Tensor:
    """``one_call(rows)`` -> [rows, out] over ``x``'s rows in chunks of ``chunk``, shaped back."""
    shape = x.shape
    flat = x.reshape(-1, shape[-1]).contiguous()
    if flat.shape[0] <= chunk:
        out = one_call(flat)
    else:
        out = torch.cat([one_call(flat[i : i + chunk]) for i in range(0, flat.shape[0], chunk)])
    return out.view(*shape[:-1], out_features)


def linear_fp32(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` for fp32 weights, through the kernels where :func:`takes` says so."""
    if (
        weight.dtype != torch.float32
        or not weight.is_contiguous()
        or not takes(x, weight.shape[1], native.MAX_FP32_ROWS)
    ):
        return F.linear(x, weight, bias)
    lib = native.library()
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    out = native.gemv_dense(lib, flat, weight).view(*x.shape[:-1], weight.shape[0])
    return out if bias is None else out + bias
