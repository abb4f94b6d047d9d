"""The broadcaster's calls on workers over gRPC (the ``Workers`` protocol of
``core.rollout``): every failure becomes a WorkerCallError with the status name."""

from __future__ import annotations

import grpc

from resplit.rpc.channels import aio_channel
from resplit.v1 import worker_pb2, worker_pb2_grpc

from .core.rollout import WorkerCallError


async def _call(address: str, method: str, request, deadline_s: float):
    try:
        async with aio_channel(address) as channel:
            stub = worker_pb2_grpc.WorkerServiceStub(channel)
            return await getattr(stub, method)(request, timeout=deadline_s)
    except grpc.aio.AioRpcError as exc:
        raise WorkerCallError(exc.code().name, exc.details() or exc.code().name) from None


class GrpcWorkers:
    """One short-lived channel per call: rollouts are rare, and a worker that
    restarts on the same address is reached at once (no reconnect backoff)."""

    async def load(
        self, address: str, request: worker_pb2.LoadSegmentRequest, deadline_s: float
    ) -> worker_pb2.LoadSegmentResponse:
        return await _call(address, "LoadSegment", request, deadline_s)

    async def commit(
        self, address: str, request: worker_pb2.CommitEpochRequest, deadline_s: float
    ) -> worker_pb2.CommitEpochResponse:
        return await _call(address, "CommitEpoch", request, deadline_s)

    async def release(
        self, address: str, request: worker_pb2.ReleaseSegmentRequest, deadline_s: float
    ) -> worker_pb2.ReleaseSegmentResponse:
        return await _call(address, "ReleaseSegment", request, deadline_s)

    async def status(self, address: str, deadline_s: float) -> worker_pb2.WorkerStatus:
        return await _call(address, "GetStatus", worker_pb2.GetStatusRequest(), deadline_s)
