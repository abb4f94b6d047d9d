"""Deploy path: validate, choose the segments, assign the epoch, and hand
the plan to the broadcaster's two-phase rollout (prepare, commit, store the
plan, publish the route, drain and release the old epoch).

The Deployment record is stored only once the rollout committed: a refused
or aborted deploy leaves the previous record (and plan) as they were, and a
first deploy that fails leaves nothing behind. The broadcaster gets the spec
in the request, so it never reads a record that is not committed yet.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from resplit.core.compression import COMPRESSIONS
from resplit.core.units import PlanError
from resplit.rpc.channels import aio_channel
from resplit.state import StateStore
from resplit.v1 import common_pb2, worker_pb2, worker_pb2_grpc

from .commit import CommitError, refused
from .core.models import ModelDirError, inspect_model
from .core.placement import check_placement, default_segments
from .core.policy import default_policy
from .rollouts import Broadcaster, RolloutFailed

log = logging.getLogger(__name__)


async def _call(address: str, method: str, request, deadline_s: float):
    async with aio_channel(address) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        return await getattr(stub, method)(request, timeout=deadline_s)


class Deployer:
    def __init__(self, store: StateStore, prepare_deadline_s: float, broadcaster: Broadcaster) -> None:
        self.store = store
        self.prepare_deadline_s = prepare_deadline_s
        self.broadcaster = broadcaster

    async def deploy(
        self, spec: common_pb2.Deployment, segments: list[common_pb2.Segment]
    ) -> tuple[common_pb2.Deployment, common_pb2.Plan]:
        """(the deployment as stored, with its policy and model facts filled in; the
        committed plan). The caller remembers both: Redis may lose them at any moment."""
        if not spec.name:
            raise CommitError(grpc.StatusCode.INVALID_ARGUMENT, "deployment name is required")
        compression = spec.compression or "none"
        if compression not in COMPRESSIONS:
            raise CommitError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"compression must be one of {', '.join(COMPRESSIONS)}, got {spec.compression!r}",
            )
        try:
            info = await asyncio.to_thread(inspect_model, spec.model_dir)
        except FileNotFoundError as exc:
            raise CommitError(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        except ModelDirError as exc:
            raise CommitError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        policy = spec.policy if spec.HasField("policy") else default_policy()
        nodes = await self.store.list_nodes(include_down=False)
        try:
            segments = segments or default_segments(nodes, info.num_units)
            check_placement(segments, nodes, info.num_units, policy.private_depth, policy.trusted_node_ids)
        except PlanError as exc:
            raise refused(exc) from None

        record = common_pb2.Deployment()
        record.CopyFrom(spec)
        record.policy.CopyFrom(policy)
        record.num_units, record.family, record.generative = info.num_units, info.family, info.generative
        record.compression = compression

        previous = await self.store.get_plan(spec.name)
        epoch = await self.store.next_epoch(spec.name, floor=previous.epoch if previous else 0)
        plan = common_pb2.Plan(
            deployment=spec.name, epoch=epoch, segments=segments, created_at=time.time(), reason="deploy"
        )
        started = time.perf_counter()
        try:
            answer = await self.broadcaster.rollout(plan, record, self.prepare_deadline_s)
        except RolloutFailed as exc:
            raise CommitError(exc.code, str(exc)) from None
        await self.store.put_deployment(record)
        log.info("deployed %s epoch %d in %.0f ms", spec.name, epoch, (time.perf_counter() - started) * 1e3)
        return record, answer.committed

    async def _release(self, plan: common_pb2.Plan, nodes: list[common_pb2.Node]) -> None:
        """Free an older plan's segments (best effort: a worker may be gone)."""
        by_id = {n.node_id: n.address for n in nodes}
        for segment in plan.segments:
            address = by_id.get(segment.node_id)
            if address is None:
                continue
            request = worker_pb2.ReleaseSegmentRequest(
                deployment=plan.deployment, epoch=plan.epoch, units=segment.units
            )
            try:
                await _call(address, "ReleaseSegment", request, 10)
            except grpc.aio.AioRpcError as exc:
                log.info(
                    "release of %s epoch %d on %s: %s", plan.deployment, plan.epoch, address, exc.details()
                )

    async def undeploy(self, name: str) -> None:
        plan = await self.store.get_plan(name)
        if plan is None:
            raise CommitError(grpc.StatusCode.NOT_FOUND, f"deployment {name!r} is not deployed")
        await self._release(plan, await self.store.list_nodes())
        await self.store.delete_deployment(name)


__all__ = ["Deployer"]
