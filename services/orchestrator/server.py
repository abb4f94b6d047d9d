"""Orchestrator transport. Deploy/Undeploy and the read path (deployments,
plans, routes, events) are real; ApplyPlan and the control loop answer
UNIMPLEMENTED until the orchestrator/broadcaster issue. Ready while Redis
answers."""

from __future__ import annotations

import grpc

from resplit.core.units import PlanError, route_of
from resplit.rpc.errors import not_yet
from resplit.state import StateStore
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

from .config import OrchestratorSettings
from .deployer import Deployer, DeployError

LOOP = "the orchestrator/broadcaster issue"


async def _require_name(name: str, context: grpc.aio.ServicerContext) -> str:
    if not name:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "deployment name is required")
    return name


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, store: StateStore, deployer: Deployer) -> None:
        self.store = store
        self.deployer = deployer

    async def _plan(self, name: str, context: grpc.aio.ServicerContext) -> common_pb2.Plan:
        plan = await self.store.get_plan(await _require_name(name, context))
        if plan is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"deployment {name!r} has no plan (is it deployed?)"
            )
        return plan

    async def Deploy(
        self, request: orchestrator_pb2.DeployRequest, context
    ) -> orchestrator_pb2.DeployResponse:
        try:
            plan = await self.deployer.deploy(request.deployment, list(request.segments))
        except DeployError as exc:
            await context.abort(exc.code, str(exc))
        return orchestrator_pb2.DeployResponse(plan=plan)

    async def Undeploy(self, request: orchestrator_pb2.UndeployRequest, context):
        try:
            await self.deployer.undeploy(await _require_name(request.deployment, context))
        except DeployError as exc:
            await context.abort(exc.code, str(exc))
        return orchestrator_pb2.UndeployResponse()

    async def ApplyPlan(self, request, context):
        await not_yet(context, "OrchestratorService.ApplyPlan", LOOP)

    async def ListDeployments(self, request, context) -> orchestrator_pb2.ListDeploymentsResponse:
        return orchestrator_pb2.ListDeploymentsResponse(deployments=await self.store.list_deployments())

    async def GetPlan(self, request: orchestrator_pb2.GetPlanRequest, context) -> common_pb2.Plan:
        return await self._plan(request.deployment, context)

    async def GetRoute(self, request: orchestrator_pb2.GetRouteRequest, context) -> common_pb2.Route:
        plan = await self._plan(request.deployment, context)
        try:
            return route_of(plan, await self.store.list_nodes())
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

    def register(self, server: grpc.aio.Server) -> None:
        servicer = OrchestratorServicer(self.store, Deployer(self.store, self.settings.prepare_deadline_s))
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, server)

    async def start(self) -> None:
        return None

    async def check_ready(self) -> tuple[bool, str]:
        return await self.store.ping()

    async def stop(self) -> None:
        await self.store.close()
