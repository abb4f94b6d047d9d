"""`make bench`: run every benchmark under bench/ and the testbed's quick scenario,
and collect what they print into one results/BENCHMARKS.md.

Each benchmark runs as its own process, as a user would run it (its own
defaults), one after another so they do not share the CPU. Its printed tables
go into the report verbatim, with the command, the wall time and the exit
status; the plots it writes under results/ are linked. The quick testbed
scenario (scenarios/testbed-smoke.yaml) needs root for its network namespaces;
without root it is reported as not run, with the reason. The paper's sweep is
not part of this (about 15 minutes): `make bench-paper`.

The report starts with what the numbers depend on: commit, machine, versions.
Exit status 1 when any benchmark failed (the report says which and why).

Usage: python tools/bench_report.py [--out results] [--only NAME ...] [--skip-testbed]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
EXCLUDED = {"paper.py"}  # `make bench-paper`: a 15-minute sweep of its own
SCENARIO = ROOT / "scenarios" / "testbed-smoke.yaml"
#: Wide enough that rich does not wrap the benchmarks' tables.
COLUMNS = "160"


@dataclass
class Outcome:
    name: str
    command: list[str]
    summary: str
    seconds: float = 0.0
    returncode: int | None = None
    stdout: str = ""
    stderr_tail: str = ""
    note: str = ""

    @property
    def status(self) -> str:
        if self.returncode is None:
            return "not run"
        return "ok" if self.returncode == 0 else f"failed (exit {self.returncode})"


def first_line(script: Path) -> str:
    """The first paragraph of the script's docstring, on one line: what it measures."""
    text = script.read_text()
    start = text.find('"""')
    if start < 0:
        return ""
    paragraph = text[start + 3 :].split("\n\n", 1)[0].split('"""', 1)[0]
    return " ".join(paragraph.split())


def run(outcome: Outcome, console: Console) -> Outcome:
    env = {**os.environ, "COLUMNS": COLUMNS, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with console.status(f"{outcome.name}: running ({' '.join(outcome.command[1:])})"):
        done = subprocess.run(outcome.command, cwd=ROOT, env=env, capture_output=True, text=True)
    outcome.seconds = time.perf_counter() - started
    outcome.returncode = done.returncode
    outcome.stdout = done.stdout.strip()
    outcome.stderr_tail = "\n".join(done.stderr.strip().splitlines()[-15:])
    console.print(f"{outcome.name}: {outcome.status} in {outcome.seconds:.0f} s")
    return outcome


def benchmarks(only: list[str]) -> list[Outcome]:
    # A leading underscore marks a helper module that benchmarks import, not a benchmark.
    scripts = sorted(
        p for p in (ROOT / "bench").glob("*.py") if p.name not in EXCLUDED and not p.name.startswith("_")
    )
    if only:
        unknown = set(only) - {p.stem for p in scripts}
        if unknown:
            raise SystemExit(f"no benchmark named {', '.join(sorted(unknown))} under bench/")
        scripts = [p for p in scripts if p.stem in only]
    return [Outcome(p.stem, [sys.executable, str(p.relative_to(ROOT))], first_line(p)) for p in scripts]


def testbed(out: Path) -> Outcome:
    folder = out / "testbed-smoke"
    if folder.resolve().is_relative_to(ROOT):
        folder = folder.resolve().relative_to(ROOT)
    outcome = Outcome(
        "testbed-smoke",
        [
            sys.executable,
            "-c",
            "import resplit.cli; resplit.cli.main()",
            "testbed",
            "run",
            str(SCENARIO.relative_to(ROOT)),
            "--out",
            str(folder),
        ],
        "The testbed's quick scenario: emulated A100s, a backhaul change and a load burst, adaptive loop on.",
    )
    if os.geteuid() != 0:
        outcome.note = "not run: the testbed makes network namespaces and needs root (run `sudo make bench`)"
    return outcome


def machine() -> list[str]:
    import grpc
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split("MemTotal:", 1)[1].split()[0])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; commit `{commit or 'unknown'}`",
        f"- machine: {cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, grpcio {grpc.__version__}; CUDA: "
        f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none (CPU only)'}",
    ]


def report(outcomes: list[Outcome], out: Path) -> str:
    lines = [
        "# resplit benchmarks",
        "",
        "Written by `make bench` (tools/bench_report.py). Each benchmark ran as its own process,",
        "one at a time, with its defaults; the tables below are what it printed. Ratios compare",
        "runs made in the same process or run, so they say more than absolute times on a shared",
        "machine. The paper's Table II sweep is separate: `make bench-paper`.",
        "",
        *machine(),
        "",
        "| benchmark | what it measures | wall time | status |",
        "| --- | --- | --- | --- |",
    ]
    for o in outcomes:
        wall = f"{o.seconds:.0f} s" if o.returncode is not None else ""
        lines.append(f"| [{o.name}](#{o.name}) | {o.summary} | {wall} | {o.note or o.status} |")
    for o in outcomes:
        shown = ["resplit", *o.command[3:]] if o.command[1] == "-c" else ["python", *o.command[1:]]
        lines += ["", f"## {o.name}", "", o.summary, "", f"`{' '.join(shown)}`", ""]
        if o.returncode is None:
            lines.append(o.note)
            continue
        lines += ["```text", o.stdout or "(printed nothing)", "```"]
        if o.returncode != 0:
            lines += ["", f"**{o.status}**; the end of its error output:", ""]
            lines += ["```text", o.stderr_tail, "```"]
    plots = sorted(out.glob("*.png"))
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--only", nargs="*", default=[], help="benchmark names (file stems) to run")
    parser.add_argument("--skip-testbed", action="store_true", help="leave out the testbed's quick scenario")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    console = Console()
    outcomes = [run(o, console) for o in benchmarks(args.only)]
    if not args.skip_testbed:
        bed = testbed(args.out)
        if not bed.note:
            run(bed, console)  # it prints its own summary table (also in its results folder)
        outcomes.append(bed)
    path = args.out / "BENCHMARKS.md"
    path.write_text(report(outcomes, args.out))
    table = Table(title=f"written to {path}")
    for column in ("benchmark", "wall time", "status"):
        table.add_column(column)
    for o in outcomes:
        table.add_row(o.name, f"{o.seconds:.0f} s" if o.returncode is not None else "", o.note or o.status)
    console.print(table)
    if any(o.returncode not in (0, None) for o in outcomes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
