"""Turning wire inputs into what a segment accepts, refusing what does not fit.

Every check here guards a segment from input that would crash it or, worse,
silently compute garbage for one session: wrong hidden size, dtype or shape,
padding masks that do not match, token ids outside the vocabulary.
"""

from __future__ import annotations

import torch

from resplit.core.tensors import Assembler, TensorError, decompress
from resplit.v1 import tensor_pb2, worker_pb2

from .errors import BadInput, StaleEpoch
from .hosting import Hosted

COMPRESSED = {
    tensor_pb2.COMPRESSION_FP16: torch.float16,
    tensor_pb2.COMPRESSION_BF16: torch.bfloat16,
    tensor_pb2.COMPRESSION_INT8_ABSMAX: torch.int8,
}


def token_input(hosted: Hosted, tokens: worker_pb2.TokenInput) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(input_ids [rows, T], attention_mask or None) for the hop holding the embedding."""
    if not hosted.segment.has_embedding:
        raise BadInput(
            f"units [{hosted.start}, {hosted.end}) do not start with the embedding: send activations"
        )
    rows = tokens.rows or 1
    count = len(tokens.input_ids)
    if count == 0 or count % rows:
        raise BadInput(f"{count} token ids cannot form {rows} equal rows")
    if hosted.generative and rows != 1:
        raise BadInput(f"a generating session takes one row of tokens, got {rows}")
    vocab = int(hosted.segment.config.vocab_size)
    if max(tokens.input_ids) >= vocab:
        raise BadInput(f"token id {max(tokens.input_ids)} is outside the vocabulary of {vocab}")
    ids = torch.tensor(list(tokens.input_ids), dtype=torch.long, device=hosted.device).reshape(rows, -1)
    mask = None
    if tokens.attention_mask:
        if len(tokens.attention_mask) != count:
            raise BadInput(f"attention mask has {len(tokens.attention_mask)} entries for {count} tokens")
        mask = torch.tensor(list(tokens.attention_mask), dtype=torch.long, device=hosted.device).reshape(
            rows, -1
        )
    return ids, mask


def activation(
    hosted: Hosted, assembler: Assembler, session_epoch: int
) -> tuple[tensor_pb2.TensorHeader, torch.Tensor, torch.Tensor | None]:
    """(header, hidden [rows, T, H] in the segment's dtype, attention_mask) from a complete tensor."""
    if hosted.segment.has_embedding:
        raise BadInput(f"units [{hosted.start}, {hosted.end}) start with the embedding: send token ids")
    try:
        wire = assembler.tensor()
    except TensorError as exc:
        raise BadInput(str(exc)) from None
    header = assembler.header
    if header is None:  # Assembler.tensor() raised already; kept for type narrowing
        raise BadInput("no tensor header")
    if header.epoch != session_epoch:
        raise StaleEpoch(f"activation for epoch {header.epoch}, but the session is at epoch {session_epoch}")
    if (header.units.start, header.units.end) != (hosted.start, hosted.end):
        raise BadInput(
            f"activation is for units [{header.units.start}, {header.units.end}), "
            f"this hop runs [{hosted.start}, {hosted.end})"
        )
    expected = COMPRESSED.get(header.compression, hosted.dtype)
    if wire.dtype != expected:
        raise BadInput(
            f"activation dtype {wire.dtype} does not match {expected} (compression {header.compression})"
        )
    if wire.dim() != 3 or wire.shape[2] != hosted.hidden_size or wire.shape[1] == 0:
        raise BadInput(f"activation shape {list(wire.shape)} is not [rows, tokens, {hosted.hidden_size}]")
    if hosted.generative and wire.shape[0] != 1:
        raise BadInput(f"a generating session carries one row, got {wire.shape[0]}")
    try:
        hidden = decompress(wire, header, hosted.dtype).to(hosted.device)
    except TensorError as exc:
        raise BadInput(str(exc)) from None
    if not torch.isfinite(hidden).all():
        raise BadInput("activation contains NaN or Inf")
    mask = None
    if header.attention_mask:
        rows, length = wire.shape[0], wire.shape[1]
        if len(header.attention_mask) != rows * length:
            raise BadInput(
                f"attention mask has {len(header.attention_mask)} entries for {rows}x{length} tokens"
            )
        mask = torch.tensor(list(header.attention_mask), dtype=torch.long, device=hosted.device).reshape(
            rows, length
        )
    return header, hidden, mask
