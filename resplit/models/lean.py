"""One decode step through Llama-style blocks, without transformers' per-module overhead.

Why: a decode step moves one token, so next to the weight reads most of a
block's time is a fixed CPU cost per operation and per Python call (module
hooks, keyword plumbing, attention dispatch, a mask builder per step). In a
split, every hop idles while the others compute, and that cost more than
doubles when it runs cold in a process that just woke up (``bench/cold_step.py``
on the 2-core development VM, 14 blocks at hidden size 64, where the matmuls cost
next to nothing: 1.75 ms per token back to back, 4.13 ms after idle gaps; this
step: 1.04 and 2.83 ms). The step below issues the same tensor
operations in the same order as transformers' decoder layer with SDPA attention
does for one new token and no mask, so its results are bitwise equal; the
tests check that for every family it accepts.

The same step runs a batch: the new tokens of several sessions packed along the
sequence (:func:`rows`), one token each for decode steps or a whole prompt, the
projections and MLP once over all of them and attention per session over its own
cache (a prompt with a causal mask offset by what the cache holds); within 1e-4 of
each session alone (a prompt longer than a chunk runs chunk by chunk through
one session's path). One session's prompt takes :func:`prefill`: transformers' layer
with SDPA op for op (its causal and masked attention, ``F.linear`` projections),
bitwise equal on torch's kernels, so a segment built without transformers
(``rotary_lean.py``) needs its layers for nothing. Sliding-window layers, other
attention implementations and unknown layer classes go through transformers' own layers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from resplit.kernels import block as native_block
from resplit.kernels import native
from resplit.kernels.linear import linear_fp32

#: Decoder layers whose one-token forward ``_block_rows`` reproduces op for op.
LAYER_CLASSES = frozenset(
    {"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer", "Qwen3DecoderLayer"}
)
#: transformers' SDPA path asks the kernel for grouped-query attention up to this head size.
MAX_GQA_HEAD_DIM = 256


@dataclass(frozen=True)
class _Norm:
    weight: torch.Tensor
    eps: float


#: A projection: (weight, bias) of an ``nn.Linear``, run as ``F.linear`` (through the native
#: kernels for few rows, ``resplit/kernels``); or a module
#: that runs itself (``quant.QuantLinear``: a segment with quantized weights).
_Proj = tuple[torch.Tensor, torch.Tensor | None] | Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class _Block:
    """One decoder layer's tensors, looked up once instead of on every step."""

    layer_idx: int
    head_dim: int
    scaling: float
    gqa: bool
    attn_norm: _Norm
    mlp_norm: _Norm
    q_norm: _Norm | None  # Qwen3 normalizes each query and key head
    k_norm: _Norm | None
    q: _Proj
    k: _Proj
    v: _Proj
    o: _Proj
    gate: _Proj  # Llama's mlp_bias gives the MLP biases
    up: _Proj
    down: _Proj
    act: Callable[[torch.Tensor], torch.Tensor]
    #: The block's native decode step (``resplit/kernels/block.py``), made on
    #: first use: {"engine": Engine} or {"why_not": reason}.
    native: dict = field(default_factory=dict, compare=False)


def why_not(layers, types: list[str], attn_implementation: str | None) -> str | None:
    """Why these layers cannot take the lean step, or None when they can."""
    if attn_implementation != "sdpa":
        return f"attention implementation {attn_implementation!r} (the lean step reproduces 'sdpa')"
    if any(kind != "full_attention" for kind in types):
        return "sliding-window layers"
    for layer in layers:
        name = type(layer).__name__
        if name not in LAYER_CLASSES:
            return f"layer class {name}"
        if getattr(layer.self_attn, "head_dim", MAX_GQA_HEAD_DIM + 1) > MAX_GQA_HEAD_DIM:
            return f"head size {layer.self_attn.head_dim} > {MAX_GQA_HEAD_DIM}"
    return None


def lean_blocks(layers) -> list[_Block]:
    """The layers' tensors for :func:`decode`; only for layers :func:`why_not` accepts."""
    return [_block(layer) for layer in layers]


def _norm(module) -> _Norm:
    return _Norm(module.weight, module.variance_epsilon)


def _linear(module) -> _Proj:
    return (module.weight, module.bias) if isinstance(module, torch.nn.Linear) else module


def _proj(x: torch.Tensor, proj: _Proj) -> torch.Tensor:
    return linear_fp32(x, *proj) if isinstance(proj, tuple) else proj(x)


