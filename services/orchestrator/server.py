"""Orchestrator transport: Deploy, ApplyPlan and Undeploy (deployer.py) and SwapLayers
(layers.py), through the one commit path of commit.py, the read path (deployments, plans, routes,
events), ReportFailure (a session's lost hop, checked and acted on in
failures.py) and, with ``adaptive``, the Alg. 1 control loop (loop.py, through
the same commit path). Ready while Redis answers."""

from __future__ import annotations

import grpc
from redis.exceptions import RedisError

from resplit.core.units import PlanError, route_of
from resplit.state import StateStore
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

from .commit import CommitError, Commits
from .config import OrchestratorSettings
from .deployer import Deployer
from .failures import MAX_REPORTED_NODES, FailureChecks
from .keep import MemoryFile
from .layers import LayerSwaps
from .loop import ControlLoop
from .memory import LastKnown
from .repairs import Repairs
from .rollouts import Broadcaster


async def _require_name(name: str, context: grpc.aio.ServicerContext) -> str:
    if not name:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "deployment name is required")
    return name


def _who(claimed: str, context: grpc.aio.ServicerContext) -> str:
    """Who asked, for the decision log: the name the request gives, where it came from,
    and the client certificate's name under mutual TLS."""
    names = context.auth_context().get("x509_common_name") or []
    certificate = f", certificate {names[0].decode(errors='replace')}" if names else ""
    return f"{claimed[:128] or 'unnamed'} ({context.peer()}{certificate})"


def _peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5123`` -> ``ipv4:127.0.0.1``: reports are counted per host."""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(
        self,
        store: StateStore,
        deployer: Deployer,
        memory: LastKnown,
        failures: FailureChecks,
        swaps: LayerSwaps,
    ) -> None:
        self.store = store
        self.deployer = deployer
        self.swaps = swaps
        self.memory = memory
        self.failures = failures

    async def _plan(self, name: str, context: grpc.aio.ServicerContext) -> common_pb2.Plan:
        """The plan in Redis, or the last one seen while Redis is away."""
        name = await _require_name(name, context)
        try:
            plan = await self.store.get_plan(name)
        except RedisError:
            plan = self.memory.plans.get(name)
            if plan is None:
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the state store is unreachable and no plan of {name!r} is known",
                )
        if plan is None:  # Redis restarted empty: the last known plan until it is restored
            plan = self.memory.plans.get(name)
        if plan is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"deployment {name!r} has no plan (is it deployed?)"
            )
        return plan

    async def Deploy(
        self, request: orchestrator_pb2.DeployRequest, context
    ) -> orchestrator_pb2.DeployResponse:
        try:
            floor = self.memory.epochs.get(request.deployment.name, 0)
            deployment, plan = await self.deployer.deploy(request.deployment, list(request.segments), floor)
        except CommitError as exc:
            await context.abort(exc.code, str(exc))
        # Both, at once: the background sync would only pick the deployment up from Redis a
        # moment later, and a Redis that restarts empty meanwhile would lose it for good.
        self.memory.remember(deployment, plan)
        return orchestrator_pb2.DeployResponse(plan=plan)

    async def Undeploy(self, request: orchestrator_pb2.UndeployRequest, context):
        name = await _require_name(request.deployment, context)
        known = self.memory.forget(name)  # first: a sync meanwhile must not write it back
        try:
            await self.deployer.undeploy(name)
        except CommitError as exc:
            self.memory.unforget(name, known)
            await context.abort(exc.code, str(exc))
        return orchestrator_pb2.UndeployResponse()

    async def ApplyPlan(self, request: orchestrator_pb2.ApplyPlanRequest, context) -> common_pb2.Plan:
        """An operator's plan: validated, committed like any change (commit.py), logged."""
        name = await _require_name(request.deployment, context)
        try:
            committed = await self.deployer.apply(name, list(request.segments), request.reason)
        except CommitError as exc:
            await context.abort(exc.code, str(exc))
        self.memory.remember(None, committed)
        return committed

    async def SwapLayers(
        self, request: orchestrator_pb2.SwapLayersRequest, context
    ) -> orchestrator_pb2.SwapLayersResponse:
        """An operator's layer swap: checked, committed like any change (commit.py), logged."""
        try:
            swapped = await self.swaps.swap(request, _who(request.requested_by, context))
        except CommitError as exc:
            await context.abort(exc.code, str(exc))
        self.memory.remember(swapped.record, swapped.plan if swapped.units else None)
        return orchestrator_pb2.SwapLayersResponse(plan=swapped.plan, units=swapped.units)

    async def ListDeployments(self, request, context) -> orchestrator_pb2.ListDeploymentsResponse:
        return orchestrator_pb2.ListDeploymentsResponse(deployments=await self.store.list_deployments())

    async def GetPlan(self, request: orchestrator_pb2.GetPlanRequest, context) -> common_pb2.Plan:
        return await self._plan(request.deployment, context)

    async def GetRoute(self, request: orchestrator_pb2.GetRouteRequest, context) -> common_pb2.Route:
        plan = await self._plan(request.deployment, context)
        try:
            nodes = await self.store.list_nodes()
        except RedisError:
            nodes = self.memory.nodes
        try:
            return route_of(plan, nodes)
        except PlanError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"no route for {request.deployment!r}: {exc}")

    async def WatchRoute(self, request: orchestrator_pb2.WatchRouteRequest, context):
        name = await _require_name(request.deployment, context)
        last = request.after_epoch
        try:
            updates = await self.store.watch_routes(name)  # subscribed before the plan is read
        except RedisError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the state store is unreachable: {exc}")
        try:
            plan = await self.store.get_plan(name)
            if plan is not None and plan.epoch > last:
                try:
                    yield route_of(plan, await self.store.list_nodes())
                    last = plan.epoch
                except PlanError:
                    pass  # not routable yet: wait for the next published route
            async for route in updates:
                if route.epoch > last:
                    last = route.epoch
                    yield route
        finally:
            await updates.aclose()

    async def ReportFailure(
        self, request: orchestrator_pb2.ReportFailureRequest, context
    ) -> orchestrator_pb2.ReportFailureResponse:
        if not request.node_ids or len(request.node_ids) > MAX_REPORTED_NODES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"name 1 to {MAX_REPORTED_NODES} nodes, got {len(request.node_ids)}",
            )
        host = _peer_host(context.peer())
        if not self.failures.admit(host):
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many failure reports from {host} this second; the nodes named are being checked",
            )
        try:
            verdicts = await self.failures.report(request)
        except RedisError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the state store is unreachable: {exc}")
        return orchestrator_pb2.ReportFailureResponse(verdicts=verdicts)

    async def ListEvents(self, request: orchestrator_pb2.ListEventsRequest, context):
        name = await _require_name(request.deployment, context)
        events = await self.store.read_events(name, limit=request.limit or 100)
        return orchestrator_pb2.ListEventsResponse(events=events)


