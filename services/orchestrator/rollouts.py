"""Client of the broadcaster (the paper's RB): plans reach the workers through
its two-phase Rollout, and an undeploy frees their segments through its Release;
the orchestrator never calls a worker to change what it hosts."""

from __future__ import annotations

import grpc

from resplit.rpc.channels import aio_channel
from resplit.v1 import broadcaster_pb2, broadcaster_pb2_grpc, common_pb2

# Time the broadcaster needs beyond the prepare deadline: validation, the
# commit round and the Redis writes.
COMMIT_MARGIN_S = 30.0


class RolloutFailed(Exception):
    """The broadcaster refused or aborted a rollout; ``code`` is its status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Broadcaster:
    """Client of the broadcaster's Rollout and Release RPCs."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: grpc.aio.Channel | None = None

    def _stub(self) -> broadcaster_pb2_grpc.BroadcasterServiceStub:
        if self._channel is None:
            self._channel = aio_channel(self.address)
        return broadcaster_pb2_grpc.BroadcasterServiceStub(self._channel)

    async def rollout(
        self,
        plan: common_pb2.Plan,
        deployment: common_pb2.Deployment,
        prepare_deadline_s: float,
        drain_deadline_s: float = 0.0,
    ) -> broadcaster_pb2.RolloutResponse:
        """Roll ``plan`` out; raises RolloutFailed(code, details) when it is not committed."""
        request = broadcaster_pb2.RolloutRequest(
            plan=plan,
            deployment=deployment,
            prepare_deadline_s=prepare_deadline_s,
            drain_deadline_s=drain_deadline_s,
        )
        return await self._call("Rollout", request, plan.deployment, prepare_deadline_s + COMMIT_MARGIN_S)

    async def release(self, deployment: str) -> broadcaster_pb2.ReleaseResponse:
        """Free every segment of ``deployment``'s committed plan on its workers (an
        undeploy); raises RolloutFailed(code, details) when the broadcaster does not."""
        request = broadcaster_pb2.ReleaseRequest(deployment=deployment)
        return await self._call("Release", request, deployment, COMMIT_MARGIN_S)

    async def _call(self, method: str, request, deployment: str, timeout_s: float):
        try:
            return await getattr(self._stub(), method)(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if exc.code() == grpc.StatusCode.UNAVAILABLE and deployment not in details:
                # The broadcaster's own refusals always name the deployment.
                details = f"broadcaster at {self.address} is unreachable: {details}"
            raise RolloutFailed(exc.code(), details) from None

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()


__all__ = ["Broadcaster", "RolloutFailed"]
