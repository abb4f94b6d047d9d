"""Decode steps through a block on the native kernels (``block.c``): a lone session's
token, or one token of each of several sessions at once (a batched step).

``lean.py`` hands a block here when every session in the step brings one token, on the CPU in fp32, and
every projection is one the kernels run (fp32 weights, or bf16/int8/int4 ``QuantLinear`` on
the native kernels) with a SiLU MLP; anything else stays on lean's torch operations.
k and v are appended with the session's cache's own ``update`` (``lean_cache.py``'s, or
transformers' ``DynamicCache``) between the two native calls, so migration, replay and
batching find the cache as they always did; the second call reads it where it lies (a
head stride per session), copying only a cache laid out otherwise.

The engine reads the weights through raw pointers, so it is made on a block's first
step (after loading has packed the weights where they stay) and made again if the first
weight ever moves.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import torch

from . import native

#: block.c's proj_t.format codes (gemv.c's layouts).
FORMATS = {"fp32": 0, "int8": 1, "int4": 2, "bf16": 3}


class _Proj(ctypes.Structure):
    _fields_ = [
        ("format", ctypes.c_int),
        ("n", ctypes.c_int),
        ("k", ctypes.c_int),
        ("w", ctypes.c_void_p),
        ("scale", ctypes.c_void_p),
        ("zero", ctypes.c_void_p),
        ("bias", ctypes.c_void_p),
    ]


class _Block(ctypes.Structure):
    _fields_ = [
        ("hidden", ctypes.c_int),
        ("heads", ctypes.c_int),
        ("kv_heads", ctypes.c_int),
        ("head_dim", ctypes.c_int),
        ("eps", ctypes.c_float),
        ("qk_eps", ctypes.c_float),
        ("scaling", ctypes.c_float),
        ("attn_norm", ctypes.c_void_p),
        ("mlp_norm", ctypes.c_void_p),
        ("q_norm", ctypes.c_void_p),
        ("k_norm", ctypes.c_void_p),
        *((name, _Proj) for name in ("q", "k", "v", "o", "gate", "up", "down")),
    ]


def _ptr(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _fp32(tensor: torch.Tensor | None) -> bool:
    return tensor is None or (
        tensor.dtype == torch.float32 and tensor.is_contiguous() and tensor.device.type == "cpu"
    )


def _proj(proj: Any) -> tuple[_Proj, list[torch.Tensor]] | str:
    """The kernels' view of one lean projection, with the tensors it points into; or why not."""
    if isinstance(proj, tuple):
        weight, bias = proj
        if not (_fp32(weight) and _fp32(bias)) or weight.shape[1] % native.ALIGN:
            return "an fp32 projection the kernels cannot take"
        return _Proj(
            FORMATS["fp32"], weight.shape[0], weight.shape[1], weight.data_ptr(), None, None, _ptr(bias)
        ), [weight]
    if not getattr(proj, "native", False) or not _fp32(proj.bias):
        return f"a {getattr(proj, 'weights', type(proj).__name__)} projection off the native kernels"
    if proj.weights == "bf16":
        tensors = [proj.weight]
        view = _Proj(FORMATS["bf16"], proj.out_features, proj.in_features, proj.weight.data_ptr(), None, None)
    elif proj.weights == "int8":
        tensors = [proj.qweight, proj.scales]
        view = _Proj(
            FORMATS["int8"],
            proj.out_features,
            proj.in_features,
            proj.qweight.data_ptr(),
            proj.scales.data_ptr(),
        )
    else:
        tensors = [proj.packed, proj.scales, proj.zeros]
        view = _Proj(
            FORMATS["int4"], proj.out_features, proj.in_features, *(t.data_ptr() for t in tensors), None
        )
    view.bias = _ptr(proj.bias)
    return view, tensors


def why_not(block) -> str | None:
    """Why ``block`` (lean's ``_Block``) cannot take the native step, or None."""
    if native.library() is None:
        return "no native kernels here"
    if type(block.act).__name__ not in ("SiLU", "SiLUActivation"):
        return f"activation {type(block.act).__name__}"
    if block.head_dim % 2:
        return "an odd head size"
    norms = [block.attn_norm, block.mlp_norm, block.q_norm, block.k_norm]
    if not all(_fp32(n.weight) for n in norms if n is not None):
        return "norm weights that are not fp32 on the CPU"
    for proj in (block.q, block.k, block.v, block.o, block.gate, block.up, block.down):
        made = _proj(proj)
        if isinstance(made, str):
            return made
    return None


