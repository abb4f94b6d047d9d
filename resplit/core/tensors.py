"""Tensors on the wire: a typed header plus raw little-endian bytes, chunked.

Everything arriving from the network is checked here before a segment sees
it: a known dtype, a shape whose byte size matches the bytes received, and
chunks in order. Problems raise :class:`TensorError` with a sentence that the
transport turns into INVALID_ARGUMENT.

Optional lossy compression between hops (a per-deployment setting):
fp16 / bf16 casts, and int8 with one absmax scale per token (row of the last
dimension).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..v1 import common_pb2, tensor_pb2

DEFAULT_CHUNK_BYTES = 1 << 20
MAX_TENSOR_BYTES = 1 << 30

TO_WIRE = {
    torch.float32: tensor_pb2.DTYPE_FLOAT32,
    torch.float16: tensor_pb2.DTYPE_FLOAT16,
    torch.bfloat16: tensor_pb2.DTYPE_BFLOAT16,
    torch.int8: tensor_pb2.DTYPE_INT8,
    torch.int64: tensor_pb2.DTYPE_INT64,
    torch.int32: tensor_pb2.DTYPE_INT32,
}
FROM_WIRE = {v: k for k, v in TO_WIRE.items()}


class TensorError(ValueError):
    """A tensor message that cannot be decoded; the message says what is wrong."""


def compress(tensor: torch.Tensor, compression: int) -> tuple[torch.Tensor, bytes]:
    """(wire tensor, scales bytes) for ``compression``."""
    if compression == tensor_pb2.COMPRESSION_FP16:
        return tensor.to(torch.float16), b""
    if compression == tensor_pb2.COMPRESSION_BF16:
        return tensor.to(torch.bfloat16), b""
    if compression == tensor_pb2.COMPRESSION_INT8_ABSMAX:
        flat = tensor.float().reshape(-1, tensor.shape[-1])
        scales = flat.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        quantized = torch.round(flat / scales[:, None]).clamp(-127, 127).to(torch.int8)
        return quantized.reshape(tensor.shape), scales.cpu().numpy().astype("<f4").tobytes()
    return tensor, b""


def decompress(tensor: torch.Tensor, header: tensor_pb2.TensorHeader, dtype: torch.dtype) -> torch.Tensor:
    """Undo :func:`compress` into ``dtype``."""
    if header.compression == tensor_pb2.COMPRESSION_INT8_ABSMAX:
        rows = math.prod(tensor.shape[:-1]) if tensor.dim() else 1
        if len(header.scales) != 4 * rows:
            raise TensorError(
                f"int8 tensor needs {rows} scales ({4 * rows} bytes), got {len(header.scales)} bytes"
            )
        scales = torch.frombuffer(bytearray(header.scales), dtype=torch.float32)
        flat = tensor.reshape(rows, -1).float() * scales[:, None]
        return flat.reshape(tensor.shape).to(dtype)
    return tensor.to(dtype)


def encode(
    tensor: torch.Tensor,
    *,
    session_id: str = "",
    step: int = 0,
    epoch: int = 0,
    units: tuple[int, int] = (0, 0),
    compression: int = tensor_pb2.COMPRESSION_NONE,
    attention_mask: Sequence[int] = (),
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> list[tensor_pb2.TensorChunk]:
    """``tensor`` as one or more chunks; the header rides on the first."""
    wire, scales = compress(tensor.detach(), compression)
    wire = wire.contiguous().cpu()
    if wire.dtype not in TO_WIRE:
        raise TensorError(f"dtype {wire.dtype} cannot be sent")
    if wire.dtype == torch.bfloat16:
        payload = wire.view(torch.int16).numpy().tobytes()
    else:
        payload = wire.numpy().tobytes()
    header = tensor_pb2.TensorHeader(
        dtype=TO_WIRE[wire.dtype],
        shape=list(wire.shape),
        session_id=session_id,
        step=step,
        epoch=epoch,
        units=common_pb2.UnitRange(start=units[0], end=units[1]),
        compression=compression,
        total_bytes=len(payload),
        scales=scales,
        attention_mask=list(attention_mask),
    )
    pieces = [payload[i : i + chunk_bytes] for i in range(0, len(payload), chunk_bytes)] or [b""]
    return [
        tensor_pb2.TensorChunk(
            header=header if i == 0 else None, index=i, last=i == len(pieces) - 1, data=piece
        )
        for i, piece in enumerate(pieces)
    ]


class Assembler:
    """Collects the chunks of one tensor and decodes it, checking everything."""

    def __init__(self, max_bytes: int = MAX_TENSOR_BYTES) -> None:
        self.max_bytes = max_bytes
        self.header: tensor_pb2.TensorHeader | None = None
        self.parts: list[bytes] = []
        self.received = 0

    def add(self, chunk: tensor_pb2.TensorChunk) -> bool:
        """Add a chunk; True when the tensor is complete."""
        if chunk.index != len(self.parts):
            raise TensorError(f"tensor chunk {chunk.index} arrived, expected chunk {len(self.parts)}")
        if chunk.index == 0:
            if not chunk.HasField("header"):
                raise TensorError("the first chunk of a tensor must carry its header")
            self.header = chunk.header
            if self.header.total_bytes > self.max_bytes:
                raise TensorError(
                    f"tensor of {self.header.total_bytes} bytes exceeds the {self.max_bytes}-byte limit"
                )
        self.received += len(chunk.data)
        if self.header is not None and self.received > self.header.total_bytes:
            raise TensorError(f"tensor data exceeds its header's {self.header.total_bytes} bytes")
        self.parts.append(chunk.data)
        return chunk.last

    def tensor(self) -> torch.Tensor:
        """The decoded wire tensor (still compressed, if it was)."""
        header = self.header
        if header is None:
            raise TensorError("no tensor header received")
        dtype = FROM_WIRE.get(header.dtype)
        if dtype is None:
            raise TensorError(f"unknown tensor dtype {header.dtype}")
        shape = tuple(int(d) for d in header.shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        count = math.prod(shape) if shape else 1
        if count * itemsize > self.max_bytes:
            raise TensorError(f"shape {list(shape)} is too large ({count * itemsize} bytes)")
        expected = count * itemsize
        if header.total_bytes != expected or self.received != expected:
            name = tensor_pb2.DType.Name(header.dtype)
            raise TensorError(
                f"tensor bytes do not match its shape {list(shape)} of {name}: "
                f"expected {expected}, header says {header.total_bytes}, received {self.received}"
            )
        buffer = bytearray(b"".join(self.parts))
        if dtype == torch.bfloat16:
            flat = (
                torch.frombuffer(buffer, dtype=torch.int16).view(torch.bfloat16)
                if expected
                else torch.empty(0)
            )
        else:
            flat = torch.frombuffer(buffer, dtype=dtype) if expected else torch.empty(0, dtype=dtype)
        return flat.reshape(shape)


def decode(chunks: Sequence[tensor_pb2.TensorChunk]) -> tuple[tensor_pb2.TensorHeader, torch.Tensor]:
    """Decode a complete list of chunks (no decompression)."""
    assembler = Assembler()
    for chunk in chunks:
        assembler.add(chunk)
    tensor = assembler.tensor()  # raises when no header arrived
    return tensor_pb2.TensorHeader() if assembler.header is None else assembler.header, tensor
