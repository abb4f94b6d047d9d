"""``resplit events`` and ``resplit plan show / apply / watch``: the orchestrator's
decision log, plans and routes, read, forced and followed from the command line."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from ..rpc.channels import sync_channel
from ..v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from .serve import parse_split, plan_table
from .targets import service_address

console = Console()
err = Console(stderr=True, highlight=False)

Orchestrator = Annotated[
    str | None,
    typer.Option(envvar="RESPLIT_ORCHESTRATOR", help="orchestrator host:port (default: local stack)"),
]
StateDir = Annotated[Path, typer.Option("--state-dir", envvar="RESPLIT_STATE_DIR", help="local stack folder")]
OUTCOMES = {
    common_pb2.DECISION_OUTCOME_KEEP: "[dim]keep[/dim]",
    common_pb2.DECISION_OUTCOME_MIGRATE: "[yellow]migrate[/yellow]",
    common_pb2.DECISION_OUTCOME_RESPLIT: "[magenta]resplit[/magenta]",
}


def _call(method: str, request, orchestrator: str | None, state_dir: Path, timeout: float):
    """One orchestrator RPC; a gRPC failure becomes one red line and exit 1."""
    address = service_address("orchestrator", orchestrator, state_dir)
    with sync_channel(address) as channel:
        try:
            return getattr(orchestrator_pb2_grpc.OrchestratorServiceStub(channel), method)(
                request, timeout=timeout
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                err.print(
                    f"[red]cannot reach the orchestrator at {address}[/red]: start a stack with "
                    "`resplit up` or pass --orchestrator HOST:PORT",
                    soft_wrap=True,
                )
            else:
                err.print(f"[red]{exc.code().name}[/red]: {exc.details()}", soft_wrap=True)
            raise typer.Exit(1) from None


def segments_text(plan: common_pb2.Plan) -> str:
    return ",".join(f"{s.units.start}:{s.units.end}@{s.node_id}" for s in plan.segments) or "-"


def trigger_text(trigger: common_pb2.Trigger) -> str:
    if trigger.name == "node_down":
        return f"node_down {trigger.subject}"
    relation = "<" if trigger.name == "bandwidth" else ">"
    signal = trigger.subject.split(" ")[0] in ("ttft", "tpot", "request")
    subject = f" {trigger.subject}" if trigger.name != "latency" or signal else ""
    return f"{trigger.name}{subject} {trigger.value:.4g} {relation} {trigger.threshold:.4g}"


def _ms(value: float) -> str:
    if value <= 0:
        return "-"
    return f"{value:.3g} ms" if value < 100 else f"{value:,.0f} ms"


def predicted_ms(cost: common_pb2.CostBreakdown, signal: str) -> float:
    """The splitter's prediction of the signal an event measured (TTFT: the prefill)."""
    return {"ttft": cost.prefill_ms, "tpot": cost.decode_ms_per_token}.get(signal, cost.latency_ms)


def _error(predicted: float, measured: float) -> str:
    """How far the prediction was off: (measured - predicted) / predicted."""
    if predicted <= 0 or measured <= 0:
        return "-"
    return f"{(measured - predicted) / predicted:+.0%}"