class Engine:
    """One block's native decode step for one session or a batch of them."""

    def __init__(self, block) -> None:
        views, self._tensors = {}, []
        for name in ("q", "k", "v", "o", "gate", "up", "down"):
            made = _proj(getattr(block, name))
            if isinstance(made, str):
                raise ValueError(made)
            views[name], tensors = made
            self._tensors += tensors
        self.head_dim = block.head_dim
        self.heads, self.kv_heads = views["q"].n // block.head_dim, views["k"].n // block.head_dim
        self.layer_idx = block.layer_idx
        q_norm, k_norm = block.q_norm, block.k_norm
        self._struct = _Block(
            views["q"].k,
            self.heads,
            self.kv_heads,
            block.head_dim,
            block.attn_norm.eps,
            q_norm.eps if q_norm is not None else 0.0,
            block.scaling,
            block.attn_norm.weight.data_ptr(),
            block.mlp_norm.weight.data_ptr(),
            _ptr(q_norm.weight if q_norm is not None else None),
            _ptr(k_norm.weight if k_norm is not None else None),
            *(views[name] for name in ("q", "k", "v", "o", "gate", "up", "down")),
        )
        self._norms = [n.weight for n in (block.attn_norm, block.mlp_norm, q_norm, k_norm) if n is not None]
        self._first = self._tensors[0].data_ptr()
        self._ref = ctypes.byref(self._struct)
        self._scratch: dict[tuple[int, int], _Buffers] = {}

    def current(self) -> bool:
        """Whether the weights are still where this engine points."""
        return self._tensors[0].data_ptr() == self._first

    def _buffers(self, rows: int) -> _Buffers:
        """This thread's q, k, v and pointer arrays for a step of ``rows`` rows, made once:
        the cache's append copies k and v, so the next step may write them again."""
        key = (threading.get_ident(), rows)
        made = self._scratch.get(key)
        if made is None:
            made = _Buffers(rows, self.heads, self.kv_heads, self.head_dim)
            if len(self._scratch) < 32:  # a few threads and batch sizes
                self._scratch[key] = made
        return made

    def step(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, caches: list) -> torch.Tensor:
        """``h`` [R, H] (the new token of each of R sessions, R <= ``native.MAX_BLOCK_ROWS``)
        through the block, row r at its own position (``cos``, ``sin`` [R, head_dim]);
        appends each row's k and v to ``caches[r]``."""
        lib, threads = native.library(), torch.get_num_threads()
        rows = h.shape[0]
        b = self._buffers(rows)
        code = lib.resplit_block_qkv(
            self._ref, rows, h.data_ptr(), cos.data_ptr(), sin.data_ptr(), b.q_ptr, b.k_ptr, b.v_ptr, threads
        )
        if code != 0:
            raise MemoryError(f"native block step: code {code}")
        # Each session's cache grows by its row; the tensors are kept alive until the call.
        # Read in place: each kv head's positions in a run, the heads b.strides[r] apart
        # (lean_cache.py leaves room after them); copied only when laid out otherwise.
        held, strided = [], lib.kv_strides
        for r, cache in enumerate(caches):
            keys, values = cache.update(b.k[r : r + 1], b.v[r : r + 1], self.layer_idx)
            if not (strided and _in_runs(keys, values)):
                keys, values = keys.contiguous(), values.contiguous()
            held += (keys, values)
            b.keys[r], b.values[r], b.lengths[r] = keys.data_ptr(), values.data_ptr(), keys.shape[2]
            b.strides[r] = keys.stride(1)
        out = torch.empty_like(h)
        lengths = (b.lengths_at, b.strides_at) if strided else (b.lengths_at,)
        code = lib.resplit_block_out(
            self._ref, rows, h.data_ptr(), b.q_ptr, b.keys_at, b.values_at, *lengths, out.data_ptr(), threads
        )
        if code != 0:
            raise MemoryError(f"native block step: code {code}")
        return out


def _in_runs(keys: torch.Tensor, values: torch.Tensor) -> bool:
    """Whether a session's cached keys and values [1, kv_heads, T, head_dim] can be read in
    place: each head's positions one after another, the heads equally far apart in both."""
    return (
        keys.dim() == 4
        and keys.shape[0] == 1
        and keys.stride(-1) == 1
        and keys.stride(-2) == keys.shape[-1]
        and keys.stride() == values.stride()
    )


class _Buffers:
    """One step's scratch for ``rows`` rows: q, k, v and the arrays of cache pointers."""

    def __init__(self, rows: int, heads: int, kv_heads: int, head_dim: int) -> None:
        self.q = torch.empty(rows, heads * head_dim)
        self.k, self.v = torch.empty(rows, kv_heads, 1, head_dim), torch.empty(rows, kv_heads, 1, head_dim)
        self.q_ptr, self.k_ptr, self.v_ptr = self.q.data_ptr(), self.k.data_ptr(), self.v.data_ptr()
        self.keys, self.values = (ctypes.c_void_p * rows)(), (ctypes.c_void_p * rows)()
        self.lengths = (ctypes.c_int * rows)()
        self.strides = (ctypes.c_int64 * rows)()
        self.strides_at = ctypes.addressof(self.strides)
        self.keys_at, self.values_at = ctypes.addressof(self.keys), ctypes.addressof(self.values)
        self.lengths_at = ctypes.addressof(self.lengths)
