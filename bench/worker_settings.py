"""Which worker settings decode a split fastest on this host, compared in the same rounds.

On a small shared VM two runs of ``pipeline_overhead.py`` can differ by more
than the effect of a setting, so comparing settings run after run misleads.
Here every variant gets a stack of its own (`resplit up`, three workers, the
variant's environment), all running at once, and each round decodes with the
whole model and then with every variant, in both placements of
``pipeline_overhead.py``: S1 | S2 | S3 over three workers, and S1 and S3 on
worker-0 (the paper's). Drift of the machine's speed between rounds cancels out
of the ratios.

Variants: ``NAME:KEY=VALUE[,KEY=VALUE...]`` environments for the workers; the
default set is the launcher's defaults, every core for decode, OpenMP threads
that never spin, asyncio's event loop instead of uvloop, a lone session's
decode steps handed to the compute thread instead of run on the event loop, and
decode steps through transformers' layers instead of the lean step.
Usage: python bench/worker_settings.py [--rounds 12] [--tokens 20] [--target-ms 35 | --blocks N] [VARIANT ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

from _sizing import model_for, whole_run
from _stack import fixed_placement, median_range
from pipeline_overhead import deploy, paper_placement, split_run, three_segments
from rich.console import Console
from rich.progress import track
from rich.table import Table

from resplit.launcher import stack as stack_mod
from resplit.launcher.stack import host_cores
from resplit.sdk import Client

PLACEMENTS = {"3 workers": "three", "S1+S3 on worker-0": "paper"}


def default_variants() -> dict[str, dict[str, str]]:
    return {
        "resplit up defaults": {},
        "every core for decode": {"RESPLIT_DECODE_THREADS": str(host_cores())},
        "no OpenMP spinning": {"GOMP_SPINCOUNT": "0"},
        "asyncio's event loop": {"RESPLIT_EVENT_LOOP": "asyncio"},
        "decode on the compute thread": {"RESPLIT_INLINE_DECODE": "false"},
        "transformers' layers for decode": {"RESPLIT_LEAN_DECODE": "false"},
    }


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:KEY=VALUE,...`` (an empty environment after the colon is allowed)."""
    name, sep, assignments = text.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"a variant is NAME:KEY=VALUE[,KEY=VALUE...], got {text!r}")
    env = {}
    for item in filter(None, assignments.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise argparse.ArgumentTypeError(f"{item!r} in variant {name!r} is not KEY=VALUE")
        env[key] = value
    return name, env


def start(state_dir: Path, env: dict[str, str]) -> stack_mod.Stack:
    """A plaintext stack of three trusted workers whose processes see ``env``."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return stack_mod.up(
            state_dir, workers=3, trusted=3, secure=False, timeout_s=120, extra_args=fixed_placement()
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--target-ms", type=float, default=35.0)
    parser.add_argument("--blocks", type=int, help="use this many blocks (>= 3) instead of sizing")
    parser.add_argument("variants", nargs="*", type=parse_variant, metavar="VARIANT")
    args = parser.parse_args()
    if args.blocks is not None and args.blocks < 3:
        parser.error(f"--blocks must be at least 3, got {args.blocks}")
    variants = dict(args.variants) or default_variants()
    console = Console(width=160)
    work = Path(tempfile.mkdtemp(prefix="resplit-bench-"))
    prompt = [5 + (i * 7) % 300 for i in range(16)]
    with console.status("sizing the model to this machine"):
        blocks, model_dir, model = model_for(work, args.blocks, args.target_ms, prompt)
    segments = three_segments(blocks)
    layouts = {"three": segments, "paper": paper_placement(segments)}
    runs = {"whole": lambda: whole_run(model, prompt, args.tokens)}
    with ExitStack() as cleanup:
        for i, (name, env) in enumerate(variants.items()):
            state = work / f"stack-{i}"
            with console.status(f"starting the stack for {name!r}"):
                stack = start(state, env)
            cleanup.callback(stack_mod.down, state)
            address = stack.by_name("orchestrator").address
            client = cleanup.enter_context(Client(address))
            for layout, placed in layouts.items():
                deploy(address, layout, model_dir, placed)
                route = client.route(layout)
                runs[f"{name}/{layout}"] = lambda c=client, r=route: split_run(c, r, prompt, args.tokens)
        for run in runs.values():  # warm-up
            run()
        medians = {key: [] for key in runs}
        for _ in track(range(args.rounds), description="rounds", console=console, transient=True):
            tokens = set()
            for key, run in runs.items():
                _, steps, ids = run()
                medians[key].append(statistics.median(steps) * 1e3)
                tokens.add(tuple(ids))
            if len(tokens) != 1:
                raise SystemExit(f"the runs generated different tokens: {sorted(tokens)}")
    whole = medians["whole"]
    table = Table(title=f"Worker settings, split decode / whole model ({blocks}-block Llama, fp32, CPU)")
    table.add_column("variant")
    table.add_column("workers' environment")
    for title in PLACEMENTS:
        table.add_column(f"{title}: / whole (range)", justify="right")
        table.add_column("ms/token", justify="right")
    for name, env in variants.items():
        cells = []
        for layout in PLACEMENTS.values():
            ms = medians[f"{name}/{layout}"]
            cells += [
                median_range([s / w for s, w in zip(ms, whole, strict=True)]),
                f"{statistics.median(ms):.2f}",
            ]
        table.add_row(name, ", ".join(f"{k}={v}" for k, v in env.items()) or "(none)", *cells)
    console.print(table)
    console.print(
        f"whole model {statistics.median(whole):.2f} ms/token; {args.rounds} rounds x {args.tokens} tokens, "
        f"every variant's stack running throughout; {host_cores()} cores; the same greedy tokens in every run"
    )


if __name__ == "__main__":
    main()
