"""What ``resplit testbed run`` does once its scenario has loaded: play it with a
progress bar, write the report and print the summary.

The testbed owns this, so the dependency points the right way: ``resplit``'s CLI
declares the command and its flags, loads the scenario, and imports this module
inside the command only (the one import from ``resplit`` into the testbed; an
import-linter contract names it).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from resplit.scenarios.testbed import TestbedScenario

from .report import report, write_json
from .run import Runner
from .system import EmulationUnavailable, terminated_as_exit


def play(spec: TestbedScenario, base: Path, out_dir: Path) -> int:
    """Play ``spec`` (relative paths from ``base``) into ``out_dir``; the exit code:
    1 if the testbed cannot be built here or no request was sent, else 0."""
    console, err = Console(), Console(stderr=True)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(spec.name, total=spec.duration_s, info="starting nodes and services")

        def progress(t: float, done: int, failed: int) -> None:
            bar.update(task, completed=t, info=f"{done} requests, {failed} failed")

        try:
            with terminated_as_exit():  # a kill still takes the nodes and processes down
                result = Runner(spec, base, out_dir, progress).run()
        except EmulationUnavailable as exc:
            err.print(f"[red]the testbed needs root, cgroups and network namespaces:[/red] {exc}")
            return 1
    summary = report(result)
    write_json(summary, out_dir / "summary.json")
    console.print((out_dir / "summary.md").read_text())
    console.print(f"results: {out_dir}/ (requests.csv, summary.md, summary.json, timeline.png)")
    return 1 if summary.requests == 0 else 0
