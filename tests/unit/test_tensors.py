"""The wire codec: chunking, dtypes, compression, and refusing broken tensors."""

from __future__ import annotations

import pytest
import torch

from resplit.core.tensors import Assembler, TensorError, decode, decompress, encode
from resplit.v1 import tensor_pb2

# Segments hand the codec tensors on their own device: CPU and CUDA. Without CUDA the GPU
# case is reported as skipped, so a run shows what it did not test.
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(
            not torch.cuda.is_available(), reason="no CUDA on this machine: the codec's GPU path is untested"
        ),
    ),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64])
def test_round_trip_in_many_chunks(dtype):
    tensor = (torch.randn(2, 33, 17) * 100).to(dtype)
    chunks = encode(tensor, session_id="s", step=4, epoch=7, units=(2, 5), chunk_bytes=1000)
    assert len(chunks) > 2 and chunks[-1].last and not chunks[0].last
    assert all(not c.HasField("header") for c in chunks[1:])
    header, back = decode(chunks)
    assert (header.session_id, header.step, header.epoch, header.units.start, header.units.end) == (
        "s",
        4,
        7,
        2,
        5,
    )
    assert back.dtype == dtype and torch.equal(back, tensor)


def test_empty_and_scalar_tensors():
    assert decode(encode(torch.zeros(0, 4)))[1].shape == (0, 4)
    assert decode(encode(torch.tensor(3.5)))[1].item() == 3.5


@pytest.mark.parametrize(
    ("compression", "bound"),
    [
        (tensor_pb2.COMPRESSION_FP16, 1e-3),
        (tensor_pb2.COMPRESSION_BF16, 1e-2),
        (tensor_pb2.COMPRESSION_INT8_ABSMAX, 1e-2),
    ],
)
@pytest.mark.parametrize("device", DEVICES)
def test_compression_is_close_and_smaller(compression, bound, device):
    torch.manual_seed(0)
    tensor = torch.randn(1, 16, 64)
    chunks = encode(tensor.to(device), compression=compression)
    header, wire = decode(chunks)
    back = decompress(wire, header, torch.float32)
    relative = ((back - tensor).abs().max() / tensor.abs().max()).item()
    assert 0 < relative <= bound
    assert sum(len(c.data) for c in chunks) < tensor.numel() * 4


def test_int8_keeps_each_tokens_scale():
    tensor = torch.stack([torch.full((8,), 1000.0), torch.full((8,), 0.001)]).unsqueeze(0)
    header, wire = decode(encode(tensor, compression=tensor_pb2.COMPRESSION_INT8_ABSMAX))
    back = decompress(wire, header, torch.float32)
    assert torch.allclose(back, tensor, rtol=1e-2)


def _broken(mutate) -> list[tensor_pb2.TensorChunk]:
    chunks = encode(torch.ones(4, 8), chunk_bytes=64)
    mutate(chunks)
    return chunks


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c[0].header.shape.__setitem__(0, 5), "do not match its shape"),
        (lambda c: setattr(c[-1], "data", c[-1].data[:-3]), "do not match its shape"),
        (lambda c: c[0].ClearField("header"), "must carry its header"),
        (lambda c: setattr(c[1], "index", 5), "expected chunk 1"),
        (lambda c: setattr(c[0].header, "dtype", 99), "unknown tensor dtype"),
        (lambda c: setattr(c[1], "data", c[1].data * 3), "exceeds its header"),
        (lambda c: setattr(c[0].header, "total_bytes", 1 << 40), "exceeds the"),
    ],
)
def test_broken_tensors_are_refused_with_a_reason(mutate, message):
    with pytest.raises(TensorError, match=message):
        decode(_broken(mutate))


def test_absurd_shape_is_refused_before_allocating():
    chunks = encode(torch.ones(2))
    chunks[0].header.shape[:] = [1 << 20, 1 << 20]
    assembler = Assembler()
    assembler.add(chunks[0])
    with pytest.raises(TensorError, match="too large"):
        assembler.tensor()
