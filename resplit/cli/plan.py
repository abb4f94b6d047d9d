"""``resplit plan``: ask the splitter for the best plan of a scenario file."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console

from ..rpc.channels import sync_channel
from ..scenarios import plan as scenario_mod
from ..v1 import splitter_pb2, splitter_pb2_grpc
from . import plan_views
from .targets import service_address

plan_app = typer.Typer(
    help="Plans: solve a scenario with the splitter; show or apply a deployment's plan.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)
EXIT_BAD_SCENARIO = 2


class ModeName(enum.StrEnum):
    resplit = "resplit"
    placement_only = "placement-only"


class SolverName(enum.StrEnum):
    exact = "exact"
    greedy = "greedy"
    brute_force = "brute-force"


MODES = {
    ModeName.resplit: splitter_pb2.SOLVE_MODE_RESPLIT,
    ModeName.placement_only: splitter_pb2.SOLVE_MODE_PLACEMENT_ONLY,
}
SOLVERS = {
    SolverName.exact: splitter_pb2.SOLVER_KIND_EXACT,
    SolverName.greedy: splitter_pb2.SOLVER_KIND_GREEDY,
    SolverName.brute_force: splitter_pb2.SOLVER_KIND_BRUTE_FORCE,
}


def _refusal(address: str, exc: grpc.RpcError) -> str:
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return (
            f"cannot reach the splitter at {address}: start a stack with `resplit up` "
            "or pass --splitter HOST:PORT"
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return f"no feasible plan - {exc.details()}"
    return f"the splitter refused ({code.name}): {exc.details()}"


@plan_app.command()
def solve(
    scenario: Annotated[Path, typer.Option(help="scenario YAML (see scenarios/)", dir_okay=False)],
    mode: Annotated[
        ModeName, typer.Option(help="free boundaries, or keep the current plan's")
    ] = ModeName.resplit,
    solver: Annotated[SolverName, typer.Option(help="exact, or a baseline")] = SolverName.exact,
    splitter: Annotated[
        str | None,
        typer.Option(help="host:port of the splitter (default: the local stack's, else 127.0.0.1:50053)"),
    ] = None,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", envvar="RESPLIT_STATE_DIR", help="where the local stack file lives")
    ] = Path(".resplit"),
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait for each RPC")] = 120.0,
) -> None:
    """Solve a scenario: print the plan and its predicted cost breakdown."""
    try:
        spec = scenario_mod.load(scenario)
        config_json = scenario_mod.model_config_json(spec, scenario.parent)
    except scenario_mod.ScenarioError as exc:
        err.print(f"[red]bad scenario:[/red] {exc}")
        raise typer.Exit(EXIT_BAD_SCENARIO) from None
    address = service_address("splitter", splitter, state_dir)
    try:
        with sync_channel(address) as channel:
            stub = splitter_pb2_grpc.SplitterServiceStub(channel)
            profile = stub.ProfileModel(
                splitter_pb2.ProfileModelRequest(config_json=config_json, dtype=spec.model.dtype),
                timeout=timeout,
            )
            request = splitter_pb2.SolveRequest(
                problem=scenario_mod.to_problem(spec, profile), mode=MODES[mode], solver=SOLVERS[solver]
            )
            response = stub.Solve(request, timeout=timeout)
    except grpc.RpcError as exc:
        err.print(f"[red]{_refusal(address, exc)}[/red]")
        raise typer.Exit(1) from None
    console.print(plan_views.plan_table(response, spec, profile))
    console.print(plan_views.cost_table(response))
    console.print(f"[dim]{response.detail}[/dim]")
