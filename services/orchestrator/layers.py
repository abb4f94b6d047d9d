"""SwapLayers: an operator replaces the weights of some blocks of a live deployment.

Checked here first (the blocks exist, the directory is absolute and on this host, and
its tensors fit the deployment's: resplit/models/layers.py names the one that does
not), then committed through the one commit path (commit.py) as a plan change: the
same segments at the next epoch, the deployment record with the new unit sources
stored once committed, a decision event saying what was swapped and who asked. Under
the deployment's lock the record and the plan in force are read again, so two swaps
never lose each other's blocks. Trust needs nothing of its own: a privacy-critical
block is only ever placed on a trusted worker, which loads it from the directory
itself (it must be able to read it, or the rollout aborts and the old epoch serves),
and every worker's guard refuses privacy-critical units without --trusted as always.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from resplit.core.units import PlanError
from resplit.state import StateStore
from resplit.v1 import common_pb2, orchestrator_pb2

from .commit import Change, CommitError, Commits
from .core.layers import describe, requested_units, session_policy, swap_plan, swapped

log = logging.getLogger(__name__)


def _check_source(spec: common_pb2.Deployment, units: list[int], source_dir: str) -> None:
    """Raise CommitError unless ``source_dir`` can stand in for the deployment's weights at ``units``."""
    try:
        is_dir = Path(source_dir).is_dir()
    except (OSError, ValueError):  # a name too long for the file system
        is_dir = False
    if not is_dir:
        raise CommitError(
            grpc.StatusCode.NOT_FOUND, f"checkpoint directory {source_dir[:256]!r} does not exist here"
        )
    # Here, not at the top: checkpoints import torch, which the orchestrator otherwise never needs.
    from resplit.models import CheckpointError
    from resplit.models.checkpoint import Checkpoint
    from resplit.models.layers import check_compatible, open_sourced

    try:
        current = open_sourced(spec.model_dir, {s.unit: s.model_dir for s in spec.unit_sources})
        check_compatible(current, Checkpoint(source_dir), units)
    except (CheckpointError, OSError) as exc:
        raise CommitError(grpc.StatusCode.INVALID_ARGUMENT, f"swap refused: {exc}") from None


@dataclass
class Swapped:
    """What became of a swap: the deployment record stored (None when nothing changed),
    the plan in force after it, and the units whose weights changed (none when every
    unit already read the directory: then nothing was rolled out)."""

    record: common_pb2.Deployment | None = None
    plan: common_pb2.Plan = field(default_factory=common_pb2.Plan)
    units: list[int] = field(default_factory=list)


class LayerSwaps:
    def __init__(self, store: StateStore, commits: Commits) -> None:
        self.store = store
        self.commits = commits

    async def swap(self, request: orchestrator_pb2.SwapLayersRequest, who: str) -> Swapped:
        """Check, commit and log one swap asked for by ``who``; CommitError says why not."""
        name, source = request.deployment, request.source_dir
        if not name:
            raise CommitError(grpc.StatusCode.INVALID_ARGUMENT, "deployment name is required")
        if not source or not Path(source).is_absolute() or "\0" in source:
            raise CommitError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"source_dir must be an absolute path (each worker resolves it), got {source[:256]!r}",
            )
        try:
            sessions = session_policy(request.sessions)
        except PlanError as exc:
            raise CommitError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        result = Swapped()

        async def propose(in_force: common_pb2.Plan) -> Change:
            spec = await self.store.get_deployment(name)
            if spec is None or not in_force.segments:
                raise CommitError(grpc.StatusCode.NOT_FOUND, f"deployment {name!r} is not deployed")
            try:
                units = requested_units(request.units, spec.num_units)
            except PlanError as exc:
                raise CommitError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            await asyncio.to_thread(_check_source, spec, units, source)
            record, changed = swapped(spec, units, source)
            result.plan, result.units = in_force, changed
            if not changed:
                return Change(spec, None)  # nothing to roll out, nothing to log
            what = describe(changed, source, sessions)
            reason = f"operator: {what}" + (f"; {request.reason}" if request.reason else "")
            event = common_pb2.DecisionEvent(deployment=name, reason=reason, requested_by=who)
            result.record = record
            return Change(record, swap_plan(in_force, changed, sessions), reason, event, store_spec=True)

        committed = await self.commits.commit(name, propose)
        if result.units:
            result.plan = committed.or_raise()
            log.info("%s: %s, asked by %s, epoch %d", name, result.plan.reason, who, result.plan.epoch)
        return result


__all__ = ["LayerSwaps", "Swapped"]