def events_view(deployment: str, events: list[common_pb2.DecisionEvent]) -> Table:
    table = Table(title=f"decisions of {deployment!r} ({len(events)})")
    # Short cells never wrap: a long plan or reason folds within its own column
    # rather than squeezing a trigger such as "latency 68.85 > 50" onto two lines.
    for column in ("time", "outcome", "triggers"):
        table.add_column(column, no_wrap=True)
    table.add_column("chosen plan", overflow="fold")
    for column in ("signal", "predicted", "measured", "error"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold", max_width=60)
    for event in events:
        chosen = event.chosen if event.HasField("chosen") else None
        predicted = predicted_ms(chosen.predicted, event.latency_signal) if chosen is not None else 0.0
        table.add_row(
            datetime.datetime.fromtimestamp(event.timestamp).strftime("%H:%M:%S"),
            OUTCOMES.get(event.outcome, "?"),
            "\n".join(trigger_text(t) for t in event.triggers) or "-",
            f"epoch {chosen.epoch}: {segments_text(chosen)}" if chosen is not None else "-",
            event.latency_signal or "request",
            _ms(predicted) if chosen is not None else "-",
            _ms(event.measured_latency_ms),
            _error(predicted, event.measured_latency_ms) if chosen is not None else "-",
            event.reason + (f" (asked by {event.requested_by})" if event.requested_by else ""),
        )
    return table


def events(
    deployment: Annotated[str, typer.Argument(help="deployment name")],
    limit: Annotated[int, typer.Option(min=1, help="how many of the latest decisions")] = 20,
    orchestrator: Orchestrator = None,
    state_dir: StateDir = Path(".resplit"),
) -> None:
    """The decision log of a deployment: triggers, outcome, chosen plan, predicted vs measured latency."""
    request = orchestrator_pb2.ListEventsRequest(deployment=deployment, limit=limit)
    reply = _call("ListEvents", request, orchestrator, state_dir, 30)
    console.print(events_view(deployment, list(reply.events)))


def show(
    deployment: Annotated[str, typer.Argument(help="deployment name")],
    orchestrator: Orchestrator = None,
    state_dir: StateDir = Path(".resplit"),
) -> None:
    """The plan in force: segments, nodes, epoch and why it exists."""
    plan = _call(
        "GetPlan", orchestrator_pb2.GetPlanRequest(deployment=deployment), orchestrator, state_dir, 30
    )
    console.print(plan_table(plan))


def apply(
    deployment: Annotated[str, typer.Argument(help="deployment name")],
    split: Annotated[str, typer.Option(help="START:END@NODE,... in unit order, as for deploy")],
    reason: Annotated[str, typer.Option(help="why (goes into the decision log)")] = "manual",
    orchestrator: Orchestrator = None,
    state_dir: StateDir = Path(".resplit"),
    timeout: Annotated[float, typer.Option(min=1, help="seconds to wait for the rollout")] = 600.0,
) -> None:
    """Force a split and placement: validated like any plan, rolled out under the next epoch."""
    request = orchestrator_pb2.ApplyPlanRequest(
        deployment=deployment, segments=parse_split(split), reason=reason
    )
    plan = _call("ApplyPlan", request, orchestrator, state_dir, timeout)
    console.print(plan_table(plan))


def watch(
    deployment: Annotated[str, typer.Argument(help="deployment name")],
    count: Annotated[int, typer.Option(min=0, help="stop after this many routes (0: until Ctrl-C)")] = 0,
    after_epoch: Annotated[int, typer.Option(min=0, help="only routes of later epochs")] = 0,
    orchestrator: Orchestrator = None,
    state_dir: StateDir = Path(".resplit"),
) -> None:
    """Follow the deployment's route: one line per epoch as plans commit (the current one first)."""
    address = service_address("orchestrator", orchestrator, state_dir)
    request = orchestrator_pb2.WatchRouteRequest(deployment=deployment, after_epoch=after_epoch)
    seen = 0
    with sync_channel(address) as channel:
        stream = orchestrator_pb2_grpc.OrchestratorServiceStub(channel).WatchRoute(request)
        try:
            for route in stream:
                hops = " -> ".join(f"[{h.units.start}, {h.units.end})@{h.node_id}" for h in route.hops)
                now = datetime.datetime.now().strftime("%H:%M:%S")
                console.print(f"{now}  epoch {route.epoch}  {hops}", soft_wrap=True)
                seen += 1
                if count and seen >= count:
                    break
        except grpc.RpcError as exc:
            err.print(f"[red]{exc.code().name}[/red]: {exc.details()}", soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            pass
        finally:
            stream.cancel()
