"""The operator's plan changes: Deploy, ApplyPlan and Undeploy. Each is validated
here and committed through the one commit path (commit.py): lock, epoch, the
broadcaster's two-phase rollout (prepare, commit, store the plan, publish the
route, drain and release the old epoch), event.

The Deployment record is stored only once the rollout committed: a refused
or aborted deploy leaves the previous record (and plan) as they were, and a
first deploy that fails leaves nothing behind. The broadcaster gets the spec
in the request, so it never reads a record that is not committed yet.
An undeploy frees the segments through the broadcaster too: the orchestrator
never calls a worker to change what it hosts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import grpc

from resplit.core.compression import COMPRESSIONS
from resplit.core.units import PlanError
from resplit.core.weights import WeightsError, check_family
from resplit.state import StateStore
from resplit.v1 import common_pb2

from .commit import Change, CommitError, Commits, refused
from .core.models import ModelDirError, inspect_model
from .core.placement import check_placement, default_segments
from .core.policy import default_policy

log = logging.getLogger(__name__)


def _check(
    segments: Sequence[common_pb2.Segment],
    nodes: Sequence[common_pb2.Node],
    num_units: int,
    policy: common_pb2.DeploymentPolicy,
    prefix: str = "",
) -> None:
    """Raise CommitError unless the plan can be served: it covers the model once, its
    nodes are registered and up, and privacy-critical units sit on trusted nodes."""
    try:
        check_placement(segments, nodes, num_units, policy.private_depth, policy.trusted_node_ids)
    except PlanError as exc:
        raise refused(exc, prefix) from None


class Deployer:
    def __init__(self, store: StateStore, commits: Commits) -> None:
        self.store = store
        self.commits = commits

    async def deploy(
        self, spec: common_pb2.Deployment, segments: list[common_pb2.Segment], epoch_floor: int = 0
    ) -> tuple[common_pb2.Deployment, common_pb2.Plan]:
        """(the deployment as stored, with its policy and model facts filled in; the
        committed plan). The caller remembers both: Redis may lose them at any moment.
        ``epoch_floor``: the highest epoch the name ever had (its workers may still know it
        after an undeploy, and Redis may have lost the counter): the plan's epoch is above it."""
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
        except PlanError as exc:
            raise refused(exc) from None
        _check(segments, nodes, info.num_units, policy)

        record = common_pb2.Deployment()
        record.CopyFrom(spec)
        record.policy.CopyFrom(policy)
        record.num_units, record.family, record.generative = info.num_units, info.family, info.generative
        record.compression = compression
        try:
            record.weights = check_family(spec.weights, info.family)
        except WeightsError as exc:
            raise CommitError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None

        started = time.perf_counter()
        change = Change(record, common_pb2.Plan(segments=segments), reason="deploy", store_spec=True)
        floor = common_pb2.Plan(deployment=spec.name, epoch=epoch_floor)
        plan = (await self.commits.commit(spec.name, change, fallback=floor)).or_raise()
        log.info(
            "deployed %s epoch %d in %.0f ms", spec.name, plan.epoch, (time.perf_counter() - started) * 1e3
        )
        return record, plan

    async def apply(self, name: str, segments: Sequence[common_pb2.Segment], why: str) -> common_pb2.Plan:
        """An operator's plan (ApplyPlan): validated, committed, logged as ``operator: why``."""
        deployment = await self.store.get_deployment(name)
        if deployment is None:
            raise CommitError(grpc.StatusCode.NOT_FOUND, f"deployment {name!r} is not deployed")
        refusal = f"plan for {name!r} refused: "
        if not segments:
            raise CommitError(grpc.StatusCode.INVALID_ARGUMENT, f"{refusal}no segments given")
        nodes = await self.store.list_nodes()
        _check(segments, nodes, deployment.num_units, deployment.policy, refusal)
        reason = f"operator: {why or 'ApplyPlan'}"
        event = common_pb2.DecisionEvent(deployment=name, reason=reason)
        change = Change(deployment, common_pb2.Plan(segments=segments), reason, event)
        return (await self.commits.commit(name, change)).or_raise()

    async def undeploy(self, name: str) -> None:
        """Free the deployment's segments on its workers (through the broadcaster), then forget it."""
        await self.commits.release(name)
