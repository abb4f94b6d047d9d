"""``resplit testbed run SCENARIO``: play a testbed scenario on emulated nodes (root)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..scenarios import testbed as testbed_scenario
from ..scenarios.loading import ScenarioError

testbed_app = typer.Typer(help="Emulated edge testbed: play scenario files (root).", no_args_is_help=True)
console = Console()
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
    from testbed.report import report, write_json  # the testbed package ships next to resplit
    from testbed.run import Runner
    from testbed.system import EmulationUnavailable

    out_dir = out or Path("results") / spec.name
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(spec.name, total=spec.duration_s, info="starting nodes and services")

        def progress(t: float, done: int, failed: int) -> None:
            bar.update(task, completed=t, info=f"{done} requests, {failed} failed")

        try:
            result = Runner(spec, scenario.parent, out_dir, progress).run()
        except EmulationUnavailable as exc:
            err.print(f"[red]the testbed needs root, cgroups and network namespaces:[/red] {exc}")
            raise typer.Exit(1) from None
    summary = report(result)
    write_json(summary, out_dir / "summary.json")
    console.print((out_dir / "summary.md").read_text())
    console.print(f"results: {out_dir}/ (requests.csv, summary.md, summary.json, timeline.png)")
    if summary.requests == 0:
        raise typer.Exit(1)
