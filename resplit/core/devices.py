"""Node profiles: a device table for emulation, and a calibration that measures one.

Shared by the splitter (cost model) and the worker (``--emulate DEVICE``).

A node's compute model is two numbers: sustained FLOP/s (prefill is compute
bound) and sustained memory bandwidth (batch-1 decode reads every weight once
per token, so it is bandwidth bound). The table holds datasheet peaks with
their sources; :data:`COMPUTE_EFFICIENCY` and :data:`BANDWIDTH_EFFICIENCY` turn
peaks into sustained figures. The bandwidth factor is calibrated against a
published number: Llama-3-8B batch-1 decode on an A100 runs at about 95 tok/s,
0.30 ms per decoder layer (436 MB of fp16 weights); 436 MB / (0.9 * 1555 GB/s)
= 0.31 ms. The compute factor is an assumption (typical model-FLOPs
utilisation of batch-1 prefill), not a measurement: calibrate real nodes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

GIB = 1024**3
COMPUTE_EFFICIENCY = 0.5
BANDWIDTH_EFFICIENCY = 0.9


@dataclass(frozen=True)
class Device:
    name: str
    memory_bytes: int
    #: Dense FP16/BF16 peak (tensor cores on GPUs).
    peak_flops: float
    #: Peak memory bandwidth, bytes per second.
    peak_bandwidth: float

    @property
    def flops_per_s(self) -> float:
        return self.peak_flops * COMPUTE_EFFICIENCY

    @property
    def memory_bandwidth_bps(self) -> float:
        return self.peak_bandwidth * BANDWIDTH_EFFICIENCY


DEVICES = {
    d.name.lower(): d
    for d in (
        # NVIDIA A100 Tensor Core GPU datasheet: 312 TFLOPS dense FP16/BF16, 40 GB HBM2 at 1,555 GB/s.
        Device("A100-40GB", 40 * GIB, 312e12, 1555e9),
        # NVIDIA H100 datasheet (SXM): 989 TFLOPS dense BF16 (1,979 with sparsity), 80 GB HBM3 at 3.35 TB/s.
        Device("H100-SXM", 80 * GIB, 989e12, 3.35e12),
        # NVIDIA Jetson AGX Orin technical brief: GPU 170 sparse INT8 TOPS -> 42.5 dense FP16 TFLOPS
        # (/2 dense, /2 FP16); 64 GB LPDDR5 shared with the CPU at 204.8 GB/s.
        Device("Jetson-AGX-Orin-64GB", 64 * GIB, 42.5e12, 204.8e9),
        # A desktop/server CPU: 8 cores x 3.0 GHz x 32 FP32 FLOP/cycle (AVX2: 2 FMA ports x 8 lanes x 2)
        # = 768 GFLOPS; dual-channel DDR4-3200 = 2 x 3200 MT/s x 8 B = 51.2 GB/s; 32 GB RAM.
        Device("CPU-8C-AVX2", 32 * GIB, 768e9, 51.2e9),
    )
}
ALIASES = {
    "a100": "a100-40gb",
    "h100": "h100-sxm",
    "jetson-orin": "jetson-agx-orin-64gb",
    "cpu": "cpu-8c-avx2",
}


def roofline(flops, bytes_read, flops_per_s, bandwidth_bps):
    """Seconds of one unit's work: max(compute time, weight/KV read time), on numpy
    arrays or scalars alike; an unknown bandwidth (0) means compute-bound. The
    splitter's cost model and the worker's emulated devices both use it."""
    bandwidth = np.asarray(bandwidth_bps, dtype=float)
    memory = np.asarray(bytes_read, dtype=float) / np.where(bandwidth > 0, bandwidth, np.inf)
    return np.maximum(np.asarray(flops, dtype=float) / flops_per_s, memory)


def lookup(name: str) -> Device | None:
    key = name.strip().lower()
    return DEVICES.get(ALIASES.get(key, key))


def known() -> list[str]:
    return [d.name for d in DEVICES.values()]


@dataclass(frozen=True)
class Calibration:
    flops_per_s: float
    memory_bandwidth_bps: float
    prefill_s: float
    decode_s: float


def calibrate(
    hidden: int = 1024,
    heads: int = 16,
    kv_heads: int = 4,
    inter: int = 2816,
    tokens: int = 128,
    repeats: int = 3,
) -> Calibration:
    """Time one Llama-shaped block on this machine (torch, CPU or the default CUDA device).

    Prefill of ``tokens`` tokens gives sustained FLOP/s; a one-token decode step
    (every weight read once) gives sustained memory bandwidth. Takes well under a
    second on a laptop CPU at the default size; torch is imported only here.
    """
    import torch
    import torch.nn.functional as F

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    head_dim = hidden // heads
    gen = torch.Generator(device="cpu").manual_seed(0)

    def weight(rows: int, cols: int) -> torch.Tensor:
        return (torch.randn(rows, cols, generator=gen) / cols**0.5).to(device, dtype)

    wq, wk, wv = (
        weight(hidden, hidden),
        weight(kv_heads * head_dim, hidden),
        weight(kv_heads * head_dim, hidden),
    )
    wo, gate, up, down = (
        weight(hidden, hidden),
        weight(inter, hidden),
        weight(inter, hidden),
        weight(hidden, inter),
    )
    norm1, norm2 = (
        torch.ones(hidden, device=device, dtype=dtype),
        torch.ones(hidden, device=device, dtype=dtype),
    )

    def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def block(x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        h = rms(x, norm1)
        q = F.linear(h, wq).view(1, length, heads, head_dim).transpose(1, 2)
        k = F.linear(h, wk).view(1, length, kv_heads, head_dim).transpose(1, 2)
        v = F.linear(h, wv).view(1, length, kv_heads, head_dim).transpose(1, 2)
        k, v = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1)
        x = x + F.linear(attn.transpose(1, 2).reshape(1, length, hidden), wo)
        h = rms(x, norm2)
        return x + F.linear(F.silu(F.linear(h, gate)) * F.linear(h, up), down)

    def timed(length: int) -> float:
        x = torch.randn(1, length, hidden, generator=gen).to(device, dtype)
        best = float("inf")
        with torch.inference_mode():
            block(x)
            for _ in range(repeats):
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                block(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - start)
        return best

    kv_dim = kv_heads * head_dim
    matmul = 2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * inter
    flops = tokens * 2.0 * matmul + 4.0 * hidden * tokens * (tokens + 1) / 2
    prefill_s, decode_s = timed(tokens), timed(1)
    weight_bytes = matmul * torch.finfo(dtype).bits // 8
    return Calibration(flops / prefill_s, weight_bytes / decode_s, prefill_s, decode_s)
