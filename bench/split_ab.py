"""A split's per-token cost under two (or more) worker variants, alternating in every round.

Why: on a shared 2-core machine a split's decode speed drifts by tens of percent between
minutes, so "before" and "after" measured in two sittings say little. Here every variant
gets its own running stack at once (``resplit up``: three workers, the benchmark's
15-block Llama deployed S1 | S2 | S3 in each weight format), and every round runs, per
format, the whole model in this process (resplit's segment code, ``--threads``) and then
each variant's split, in an order that rotates between rounds. A variant is a source
tree (its workers run that tree's code: the stack starts from it, with it on
PYTHONPATH) and environment for its workers, e.g. the tree before a change and after
it, or one tree with two ``GOMP_SPINCOUNT`` values.

Printed per format and variant: decode tok/s, split / whole in time (median of the
rounds' own ratios, with their range), and each variant against the first (median of
the rounds' ratios of split times). The split's tokens must equal the whole run's.
The stacks run plaintext unless ``--secure`` (mutual TLS, ``resplit up``'s default).

Usage:
  python bench/split_ab.py --variant base=/path/to/old/tree --variant new=. \\
      [--variant spin3k=.:GOMP_SPINCOUNT=3000,OMP_WAIT_POLICY=ACTIVE] [--formats fp32,int8]
      [--rounds 8] [--tokens 32] [--blocks 15] [--threads 2] [--secure]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from _sizing import HIDDEN, segment_run
from _stack import deploy, fixed_placement
from pipeline_overhead import split_run, three_segments
from rich.console import Console
from rich.table import Table

from resplit.launcher import stack as stack_mod
from resplit.models import Checkpoint, load_segment
from resplit.models.tiny import build_tiny
from resplit.sdk import Client

PROMPT = [5 + (i * 7) % 300 for i in range(12)]


@dataclass
class Variant:
    """A named worker configuration: the tree its code comes from, and its environment."""

    name: str
    tree: Path
    env: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``NAME=TREE[:KEY=VALUE,KEY=VALUE]``."""
        name, _, rest = text.partition("=")
        tree, _, pairs = rest.partition(":")
        if not name or not tree:
            raise argparse.ArgumentTypeError(f"--variant {text!r}: expected NAME=TREE[:KEY=VALUE,...]")
        # A comma starts the next pair only before KEY=: a value may hold commas itself
        # (GRPC_EXPERIMENTS=-a,-b).
        env = dict(pair.split("=", 1) for pair in re.split(r",(?=[A-Za-z_][A-Za-z0-9_]*=)", pairs) if pair)
        return cls(name, Path(tree).resolve(), env)


@contextlib.contextmanager
def started_from(variant: Variant) -> Iterator[None]:
    """This process's directory and environment as ``variant``'s stack inherits them."""
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    os.chdir(variant.tree)
    os.environ["PYTHONPATH"] = str(variant.tree)
    os.environ.update(variant.env)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", type=Variant.parse, action="append", required=True)
    parser.add_argument("--formats", default="fp32,int8")
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=32, help="decode steps timed per run")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="the whole model's intra-op threads")
    parser.add_argument("--secure", action="store_true", help="mutual TLS on every hop")
    args = parser.parse_args()
    names = [v.name for v in args.variant]
    if len(set(names)) != len(names):
        parser.error(f"variant names must differ: {names}")
    torch.set_num_threads(args.threads)
    formats = [f for f in args.formats.split(",") if f]
    console = Console(width=200)
    work = Path(tempfile.mkdtemp(prefix="resplit-split-ab-"))
    model_dir = build_tiny("llama", work / "llama", num_hidden_layers=args.blocks, **HIDDEN)
    engines = {
        f: load_segment(Checkpoint(model_dir), 0, args.blocks + 2, torch.device("cpu"), weights=f)
        for f in formats
    }
    whole: dict[str, list[float]] = {f: [] for f in formats}  # seconds per token, per round
    split: dict[tuple[str, str], list[float]] = {(v, f): [] for v in names for f in formats}
    stacks: list[Path] = []
    try:
        clients = {}
        with contextlib.ExitStack() as exits:
            for variant in args.variant:
                state = work / f"stack-{variant.name}"
                with console.status(f"starting {variant.name}'s stack"), started_from(variant):
                    stack = stack_mod.up(
                        state, workers=3, trusted=3, secure=args.secure, extra_args=fixed_placement()
                    )
                stacks.append(state)
                stack.use()
                address = stack.by_name("orchestrator").address
                for f in formats:
                    deploy(address, f"w-{f}", model_dir, three_segments(args.blocks), weights=f)
                client = exits.enter_context(Client(address))
                clients[variant.name] = (client, {f: client.route(f"w-{f}") for f in formats}, stack)
            for f in formats:  # warm-up
                segment_run(engines[f], PROMPT, 4)
                for client, routes, stack in clients.values():
                    stack.use()
                    split_run(client, routes[f], PROMPT, 4)
            for r in range(args.rounds):
                console.log(f"round {r + 1}/{args.rounds}")
                order = names[r % len(names) :] + names[: r % len(names)]
                for f in formats:
                    alone = segment_run(engines[f], PROMPT, args.tokens + 1)
                    whole[f].append(statistics.median(alone[1]))
                    for name in order:
                        client, routes, stack = clients[name]
                        stack.use()
                        through = split_run(client, routes[f], PROMPT, args.tokens + 1)
                        if through[2] != alone[2]:
                            raise SystemExit(f"{name} {f}: split generated {through[2]}, whole {alone[2]}")
                        split[name, f].append(statistics.median(through[1]))
    finally:
        for state in stacks:
            stack_mod.down(state)
    transport = "mutual TLS" if args.secure else "plaintext"
    table = Table(
        title=f"split x3 vs whole, {args.blocks}-block Llama (hidden 1024), {args.rounds} rounds x "
        f"{args.tokens} tokens, whole with {args.threads} threads, {transport}"
    )
    columns = ("format", "variant", "whole tok/s", "split tok/s", "split / whole (range)", f"/ {names[0]}")
    for column in columns:
        table.add_column(column, justify="right")
    for f in formats:
        for name in names:
            ratios = [s / w for s, w in zip(split[name, f], whole[f], strict=True)]
            versus = [s / b for s, b in zip(split[name, f], split[names[0], f], strict=True)]
            table.add_row(
                f,
                name,
                f"{1 / statistics.median(whole[f]):.1f}",
                f"{1 / statistics.median(split[name, f]):.1f}",
                f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})",
                f"{statistics.median(versus):.3f} ({min(versus):.3f}-{max(versus):.3f})",
            )
    console.print(table)
    for variant in args.variant:
        console.print(f"{variant.name}: {variant.tree} {variant.env or ''}")


if __name__ == "__main__":
    main()
