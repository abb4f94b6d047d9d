"""Orchestrator transport: Deploy/Undeploy, the read path (deployments, plans,
routes, events), ApplyPlan (an operator's plan, validated like any other and
rolled out by the broadcaster), ReportFailure (a session's lost hop, checked and
acted on in failures.py) and, with ``adaptive``, the Alg. 1 control loop
(loop.py). Ready while Redis answers."""

from __future__ import annotations

import time

import grpc
from redis.exceptions import RedisError

from resplit.core.units import PlanError, route_of
from resplit.state import StateStore
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

from .commit import CommitError, refused
from .config import OrchestratorSettings
from .core.decide import OUTCOME_TO_PROTO, Outcome, change_of
from .core.placement import check_placement
from .deployer import Deployer
from .failures import MAX_REPORTED_NODES, FailureChecks
from .loop import Control, ControlLoop
from .memory import LastKnown
from .rollouts import Broadcaster, RolloutFailed


async def _require_name(name: str, context: grpc.aio.ServicerContext) -> str:
    if not name:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "deployment name is required")
    return name


def _peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5123`` -> ``ipv4:127.0.0.1``: reports are counted per host."""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(
        self,
        store: StateStore,
        deployer: Deployer,
        control: Control,
        memory: LastKnown,
        failures: FailureChecks,
    ) -> None:
        self.store = store
        self.deployer = deployer
        self.control = control
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
            deployment, plan = await self.deployer.deploy(request.deployment, list(request.segments))
        except CommitError as exc:
            await context.abort(exc.code, str(exc))
        # Both, at once: the background sync would only pick the deployment up from Redis a
        # moment later, and a Redis that restarts empty meanwhile would lose it for good.
        self.memory.remember(deployment, plan)
        return orchestrator_pb2.DeployResponse(plan=plan)

    async def Undeploy(self, request: orchestrator_pb2.UndeployRequest, context):
        name = await _require_name(request.deployment, context)
        self.memory.forget(name)
        try:
            await self.deployer.undeploy(name)
        except CommitError as exc:
            await context.abort(exc.code, str(exc))
        return orchestrator_pb2.UndeployResponse()

    async def ApplyPlan(self, request: orchestrator_pb2.ApplyPlanRequest, context) -> common_pb2.Plan:
        """An operator's plan: validated, given the next epoch, rolled out, logged."""
        name = await _require_name(request.deployment, context)
        deployment = await self.store.get_deployment(name)
        if deployment is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"deployment {name!r} is not deployed")
        try:
            await self._check_operator_plan(deployment, list(request.segments))
        except CommitError as exc:
            await context.abort(exc.code, str(exc))
        reason = f"operator: {request.reason or 'ApplyPlan'}"
        async with self.control.lock(name):
            previous = await self.store.get_plan(name) or common_pb2.Plan(deployment=name)
            plan = common_pb2.Plan(
                deployment=name,
                epoch=await self.store.next_epoch(name, floor=previous.epoch),
                segments=request.segments,
                created_at=time.time(),
                reason=reason,
            )
            outcome = change_of(previous, plan)
            event = common_pb2.DecisionEvent(
                deployment=name, timestamp=time.time(), previous=previous, candidates=[plan], reason=reason
            )
            try:
                reply = await self.control.broadcaster.rollout(
                    plan,
                    deployment,
                    self.control.settings.prepare_deadline_s,
                    self.control.settings.drain_deadline_s,
                )
            except RolloutFailed as exc:
                event.outcome = common_pb2.DECISION_OUTCOME_KEEP
                event.reason = f"{reason}; rollout of epoch {plan.epoch} failed: {exc}"
                await self.store.append_event(event)
                await context.abort(exc.code, str(exc))
            committed = reply.committed if reply.HasField("committed") else plan
            event.outcome = OUTCOME_TO_PROTO[
                Outcome.RESPLIT if outcome is Outcome.RESPLIT else Outcome.MIGRATE
            ]
            event.chosen.CopyFrom(committed)
            event_id = await self.store.append_event(event)
            await self.store.record_change(name, event.timestamp, event_id)
        self.memory.remember(None, committed)
        return committed

    async def _check_operator_plan(
        self, deployment: common_pb2.Deployment, segments: list[common_pb2.Segment]
    ) -> None:
        """Raise CommitError unless the plan can be served: it covers the model once, its
        nodes are registered and up, and privacy-critical units sit on trusted nodes."""
        refusal = f"plan for {deployment.name!r} refused: "
        if not segments:
            raise CommitError(grpc.StatusCode.INVALID_ARGUMENT, f"{refusal}no segments given")
        policy = deployment.policy
        nodes = await self.store.list_nodes()
        try:
            check_placement(
                segments, nodes, deployment.num_units, policy.private_depth, policy.trusted_node_ids
            )
        except PlanError as exc:
            raise refused(exc, refusal) from None

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
        updates = self.store.watch_routes(name)
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


class OrchestratorCore:
    name = "orchestrator"
    service_names = [orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name]

    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self.store = StateStore(settings.redis_url)
        self.control = Control(Broadcaster(settings.broadcaster_address), settings)
        self.loop: ControlLoop | None = None
        self.memory = LastKnown(self.store)
        self.failures = FailureChecks(self.store, settings.failure_check_timeout_s, self._wake)

    def _wake(self) -> None:
        if self.loop is not None:
            self.loop.wake()

    def register(self, server: grpc.aio.Server) -> None:
        # One broadcaster channel for deploys and the loop; stop() closes it.
        deployer = Deployer(self.store, self.settings.prepare_deadline_s, self.control.broadcaster)
        servicer = OrchestratorServicer(self.store, deployer, self.control, self.memory, self.failures)
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, server)

    async def start(self) -> None:
        self.memory.start()
        if self.settings.adaptive:
            self.loop = ControlLoop(self.store, self.control)
            self.loop.start()

    async def check_ready(self) -> tuple[bool, str]:
        return await self.store.ping()

    async def stop(self) -> None:
        if self.loop is not None:  # first: no control cycle runs against services going away
            await self.loop.stop()
            self.loop = None
        await self.memory.stop()
        await self.failures.close()
        await self.control.broadcaster.close()
        await self.store.close()
