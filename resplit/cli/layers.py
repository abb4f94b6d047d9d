"""``resplit layers swap / merge``: change what single blocks of a live deployment compute.

``swap`` asks the orchestrator (SwapLayers) to read blocks A..B-1 from another
checkpoint of the same architecture; the swap is a plan change like any other
(checked, rolled out under the next epoch, logged with who asked). ``merge`` is
SafeMERGE on top of it: it reads the deployment's weights and the safe and base
models here (the machine the command runs on must see the deployment's model
directory), prints its per-block decision and, with ``--yes``, writes the merged
blocks to a checkpoint directory and swaps exactly those in.
"""

from __future__ import annotations

import datetime
import getpass
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..v1 import common_pb2, orchestrator_pb2
from .control import Orchestrator, StateDir, _call
from .serve import plan_table

layers_app = typer.Typer(
    help="Swap or merge the weights of single blocks of a live deployment.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True, highlight=False)

POLICIES = {"drain": common_pb2.SESSION_POLICY_DRAIN, "replay": common_pb2.SESSION_POLICY_REPLAY}
Sessions = Annotated[
    str,
    typer.Option(
        help="sessions that began before the swap: 'drain' (finish on the old weights) "
        "or 'replay' (rebuilt on the new ones at their next token)"
    ),
]
Timeout = Annotated[float, typer.Option(min=1, help="seconds to wait for the rollout")]


def parse_units(text: str) -> list[common_pb2.UnitRange]:
    """``A:B[,C:D...]`` -> unit ranges (blocks A..B-1); BadParameter when malformed."""
    ranges = []
    for part in text.split(","):
        try:
            start, end = (int(x) for x in part.split(":"))
        except ValueError:
            raise typer.BadParameter(f"expected A:B (blocks A..B-1), got {part!r}") from None
        ranges.append(common_pb2.UnitRange(start=start, end=end))
    return ranges


def _policy(name: str) -> int:
    if name not in POLICIES:
        raise typer.BadParameter(f"--sessions must be one of {', '.join(POLICIES)}, got {name!r}")
    return POLICIES[name]


def _requester() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return socket.gethostname()


def _swap(deployment, ranges, source: Path, sessions: str, reason: str, orchestrator, state_dir, timeout):
    request = orchestrator_pb2.SwapLayersRequest(
        deployment=deployment,
        units=ranges,
        source_dir=str(source.resolve()),
        sessions=_policy(sessions),
        requested_by=_requester(),
        reason=reason,
    )
    reply = _call("SwapLayers", request, orchestrator, state_dir, timeout)
    if not reply.units:
        console.print("every block named already reads that directory: nothing to swap")
    else:
        console.print(f"swapped blocks {', '.join(map(str, reply.units))}")
    console.print(plan_table(reply.plan))


@layers_app.command()
def swap(
    deployment: Annotated[str, typer.Argument(help="deployment name")],
    units: Annotated[str, typer.Option(help="blocks A:B (units A..B-1; blocks are 1..L), comma-separated")],
    source: Annotated[
        Path, typer.Option("--from", help="checkpoint directory of the same architecture (its own to undo)")
    ],
    sessions: Sessions = "drain",
    reason: Annotated[str, typer.Option(help="why (goes into the decision log)")] = "",
    orchestrator: Orchestrator = None,
    state_dir: StateDir = Path(".resplit"),
    timeout: Timeout = 600.0,
) -> None:
    """Replace the weights of blocks A..B-1 with another checkpoint's, under the next epoch."""
    _swap(deployment, parse_units(units), source, sessions, reason, orchestrator, state_dir, timeout)


def decisions_table(deployment: str, decisions, threshold: float) -> Table:
    table = Table(title=f"SafeMERGE decisions for {deployment!r} (merge where rho < {threshold:g})")
    for column in ("block unit", "rho", "drift", "lowest in", "decision"):
        table.add_column(column, no_wrap=column != "lowest in")
    for d in decisions:
        table.add_row(
            str(d.unit),
            f"{d.rho:.3f}",
            f"{d.drift:.3g}",
            d.tensor or "(unchanged)",
            "[red]merge[/red]" if d.merge else "keep",
        )
    return table


@layers_app.command()
def merge(
    deployment: Annotated[str, typer.Argument(help="deployment name (its weights are the fine-tuned model)")],
    safe: Annotated[Path, typer.Option("--from", help="the safety-aligned model's checkpoint directory")],
    base: Annotated[Path, typer.Option("--base", help="the unaligned base model it was aligned from")],
    aligned: Annotated[
        Path | None, typer.Option(help="the model the fine-tuning started from (default: --from)")
    ] = None,
    threshold: Annotated[float, typer.Option(help="merge a block whose rho is below this")] = 0.5,
    weight: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="the fine-tuned share of a merged block")
    ] = 0.5,
    out: Annotated[
        Path | None, typer.Option(help="where to write the merged blocks (default: beside the model)")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="apply: write the merged blocks and swap them in")
    ] = False,
    sessions: Sessions = "drain",
    orchestrator: Orchestrator = None,
    state_dir: StateDir = Path(".resplit"),
    timeout: Timeout = 600.0,
) -> None:
    """SafeMERGE: merge with the safe model only the blocks whose fine-tuning left the safety subspace."""
    from ..models import Checkpoint, CheckpointError
    from ..models.layers import decide_merge, open_sourced, write_merged

    listed = _call("ListDeployments", orchestrator_pb2.ListDeploymentsRequest(), orchestrator, state_dir, 30)
    spec = next((d for d in listed.deployments if d.name == deployment), None)
    if spec is None:
        err.print(f"[red]NOT_FOUND[/red]: deployment {deployment!r} is not deployed")
        raise typer.Exit(1)
    try:
        tuned = open_sourced(spec.model_dir, {s.unit: s.model_dir for s in spec.unit_sources})
        safe_ck = Checkpoint(safe)
        decisions = decide_merge(
            tuned, safe_ck, Checkpoint(base), Checkpoint(aligned) if aligned else None, threshold
        )
    except (CheckpointError, OSError) as exc:
        err.print(f"[red]cannot merge[/red]: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(decisions_table(deployment, decisions, threshold))
    chosen = [d.unit for d in decisions if d.merge]
    if not chosen:
        console.print("no block drifted: nothing to merge")
        return
    if not yes:
        console.print(f"{len(chosen)} block(s) to merge; run again with --yes to apply")
        return
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    target = out or Path(f"{spec.model_dir.rstrip('/')}.safemerge-{stamp}")
    written = write_merged(target, tuned, safe_ck, chosen, weight)
    console.print(f"merged blocks written to {written}")
    ranges = [common_pb2.UnitRange(start=u, end=u + 1) for u in chosen]
    _swap(deployment, ranges, written, sessions, f"SafeMERGE from {safe}", orchestrator, state_dir, timeout)


__all__ = ["decisions_table", "layers_app", "parse_units"]