def _block(layer) -> _Block:
    attn, mlp = layer.self_attn, layer.mlp
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    return _Block(
        layer_idx=attn.layer_idx,
        head_dim=attn.head_dim,
        scaling=attn.scaling,
        gqa=attn.num_key_value_groups > 1,
        attn_norm=_norm(layer.input_layernorm),
        mlp_norm=_norm(layer.post_attention_layernorm),
        q_norm=_norm(q_norm) if q_norm is not None else None,
        k_norm=_norm(k_norm) if k_norm is not None else None,
        q=_linear(attn.q_proj),
        k=_linear(attn.k_proj),
        v=_linear(attn.v_proj),
        o=_linear(attn.o_proj),
        gate=_linear(mlp.gate_proj),
        up=_linear(mlp.up_proj),
        down=_linear(mlp.down_proj),
        act=mlp.act_fn,
    )


def _rms(x: torch.Tensor, norm: _Norm) -> torch.Tensor:
    """transformers' RMSNorm (Llama, Mistral, Qwen2, Qwen3): statistics in fp32, then back."""
    dtype = x.dtype
    x = x.to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    return norm.weight * (x * torch.rsqrt(variance + norm.eps)).to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def _heads(x: torch.Tensor, head_dim: int, norm: _Norm | None) -> torch.Tensor:
    """[1, T, heads x head_dim] -> [1, heads, T, head_dim], each head normalized if asked."""
    x = x.view(*x.shape[:2], -1, head_dim)
    return (x if norm is None else _rms(x, norm)).transpose(1, 2)


def decode(blocks: list[_Block], h: torch.Tensor, position_embeddings, cache) -> torch.Tensor:
    """Hidden states [1, 1, H] of one new token through ``blocks``, appending to ``cache``.

    ``position_embeddings``: (cos, sin) from the model's rotary module for this position."""
    return rows(blocks, h, position_embeddings, [cache], [1])


def decode_rows(blocks: list[_Block], h: torch.Tensor, position_embeddings, caches: list) -> torch.Tensor:
    """Hidden states [N, 1, H] of one new token of each of N sessions through ``blocks``;
    row i appends to ``caches[i]``. ``position_embeddings``: (cos, sin) [N, 1, D], each
    row at its own session's position."""
    count = h.shape[0]
    cos, sin = (t.reshape(1, count, -1) for t in position_embeddings)
    packed = rows(blocks, h.reshape(1, count, -1), (cos, sin), caches, [1] * count)
    return packed.reshape(count, 1, -1)


def rows(
    blocks: list[_Block], h: torch.Tensor, position_embeddings, caches: list, lengths: list[int]
) -> torch.Tensor:
    """Hidden states [1, T, H] of several sessions' new tokens, packed one session after
    another (session i: ``lengths[i]`` tokens, appended to ``caches[i]``), through ``blocks``.
    ``position_embeddings``: (cos, sin) [1, T, D], each token at its own position in its
    own session. A row of one token is a decode step; a longer one, a prompt."""
    if _native_decode(h, lengths):
        return _decode_natively(blocks, h, position_embeddings, caches)
    cos, sin = (t.unsqueeze(1) for t in position_embeddings)
    spans = []
    start = 0
    for length, cache in zip(lengths, caches, strict=True):
        # A prompt attends causally, over its own cache; one token attends to everything
        # (no mask, nothing to look up on the decode path).
        mask = None
        if length > 1:
            past = cache.get_seq_length()
            mask = torch.ones(length, past + length, dtype=torch.bool, device=h.device).tril(past)
        spans.append((slice(start, start + length), mask))
        start += length
    for block in blocks:
        h = _block_rows(block, h, cos, sin, caches, spans)
    return h


def prefill(blocks: list[_Block], h: torch.Tensor, position_embeddings, cache) -> torch.Tensor:
    """Hidden states [1, T, H] of one session's prompt (or a chunk of one, after what its
    ``cache`` holds) through ``blocks``: transformers' decoder layer with SDPA attention,
    operation for operation, so a segment built without transformers' model classes
    (``rotary_lean.py``) computes what they compute, bit for bit on torch's kernels. As
    transformers does: on an empty cache the prompt attends causally through SDPA's
    ``is_causal``; after a cache, through a boolean mask over cache and chunk with the keys
    and values repeated per query head (``repeat_kv``); a lone token, through no mask.
    Projections run as ``nn.Linear`` runs them (``F.linear``), quantized ones as their module."""
    cos, sin = (t.unsqueeze(1) for t in position_embeddings)
    tokens, past = h.shape[1], cache.get_seq_length()
    mask = None
    if tokens > 1 and past > 0:
        mask = torch.ones(tokens, past + tokens, dtype=torch.bool, device=h.device).tril(past)[None, None]
    for block in blocks:
        h = _block_prompt(block, h, cos, sin, cache, mask)
    return h