class OrchestratorService:
    name = "orchestrator"
    service_names = [orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name]

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self.store = StateStore(settings.redis_url)
        # One broadcaster channel for every plan change; stop() closes it.
        self.commits = Commits(self.store, Broadcaster(settings.broadcaster_address), settings)
        self.loop: ControlLoop | None = None
        self.memory = LastKnown(self.store, file=MemoryFile(settings.memory_file))
        self.repairs = Repairs(self.store, self.commits)
        self.failures = FailureChecks(
            self.store, settings.failure_check_timeout_s, self._wake, repair=self.repairs.request
        )

    def _wake(self) -> None:
        if self.loop is not None:
            self.loop.wake()

    def register(self, server: grpc.aio.Server) -> None:
        deployer = Deployer(self.store, self.commits)
        swaps = LayerSwaps(self.store, self.commits)
        servicer = OrchestratorServicer(self.store, deployer, self.memory, self.failures, swaps)
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, server)

    async def start(self) -> None:
        self.memory.start()
        if self.settings.adaptive:
            self.loop = ControlLoop(self.store, self.commits)
            self.loop.start()

    async def check_ready(self) -> tuple[bool, str]:
        return await self.store.ping()

    async def stop(self) -> None:
        if self.loop is not None:  # first: no control cycle runs against services going away
            await self.loop.stop()
            self.loop = None
        await self.memory.stop()
        await self.repairs.close()
        await self.failures.close()
        await self.commits.broadcaster.close()
        await self.store.close()
