"""``resplit testbed run SCENARIO``: play a testbed scenario on emulated nodes (root)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..scenarios import testbed as testbed_scenario
from ..scenarios.loading import ScenarioError

testbed_app = typer.Typer(help="Emulated edge testbed: play scenario files (root).", no_args_is_help=True)
err = Console(stderr=True)
EXIT_BAD_SCENARIO = 2


@testbed_app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="a testbed scenario (YAML)")],
    out: Annotated[
        Path | None, typer.Option(help="results folder (default: results/<scenario name>)")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="override a key with a YAML value, dotted for nested ones: --set control.adaptive=false",
        ),
    ] = None,
) -> None:
    """Build the nodes and links, start Redis, the control services and one worker per node,
    drive the workload, and write requests.csv, summary.md and timeline.png."""
    import yaml

    overrides = {}
    for item in set_ or []:
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    try:
        spec = testbed_scenario.load(scenario, overrides)
    except ScenarioError as exc:
        err.print(f"[red]bad scenario:[/red] {exc}")
        raise typer.Exit(EXIT_BAD_SCENARIO) from None
    # The one import from resplit into the testbed, here and inside the command only: the testbed
    # ships in this distribution, imports resplit, and owns what the command does (pyproject.toml,
    # import-linter contract "The shared package never imports the testbed").
    from testbed.play import play

    raise typer.Exit(play(spec, scenario.parent, out or Path("results") / spec.name))