def _as_linear(x: torch.Tensor, proj: _Proj) -> torch.Tensor:
    """A projection as ``nn.Linear`` runs it (torch's kernels), or its module's own forward."""
    return F.linear(x, *proj) if isinstance(proj, tuple) else proj(x)


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """transformers' ``repeat_kv``: [1, kv_heads, S, D] -> [1, kv_heads x groups, S, D]."""
    if groups == 1:
        return x
    batch, heads, length, dim = x.shape
    return (
        x[:, :, None, :, :]
        .expand(batch, heads, groups, length, dim)
        .reshape(batch, heads * groups, length, dim)
    )


def _block_prompt(
    block: _Block, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache, mask: torch.Tensor | None
) -> torch.Tensor:
    """One decoder layer for one session's new tokens, as :func:`prefill` describes."""
    tokens = h.shape[1]
    x = _rms(h, block.attn_norm)
    q = _heads(_as_linear(x, block.q), block.head_dim, block.q_norm)
    k = _heads(_as_linear(x, block.k), block.head_dim, block.k_norm)
    v = _heads(_as_linear(x, block.v), block.head_dim, None)
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    k, v = cache.update(k, v, block.layer_idx)
    if mask is None:
        attn = F.scaled_dot_product_attention(
            q, k, v, scale=block.scaling, is_causal=tokens > 1, enable_gqa=block.gqa
        )
    else:
        groups = q.shape[1] // k.shape[1]
        k, v = _repeat_kv(k, groups), _repeat_kv(v, groups)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=block.scaling)
    attn = attn.transpose(1, 2).contiguous().reshape(1, tokens, -1).contiguous()
    h = h + _as_linear(attn, block.o)
    x = _rms(h, block.mlp_norm)
    return h + _as_linear(block.act(_as_linear(x, block.gate)) * _as_linear(x, block.up), block.down)


def _engine(block: _Block) -> native_block.Engine | None:
    engine = block.native.get("engine")
    if engine is not None and engine.current():
        return engine
    if "why_not" in block.native:
        return None
    reason = native_block.why_not(block)
    if reason is not None:
        block.native["why_not"] = reason
        return None
    block.native["engine"] = engine = native_block.Engine(block)
    return engine


def _native_decode(h: torch.Tensor, lengths: list[int]) -> bool:
    """Whether a step is decode rows only (one token per session), on the CPU in fp32,
    with the native kernels here: the case ``block.c`` takes whole."""
    return (
        len(lengths) <= native.MAX_BLOCK_ROWS
        and all(length == 1 for length in lengths)
        and h.device.type == "cpu"
        and h.dtype == torch.float32
        and native.active()
    )


def _decode_natively(
    blocks: list[_Block], h: torch.Tensor, position_embeddings, caches: list
) -> torch.Tensor:
    """One token of each of R sessions, packed [1, R, H], through ``blocks``: each block
    on its native step where it has one (``resplit/kernels/block.c``: a lone session's
    token or a batch alike), else on the torch operations below."""
    rows = h.shape[1]
    cos, sin = (t.reshape(rows, -1).contiguous() for t in position_embeddings)
    spans = [(slice(r, r + 1), None) for r in range(rows)]
    for block in blocks:
        engine = _engine(block)
        if engine is not None:
            h = engine.step(h.reshape(rows, -1).contiguous(), cos, sin, caches).view(1, rows, -1)
        else:
            h = _block_rows(block, h, cos.view(1, 1, rows, -1), sin.view(1, 1, rows, -1), caches, spans)
    return h


def _block_rows(
    block: _Block, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, caches: list, spans: list
) -> torch.Tensor:
    """One decoder layer for the new tokens of several sessions, packed along the sequence
    (session i: its ``spans[i]`` of it, with its own cache, positions and mask), the same
    tensor operations in the same order as transformers' layer with SDPA attention for
    one session alone. Every projection and the MLP run once for all tokens (the weights
    are read once: what makes a batched step cheap); attention runs per session over
    that session's own cache."""
    tokens = h.shape[1]
    x = _rms(h, block.attn_norm)
    q = _heads(_proj(x, block.q), block.head_dim, block.q_norm)
    k = _heads(_proj(x, block.k), block.head_dim, block.k_norm)
    v = _heads(_proj(x, block.v), block.head_dim, None)
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    outputs = []
    for cache, (span, mask) in zip(caches, spans, strict=True):
        k_i, v_i = cache.update(k[:, :, span], v[:, :, span], block.layer_idx)
        outputs.append(
            F.scaled_dot_product_attention(
                q[:, :, span], k_i, v_i, attn_mask=mask, scale=block.scaling, enable_gqa=block.gqa
            )
        )
    attn = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    h = h + _proj(attn.transpose(1, 2).reshape(1, tokens, -1), block.o)
    x = _rms(h, block.mlp_norm)
    return h + _proj(block.act(_proj(x, block.gate)) * _proj(x, block.up), block.down)
