"""Splitter transport: Solve and ProfileModel over gRPC, everything else in ``core``.

Statuses: a malformed problem or config is INVALID_ARGUMENT (the message names
the field), an infeasible problem is FAILED_PRECONDITION (the message names the
constraint that fails; for EVALUATE, every constraint the current plan
breaks), a missing model directory is NOT_FOUND and a problem too large for
brute force is RESOURCE_EXHAUSTED. EVALUATE chooses nothing: it answers the
cost of ``problem.current`` under the given nodes and links. Solving is CPU work, so it
runs in a worker thread and health checks keep answering meanwhile. The service
needs nothing but itself, so it is ready as soon as it listens.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from resplit.core import profiles
from resplit.v1 import splitter_pb2, splitter_pb2_grpc

from .config import SplitterSettings
from .core import convert
from .core.problem import ProblemError
from .core.solve import Infeasible, Solution, TooLarge, evaluate_current, solve


def _solve(request: splitter_pb2.SolveRequest, time_limit_s: float | None) -> Solution:
    if request.mode == splitter_pb2.SOLVE_MODE_EVALUATE:
        return evaluate_current(convert.problem_from_proto(request.problem))
    mode = convert.mode_from_proto(request.mode)
    kind = convert.solver_from_proto(request.solver)
    problem = convert.problem_from_proto(request.problem)
    return solve(problem, mode, kind, time_limit_s)


class SplitterServicer(splitter_pb2_grpc.SplitterServiceServicer):
    def __init__(self, settings: SplitterSettings) -> None:
        self.time_limit_s = settings.solve_time_limit_s or None

    async def Solve(self, request: splitter_pb2.SolveRequest, context) -> splitter_pb2.SolveResponse:
        try:
            solution = await asyncio.to_thread(_solve, request, self.time_limit_s)
        except ProblemError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed problem: {exc}")
        except Infeasible as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"infeasible: {exc.reason}")
        except TooLarge as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        reason = f"{solution.solver.value}: Phi={solution.cost.phi:.6g}"
        return splitter_pb2.SolveResponse(
            plan=convert.plan_to_proto(solution.plan, solution.cost, reason, time.time()),
            cost=convert.breakdown_to_proto(solution.cost),
            solve_ms=solution.solve_ms,
            solver=convert.SOLVER_TO_PROTO[solution.solver],
            detail=solution.detail,
        )

    async def ProfileModel(
        self, request: splitter_pb2.ProfileModelRequest, context
    ) -> splitter_pb2.ModelProfile:
        if bool(request.model_dir) == bool(request.config_json):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "give exactly one of model_dir and config_json"
            )
        try:
            if request.model_dir:
                config = profiles.load_config(request.model_dir)
            else:
                config = profiles.parse_config(request.config_json)
            model = profiles.profile(config, request.dtype, weights=request.weights)
        except profiles.ModelNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except profiles.ConfigError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad model config: {exc}")
        except (OSError, UnicodeDecodeError) as exc:  # a name too long, unreadable, not text
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"cannot read a model config at {request.model_dir[:256]!r}: {exc}"[:1024],
            )
        return convert.model_to_proto(model)


class SplitterService:
    name = "splitter"
    service_names = [splitter_pb2.DESCRIPTOR.services_by_name["SplitterService"].full_name]

    def __init__(self, settings: SplitterSettings) -> None:
        self.settings = settings

    def register(self, server: grpc.aio.Server) -> None:
        splitter_pb2_grpc.add_SplitterServiceServicer_to_server(SplitterServicer(self.settings), server)

    async def start(self) -> None:
        return None

    async def check_ready(self) -> tuple[bool, str]:
        return True, "solver ready (no dependencies)"

    async def stop(self) -> None:
        return None
