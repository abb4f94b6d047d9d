"""Activation compression names, apart from the torch code that applies them.

Why a module of its own: the control services validate a deployment's
compression without importing torch (seconds of start-up they do not need).
"""

from __future__ import annotations

from ..v1 import tensor_pb2

COMPRESSIONS = {
    "none": tensor_pb2.COMPRESSION_NONE,
    "fp16": tensor_pb2.COMPRESSION_FP16,
    "bf16": tensor_pb2.COMPRESSION_BF16,
    "int8": tensor_pb2.COMPRESSION_INT8_ABSMAX,
}
