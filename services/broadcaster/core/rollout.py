"""The two-phase rollout (the paper's RB): prepare, commit, drain, release.

Pure orchestration over two small protocols: :class:`Workers` (the calls the
broadcaster makes on a worker, by address) and :class:`Plans` (the shared
state: deployments, plans, nodes, epochs, rollout records). The grpc and
Redis implementations live outside ``core``; tests pass fakes.

1. Validate: the split covers the model, every node is registered and up,
   privacy-critical units sit on trusted nodes, the epoch only goes up (a
   repeat of the committed plan is answered COMMITTED without touching
   anything). The orchestrator sends every plan with its epoch; a plan with
   epoch 0 (another caller: a test, an operator's tool) gets the next one.
2. Prepare: every hop of the new epoch loads its segment, in parallel, while
   the old epoch keeps serving. Any failure releases what was loaded for the
   new epoch and aborts with the worker's own status code.
3. Commit: every worker of the new plan commits the epoch, the plan is stored
   (an epoch compare-and-set) and the route published; workers of the old
   plan outside the new one learn the newer epoch so their sessions move.
4. Drain and release (after the answer): old-epoch segments are released
   once their sessions reach zero or the drain deadline passes. Releasing
   only drops the worker's table entry: a session still running keeps its
   weights alive, so a release at the deadline never breaks it.

An undeploy is :meth:`Rollouts.release`: every segment of the committed plan
is released at once (the same release calls, no drain).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from resplit.core.compression import COMPRESSIONS
from resplit.core.privacy import check_placement
from resplit.core.units import PlanError, check_segments, route_of
from resplit.core.weights import WeightsError, weights_name
from resplit.v1 import broadcaster_pb2, common_pb2, worker_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

PHASE = broadcaster_pb2.RolloutPhase

# How long, and how often, a load we gave up on (deadline) is watched for in
# case it lands after all and must be released.
REAP_WINDOW_S = 120.0
REAP_POLL_S = 2.0


class WorkerCallError(Exception):
    """A call to a worker failed; ``code`` is the gRPC status name ("UNAVAILABLE", ...)."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class RolloutError(Exception):
    """A rollout refused or aborted; ``code`` is the gRPC status name to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Workers(Protocol):
    """The worker calls a rollout makes (each raises :class:`WorkerCallError`)."""

    async def load(
        self, address: str, request: worker_pb2.LoadSegmentRequest, deadline_s: float
    ) -> worker_pb2.LoadSegmentResponse: ...

    async def commit(
        self, address: str, request: worker_pb2.CommitEpochRequest, deadline_s: float
    ) -> worker_pb2.CommitEpochResponse: ...

    async def release(
        self, address: str, request: worker_pb2.ReleaseSegmentRequest, deadline_s: float
    ) -> worker_pb2.ReleaseSegmentResponse: ...

    async def status(self, address: str, deadline_s: float) -> worker_pb2.WorkerStatus: ...


class Plans(Protocol):
    """The shared state a rollout reads and writes (``StateStore`` fits it).

    ``put_plan`` raises a ``ValueError`` when the epoch is not above the
    committed one (the store's compare-and-set).
    """

    async def get_deployment(self, name: str) -> common_pb2.Deployment | None: ...

    async def get_plan(self, deployment: str) -> common_pb2.Plan | None: ...

    async def list_nodes(self, include_down: bool = True) -> list[common_pb2.Node]: ...

    # Only for a plan that comes without an epoch (a caller of Rollout other than the
    # orchestrator, which assigns every epoch itself).
    async def next_epoch(self, deployment: str, floor: int = 0) -> int: ...

    async def put_plan(self, plan: common_pb2.Plan) -> None: ...

    async def publish_route(self, route: common_pb2.Route) -> int: ...

    async def put_rollout(self, status: broadcaster_pb2.RolloutStatus) -> None: ...

    async def get_rollout(self, deployment: str) -> broadcaster_pb2.RolloutStatus | None: ...


class Observer(Protocol):
    """Where phase timings and outcomes go (Prometheus in the service)."""

    def phase(self, phase: str, seconds: float) -> None: ...

    def outcome(self, outcome: str) -> None: ...


class _Quiet:
    def phase(self, phase: str, seconds: float) -> None:
        return None

    def outcome(self, outcome: str) -> None:
        return None


@dataclass(frozen=True)
class RolloutSettings:
    prepare_deadline_s: float = 300.0
    drain_deadline_s: float = 30.0
    poll_s: float = 0.2
    call_deadline_s: float = 10.0
    status_deadline_s: float = 2.0


def _units(units: common_pb2.UnitRange) -> str:
    return f"[{units.start}, {units.end})"


def _same_segments(a: Sequence[common_pb2.Segment], b: Sequence[common_pb2.Segment]) -> bool:
    key = [(s.node_id, s.units.start, s.units.end) for s in a]
    return key == [(s.node_id, s.units.start, s.units.end) for s in b]


def _serving(current: common_pb2.Plan | None) -> str:
    return f"epoch {current.epoch} keeps serving" if current is not None else "nothing was serving yet"


async def _settle(calls: Iterable[Awaitable[T]]) -> list[T | BaseException]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


def _reason(error: BaseException) -> tuple[str, str]:
    if isinstance(error, WorkerCallError):
        return error.code, error.details
    return "UNAVAILABLE", str(error) or type(error).__name__


class Rollouts:
    """Rollouts of every deployment; one at a time per deployment."""

    def __init__(
        self,
        workers: Workers,
        plans: Plans,
        settings: RolloutSettings | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.workers = workers
        self.plans = plans
        self.settings = settings or RolloutSettings()
        self.observer = observer or _Quiet()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task] = set()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _spawn(self, coro: Coroutine[object, object, None], what: str) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(guarded(), name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: coro.close())  # cancelled before it ever ran

    async def wait_idle(self) -> None:
        """Wait for every background drain/release/cleanup to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel background work (a drain cut short leaves old segments loaded)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- reads -------------------------------------------------------------
    async def get(self, name: str) -> broadcaster_pb2.RolloutStatus:
        if not name:
            raise RolloutError("INVALID_ARGUMENT", "deployment name is required")
        status = await self.plans.get_rollout(name)
        if status is None:
            raise RolloutError("NOT_FOUND", f"no rollout of deployment {name!r} is known")
        return status

    # -- release (undeploy) -----------------------------------------------
    async def release(self, name: str) -> broadcaster_pb2.ReleaseResponse:
        """Free every segment of ``name``'s committed plan on its workers, at once and
        without draining (a session still running keeps its weights alive); best effort
        per worker. Under the deployment's lock: a rollout in flight finishes first and
        its plan is the one released. The plan itself stays: the caller forgets it."""
        if not name:
            raise RolloutError("INVALID_ARGUMENT", "deployment name is required")
        async with self._lock(name):
            plan = await self.plans.get_plan(name)
            if plan is None:
                raise RolloutError("NOT_FOUND", f"deployment {name!r} has no committed plan to release")
            started = time.perf_counter()
            nodes = await self.plans.list_nodes(include_down=True)
            releases = _releases(plan, {n.node_id: n.address for n in nodes})
            done, freed = await self._release_all([(address, release) for _, address, release in releases])
            times = broadcaster_pb2.RolloutTimes(release_ms=(time.perf_counter() - started) * 1e3)
            reason = (
                f"undeployed: {done} of {len(plan.segments)} segment(s) released, "
                f"{freed} parameter bytes freed"
            )
            await self._record(plan, PHASE.ROLLOUT_PHASE_RELEASED, times, reason)
        self.observer.phase("release", times.release_ms / 1e3)
        log.info("released %s epoch %d (%s)", name, plan.epoch, reason)
        return broadcaster_pb2.ReleaseResponse(released=plan, freed_bytes=freed)

    # -- the rollout -------------------------------------------------------
    async def rollout(self, request: broadcaster_pb2.RolloutRequest) -> broadcaster_pb2.RolloutResponse:
        name = request.plan.deployment
        if not name:
            raise RolloutError("INVALID_ARGUMENT", "plan.deployment is required")
        async with self._lock(name):
            return await self._rollout(request)

    async def _record(
        self,
        plan: common_pb2.Plan,
        phase: int,
        times: broadcaster_pb2.RolloutTimes | None = None,
        reason: str = "",
    ) -> None:
        await self.plans.put_rollout(
            broadcaster_pb2.RolloutStatus(
                deployment=plan.deployment, epoch=plan.epoch, phase=phase, times=times, reason=reason
            )
        )

    async def _rollout(self, request: broadcaster_pb2.RolloutRequest) -> broadcaster_pb2.RolloutResponse:
        plan = request.plan
        name = plan.deployment
        spec = request.deployment if request.HasField("deployment") else await self.plans.get_deployment(name)
        if spec is None:
            raise RolloutError(
                "NOT_FOUND", f"deployment {name!r} is not known (deploy it first or pass its spec)"
            )
        if spec.name and spec.name != name:
            raise RolloutError(
                "INVALID_ARGUMENT", f"the plan is for {name!r} but the deployment spec is {spec.name!r}"
            )
        compression = COMPRESSIONS.get(spec.compression or "none")
        if compression is None:
            raise RolloutError(
                "INVALID_ARGUMENT", f"deployment {name!r} has unknown compression {spec.compression!r}"
            )
        try:
            weights = weights_name(spec.weights)
        except WeightsError as exc:
            raise RolloutError("INVALID_ARGUMENT", f"deployment {name!r}: {exc}") from None
        try:
            check_segments(plan.segments, spec.num_units)
        except PlanError as exc:
            raise RolloutError("INVALID_ARGUMENT", f"plan for {name!r}: {exc}") from None

        current = await self.plans.get_plan(name)
        if current is not None and 0 < plan.epoch <= current.epoch:
            if _same_segments(plan.segments, current.segments):
                self.observer.outcome("unchanged")
                log.info("rollout of %s epoch %d: already committed, nothing to do", name, plan.epoch)
                return broadcaster_pb2.RolloutResponse(
                    committed=current,
                    phase=PHASE.ROLLOUT_PHASE_COMMITTED,
                    times=broadcaster_pb2.RolloutTimes(),
                    reason=f"unchanged: epoch {current.epoch} already commits these segments",
                )
            raise RolloutError(
                "FAILED_PRECONDITION",
                f"stale epoch: plan for {name!r} has epoch {plan.epoch}, but epoch {current.epoch} "
                "is already committed with other segments; epochs only increase",
            )

        nodes = await self.plans.list_nodes(include_down=True)
        policy = spec.policy
        try:
            check_placement(
                plan.segments, nodes, spec.num_units, policy.private_depth, list(policy.trusted_node_ids)
            )
        except PlanError as exc:
            raise RolloutError("FAILED_PRECONDITION", f"plan for {name!r}: {exc}") from None

        new = common_pb2.Plan()
        new.CopyFrom(plan)
        if new.epoch == 0:
            new.epoch = await self.plans.next_epoch(name, floor=current.epoch if current else 0)
        if not new.created_at:
            new.created_at = time.time()
        route = route_of(new, nodes)
        times = broadcaster_pb2.RolloutTimes()
        await self._record(new, PHASE.ROLLOUT_PHASE_PREPARING, times)

        # Phase 1: prepare.
        deadline = request.prepare_deadline_s if request.prepare_deadline_s > 0 else None
        deadline = deadline or self.settings.prepare_deadline_s
        loads = [
            worker_pb2.LoadSegmentRequest(
                deployment=name,
                epoch=new.epoch,
                units=hop.units,
                model_dir=spec.model_dir,
                dtype=spec.dtype,
                compression=compression,
                private_depth=policy.private_depth,
                weights=weights,
                unit_sources=[s for s in spec.unit_sources if hop.units.start <= s.unit < hop.units.end],
            )
            for hop in route.hops
        ]
        started = time.perf_counter()
        results = await _settle(
            self.workers.load(hop.address, load, deadline)
            for hop, load in zip(route.hops, loads, strict=True)
        )
        times.prepare_ms = (time.perf_counter() - started) * 1e3
        self.observer.phase("prepare", times.prepare_ms / 1e3)
        failed = [
            (hop, r) for hop, r in zip(route.hops, results, strict=True) if isinstance(r, BaseException)
        ]
        if failed:
            hop, error = failed[0]
            code, details = _reason(error)
            if code == "DEADLINE_EXCEEDED":
                details = f"{details} (prepare deadline {deadline:g} s)"
            message = (
                f"prepare of {name} epoch {new.epoch} aborted: worker {hop.node_id} ({hop.address}) "
                f"could not load units {_units(hop.units)}: {details}; {_serving(current)}"
            )
            await self._abort(new, route, loads, results, times, code, message)

        # Phase 2: commit.
        started = time.perf_counter()
        commit = worker_pb2.CommitEpochRequest(deployment=name, epoch=new.epoch, route=route)
        addresses = list(dict.fromkeys(hop.address for hop in route.hops))
        results_c = await _settle(
            self.workers.commit(a, commit, self.settings.call_deadline_s) for a in addresses
        )
        for address, result in zip(addresses, results_c, strict=True):
            if isinstance(result, BaseException):
                code, details = _reason(result)
                node_id = next(h.node_id for h in route.hops if h.address == address)
                message = (
                    f"commit of {name} epoch {new.epoch} aborted: worker {node_id} ({address}) "
                    f"did not commit: {details}; {_serving(current)}"
                )
                await self._abort(new, route, loads, results, times, code, message)
        try:
            await self.plans.put_plan(new)
        except ValueError as exc:
            message = f"commit of {name} epoch {new.epoch} aborted: {exc}"
            await self._abort(new, route, loads, results, times, "FAILED_PRECONDITION", message)
        await self.plans.publish_route(route)
        if current is not None:
            await self._tell_old_workers(current, new, nodes, commit)
        times.commit_ms = (time.perf_counter() - started) * 1e3
        self.observer.phase("commit", times.commit_ms / 1e3)
        self.observer.outcome("committed")
        await self._record(new, PHASE.ROLLOUT_PHASE_COMMITTED, times)
        log.info(
            "rolled out %s epoch %d (prepare %.0f ms, commit %.0f ms)",
            name,
            new.epoch,
            times.prepare_ms,
            times.commit_ms,
        )

        drain = request.drain_deadline_s if request.drain_deadline_s > 0 else self.settings.drain_deadline_s
        addresses_of = {n.node_id: n.address for n in nodes}
        self._spawn(
            self._drain_and_release(current, new, addresses_of, times, drain),
            f"drain of {name} epoch {current.epoch if current else 0}",
        )
        return broadcaster_pb2.RolloutResponse(
            committed=new, phase=PHASE.ROLLOUT_PHASE_COMMITTED, times=times
        )

    async def _abort(
        self,
        plan: common_pb2.Plan,
        route: common_pb2.Route,
        loads: list[worker_pb2.LoadSegmentRequest],
        results: list,
        times: broadcaster_pb2.RolloutTimes,
        code: str,
        message: str,
    ) -> None:
        """Release the new epoch's segments, record ABORTED, raise."""
        loaded, pending = [], []
        for hop, load, result in zip(route.hops, loads, results, strict=True):
            release = worker_pb2.ReleaseSegmentRequest(
                deployment=load.deployment, epoch=load.epoch, units=load.units
            )
            if not isinstance(result, BaseException):
                loaded.append((hop.address, release))
            elif isinstance(result, WorkerCallError) and result.code == "DEADLINE_EXCEEDED":
                # The worker may still finish that load after we gave up on it.
                pending.append((hop.address, release))
        outcomes = await _settle(self.workers.release(a, r, self.settings.call_deadline_s) for a, r in loaded)
        for (address, release), outcome in zip(loaded, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.info("release of aborted units %s on %s: %s", _units(release.units), address, outcome)
        for address, release in pending:
            self._spawn(self._reap(address, release), f"cleanup of {plan.deployment} epoch {plan.epoch}")
        self.observer.outcome("aborted")
        log.warning("%s", message)
        await self._record(plan, PHASE.ROLLOUT_PHASE_ABORTED, times, message)
        raise RolloutError(code, message)

    async def _reap(self, address: str, release: worker_pb2.ReleaseSegmentRequest) -> None:
        """Release a segment of an aborted epoch if a load we gave up on lands after all."""
        give_up = time.monotonic() + min(self.settings.prepare_deadline_s, REAP_WINDOW_S)
        while time.monotonic() < give_up:
            try:
                status = await self.workers.status(address, self.settings.status_deadline_s)
            except WorkerCallError:
                status = None
            if status is not None and any(_is(s, release) for s in status.segments):
                try:
                    await self.workers.release(address, release, self.settings.call_deadline_s)
                except WorkerCallError as exc:
                    log.info(
                        "late release of aborted units %s on %s: %s", _units(release.units), address, exc
                    )
                return
            await asyncio.sleep(REAP_POLL_S)

    async def _tell_old_workers(
        self,
        old: common_pb2.Plan,
        new: common_pb2.Plan,
        nodes: Sequence[common_pb2.Node],
        commit: worker_pb2.CommitEpochRequest,
    ) -> None:
        """Workers of the old plan outside the new one learn the newer epoch (best effort)."""
        keep = {s.node_id for s in new.segments}
        up = {n.node_id: n.address for n in nodes if n.state == common_pb2.NODE_STATE_UP}
        addresses = list(
            dict.fromkeys(up[s.node_id] for s in old.segments if s.node_id not in keep and s.node_id in up)
        )
        outcomes = await _settle(
            self.workers.commit(a, commit, self.settings.call_deadline_s) for a in addresses
        )
        for address, outcome in zip(addresses, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.info(
                    "old-epoch worker %s did not learn %s epoch %d: %s",
                    address,
                    new.deployment,
                    new.epoch,
                    outcome,
                )

    async def _release_all(
        self, releases: list[tuple[str, worker_pb2.ReleaseSegmentRequest]]
    ) -> tuple[int, int]:
        """Release every (address, segment) at once: (how many were, parameter bytes
        freed). A worker that fails is logged, not retried: best effort."""
        outcomes = await _settle(
            self.workers.release(a, r, self.settings.call_deadline_s) for a, r in releases
        )
        done = freed = 0
        for (address, release), outcome in zip(releases, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.info(
                    "release of %s epoch %d units %s on %s: %s",
                    release.deployment,
                    release.epoch,
                    _units(release.units),
                    address,
                    outcome,
                )
            else:
                done, freed = done + 1, freed + outcome.freed_bytes
        return done, freed

    async def _drain_and_release(
        self,
        old: common_pb2.Plan | None,
        new: common_pb2.Plan,
        addresses_of: dict[str, str],
        times: broadcaster_pb2.RolloutTimes,
        drain_deadline_s: float,
    ) -> None:
        started = time.perf_counter()
        releases = _releases(old, addresses_of) if old is not None else []
        # An old segment with the same node and units as a new one is the same
        # weights under another epoch: its session count covers both, so it is
        # not waited for (its old-epoch entry is still released). Not after a change
        # of layer weights: then the old epoch's sessions drain on the old weights.
        swapped = new.HasField("layers") and new.layers.epoch == new.epoch
        reused = set() if swapped else {(s.node_id, s.units.start, s.units.end) for s in new.segments}
        waiting = [
            (address, release)
            for segment, address, release in releases
            if (segment.node_id, segment.units.start, segment.units.end) not in reused
        ]
        await self._drain(waiting, drain_deadline_s)
        drained = time.perf_counter()
        self.observer.phase("drain", drained - started)

        await self._release_all([(address, release) for _, address, release in releases])
        self.observer.phase("release", time.perf_counter() - drained)
        done = broadcaster_pb2.RolloutTimes()
        done.CopyFrom(times)
        done.release_ms = (time.perf_counter() - started) * 1e3
        async with self._lock(new.deployment):
            # Not when a newer rollout has started meanwhile, nor over an undeploy's record.
            latest = await self.plans.get_rollout(new.deployment)
            if latest is None or (latest.epoch, latest.phase) == (new.epoch, PHASE.ROLLOUT_PHASE_COMMITTED):
                await self._record(new, PHASE.ROLLOUT_PHASE_RELEASED, done)
        if old is not None:
            log.info("released %s epoch %d after %.0f ms", old.deployment, old.epoch, done.release_ms)

    async def _drain(
        self, waiting: list[tuple[str, worker_pb2.ReleaseSegmentRequest]], deadline_s: float
    ) -> None:
        """Wait until no session runs on ``waiting`` or ``deadline_s`` passes."""
        give_up = time.monotonic() + deadline_s
        while waiting:
            addresses = list(dict.fromkeys(a for a, _ in waiting))
            statuses = dict(
                zip(
                    addresses,
                    await _settle(self.workers.status(a, self.settings.status_deadline_s) for a in addresses),
                    strict=True,
                )
            )
            still = []
            for address, release in waiting:
                status = statuses[address]
                if isinstance(status, BaseException):
                    log.info("drain: worker %s unreachable (%s); not waiting for it", address, status)
                    continue
                hosted = [s for s in status.segments if _is(s, release)]
                if hosted and hosted[0].sessions > 0:
                    still.append((address, release))
            waiting = still
            if not waiting:
                return
            if time.monotonic() >= give_up:
                log.info(
                    "drain deadline (%g s) passed with sessions still on %d old segment(s); releasing anyway",
                    deadline_s,
                    len(waiting),
                )
                return
            await asyncio.sleep(self.settings.poll_s)


def _releases(
    plan: common_pb2.Plan, addresses_of: dict[str, str]
) -> list[tuple[common_pb2.Segment, str, worker_pb2.ReleaseSegmentRequest]]:
    """(segment, worker address, its release) for every segment of ``plan`` on a known node."""
    releases = []
    for segment in plan.segments:
        address = addresses_of.get(segment.node_id)
        if address is None:
            log.info(
                "segment %s of %s epoch %d is on an unknown node %r",
                _units(segment.units),
                plan.deployment,
                plan.epoch,
                segment.node_id,
            )
            continue
        release = worker_pb2.ReleaseSegmentRequest(
            deployment=plan.deployment, epoch=plan.epoch, units=segment.units
        )
        releases.append((segment, address, release))
    return releases


def _is(hosted: worker_pb2.HostedSegment, release: worker_pb2.ReleaseSegmentRequest) -> bool:
    return (
        hosted.deployment == release.deployment
        and hosted.epoch == release.epoch
        and hosted.units.start == release.units.start
        and hosted.units.end == release.units.end
    )


__all__ = [
    "Observer",
    "Plans",
    "RolloutError",
    "RolloutSettings",
    "Rollouts",
    "WorkerCallError",
    "Workers",
]
