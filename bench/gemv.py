"""The native decode kernels against an earlier revision's, in the same run (issue 30).

Two parts, both old against new in alternation, so a shared machine's drift hits both:

* per projection: microseconds and GB/s (weights and scales read per call) of each
  format's kernel for the model's matrix shapes (q/k/v/o 1024x1024, gate/up 2816x1024,
  down 1024x2816, the tiny vocabulary's head), at one row (a decode step) and four (a
  batch), the best of several passes. Each shape is cycled through enough copies to
  exceed the L3 cache (``--working-set``), so the weights stream from memory as in a
  whole model's decode step; the memory's read bandwidth (``torch.sum`` over 512 MB)
  is printed beside them as the bound. ``--working-set 0``: one copy, cache-resident,
  which times the kernels' arithmetic instead.
* whole model: decode tok/s of the benchmark's 15-block Llama (hidden 1024) per format,
  run whole in one process (``segment_run``): by default the old and new libraries
  swapped in under one loaded model every ``--tokens`` steps (the kernels alone, this
  revision's Python for both); with ``--processes``, the old revision's tree (``git
  archive``) and this one alternating as separate processes, with, for every format,
  max |logit error| and greedy agreement against fp32 (``bench/weights.py``'s fixed
  prompt set).

The old library is built from the old revision's ``gemv.c``/``block.c`` with this
revision's flags (``resplit.kernels.native.FLAGS``); both take the same arguments.
Usage:
  python bench/gemv.py [--old REV] [--threads 2] [--working-set MB] [--no-model] [--no-kernels]
                       [--rounds 3] [--tokens 24] [--formats fp32,bf16,int8,int4]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from resplit.kernels import native

ROOT = Path(__file__).resolve().parent.parent
#: The kernels before int4 took int8 block activations (vpdpbusd).
BASELINE = "b5f0eec"
SHAPES = {"q/k/v/o": (1024, 1024), "gate/up": (2816, 1024), "down": (1024, 2816), "head": (320, 1024)}
FORMATS = ("fp32", "bf16", "int8", "int4")
#: Bytes each shape is cycled through: several times the 32 MiB L3 of the development VM.
WORKING_SET = 256 << 20


def old_library(rev: str, work: Path) -> ctypes.CDLL:
    """The kernels of revision ``rev``, built under ``work``."""
    for name in ("gemv.c", "block.c"):
        text = subprocess.run(
            ["git", "show", f"{rev}:resplit/kernels/{name}"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        (work / name).write_bytes(text)
    native._build(work / "old.so", work / "block.c")
    return native.bind(ctypes.CDLL(str(work / "old.so")))


def weights(fmt: str, n: int, k: int) -> list[torch.Tensor]:
    """Random tensors in ``fmt``'s layout (resplit/kernels/gemv.c)."""
    if fmt == "fp32":
        return [torch.randn(n, k)]
    if fmt == "bf16":
        return [torch.randn(n, k).bfloat16()]
    if fmt == "int8":
        return [torch.randint(-127, 128, (n, k), dtype=torch.int8), (torch.rand(n) * 0.01).bfloat16()]
    packed = torch.randint(0, 256, (n, k // 2), dtype=torch.uint8)
    return [packed, *((torch.rand(2, n, k // 32) * 0.01).bfloat16())]


def caller(lib: ctypes.CDLL, fmt: str, x: torch.Tensor, tensors: list[torch.Tensor], y: torch.Tensor, n: int):
    """A no-argument call of ``lib``'s ``fmt`` kernel (the pointers taken once)."""
    rows, k = x.shape
    fn = getattr(lib, f"resplit_gemv_{fmt}")
    args = [x.data_ptr(), *(t.data_ptr() for t in tensors), y.data_ptr(), rows, k, n, torch.get_num_threads()]
    return lambda: fn(*args)


def read_bandwidth() -> float:
    """GB/s of ``torch.sum`` over 512 MB of fp32 (best of 10): the memory's read rate."""
    big = torch.ones(128 << 20)
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        big.sum()
        best = min(best, time.perf_counter() - start)
    return big.numel() * 4 / best / 1e9


def kernels(
    old: ctypes.CDLL, new: ctypes.CDLL, rows_list: tuple[int, ...], trials: int, working_set: int
) -> Table:
    """Per shape, format and row count: old and new us per call (the best of ``trials``
    passes over the copies, alternating old and new) and GB/s."""
    where = "streamed from memory" if working_set else "cache-resident (one copy)"
    table = Table(
        title=f"native kernels, weights {where}, {torch.get_num_threads()} threads, best of {trials}"
    )
    for column in ("shape", "format", "rows", "old us", "new us", "old GB/s", "new GB/s", "new / old speed"):
        table.add_column(column, justify="right")
    for label, (n, k) in SHAPES.items():
        for fmt in FORMATS:
            one = weights(fmt, n, k)
            size = sum(t.numel() * t.element_size() for t in one)
            copies = [one] + [weights(fmt, n, k) for _ in range(max(1, working_set // size) - 1)]
            for rows in rows_list:
                x, y = torch.randn(rows, k), torch.empty(rows, n)
                calls = {
                    name: [caller(lib, fmt, x, c, y, n) for c in copies]
                    for name, lib in (("old", old), ("new", new))
                }
                times = {"old": [], "new": []}
                for name in calls:  # warm-up: page in every copy
                    for call in calls[name]:
                        call()
                for _ in range(trials):
                    for name, pass_calls in calls.items():
                        start = time.perf_counter()
                        for call in pass_calls:
                            if call() != 0:
                                raise SystemExit(f"{name} {fmt} kernel refused {n}x{k}")
                        times[name].append((time.perf_counter() - start) / len(pass_calls))
                # the best pass: on a shared machine the others' load only ever adds time
                o, w = min(times["old"]), min(times["new"])
                table.add_row(
                    f"{label} {n}x{k}",
                    fmt,
                    str(rows),
                    f"{o * 1e6:.1f}",
                    f"{w * 1e6:.1f}",
                    f"{size / o / 1e9:.1f}",
                    f"{size / w / 1e9:.1f}",
                    f"{o / w:.2f}",
                )
    return table


def decode_worker(model_dir: str, formats: list[str], tokens: int, accuracy: bool) -> None:
    """In a process whose ``resplit`` is one revision's: median ms per decode step per format
    (and the accuracy against fp32), printed as one JSON line."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _sizing import segment_run
    from weights import PROMPTS
    from weights import accuracy as accuracy_of

    from resplit.models import Checkpoint, load_segment

    config = json.loads((Path(model_dir) / "config.json").read_text())
    count = config["num_hidden_layers"] + 2
    engines = {
        f: load_segment(Checkpoint(model_dir), 0, count, torch.device("cpu"), weights=f)
        for f in dict.fromkeys(["fp32", *formats] if accuracy else formats)
    }
    result: dict = {"ms": {}, "accuracy": {}}
    for f in formats:
        segment_run(engines[f], PROMPTS[0], 4)  # warm-up
        result["ms"][f] = statistics.median(segment_run(engines[f], PROMPTS[0], tokens)[1]) * 1e3
    if accuracy:
        result["accuracy"] = accuracy_of(engines, 12)
    print("RESULT " + json.dumps(result), flush=True)


def whole_model(
    old_rev: str, work: Path, formats: list[str], rounds: int, tokens: int, threads: int
) -> Table:
    """Decode ms per token per format, old tree and this one alternating as processes."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _sizing import HIDDEN

    from resplit.models.tiny import build_tiny

    model_dir = build_tiny("llama", work / "llama", num_hidden_layers=15, **HIDDEN)
    old_tree = work / "old-tree"
    old_tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", old_rev, "resplit"], cwd=ROOT, check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive.stdout, check=True)
    trees = {"old": old_tree, "new": ROOT}
    ms: dict[tuple[str, str], list[float]] = {(t, f): [] for t in trees for f in formats}
    errors = {}
    for r in range(rounds):
        for tree, path in trees.items():
            env = {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": str(threads)}
            argv = [
                sys.executable,
                __file__,
                "--decode-worker",
                str(model_dir),
                "--formats",
                ",".join(formats),
            ]
            argv += ["--tokens", str(tokens), "--threads", str(threads)] + (["--accuracy"] if r == 0 else [])
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not lines:
                raise SystemExit(f"{tree} decode worker failed: {done.stderr[-2000:]}")
            result = json.loads(lines[-1][len("RESULT ") :])
            for f, value in result["ms"].items():
                ms[tree, f].append(value)
            if result["accuracy"]:
                errors[tree] = result["accuracy"]
            print(
                f"round {r + 1}/{rounds} {tree}: "
                + ", ".join(f"{f} {v:.2f} ms" for f, v in result["ms"].items())
            )
    table = Table(
        title=f"15-block Llama (hidden 1024) whole, decode, {threads} threads, median of {rounds} rounds"
    )
    for column in (
        "format",
        "old tok/s",
        "new tok/s",
        "new / old",
        "old |logit err|, greedy",
        "new |logit err|, greedy",
    ):
        table.add_column(column, justify="right")
    for f in formats:
        old, new = statistics.median(ms["old", f]), statistics.median(ms["new", f])
        cells = [
            f"{errors[t][f][0]:.4f}, {errors[t][f][1] * 100:.1f} %" if t in errors else "" for t in trees
        ]
        table.add_row(f, f"{1e3 / old:.1f}", f"{1e3 / new:.1f}", f"{old / new:.2f}", *cells)
    return table


def swapped(
    old: ctypes.CDLL, new: ctypes.CDLL, work: Path, formats: list[str], rounds: int, tokens: int
) -> Table:
    """Decode ms per token per format in this process, the old and new libraries swapped
    in under the same loaded model every ``tokens`` steps (their entry points take the
    same arguments): the kernels' difference alone, at a fine alternation that a
    shared machine's drift hits alike. This revision's Python runs both."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _sizing import HIDDEN, segment_run
    from weights import PROMPTS

    from resplit.models import Checkpoint, load_segment
    from resplit.models.tiny import build_tiny

    model_dir = build_tiny("llama", work / "llama-swap", num_hidden_layers=15, **HIDDEN)
    libs, own = {"old": old, "new": new}, native.library
    ms: dict[tuple[str, str], list[float]] = {(name, f): [] for name in libs for f in formats}
    try:
        for f in formats:
            engine = load_segment(Checkpoint(model_dir), 0, 17, torch.device("cpu"), weights=f)
            for lib in libs.values():  # warm-up
                native.library = lambda lib=lib: lib
                segment_run(engine, PROMPTS[0], 4)
            for _ in range(rounds):
                for name, lib in libs.items():
                    native.library = lambda lib=lib: lib
                    ms[name, f].append(statistics.median(segment_run(engine, PROMPTS[0], tokens)[1]) * 1e3)
            del engine
    finally:
        native.library = own
    table = Table(
        title=f"15-block Llama (hidden 1024) whole, decode, {torch.get_num_threads()} threads, old and new "
        f"kernels swapped every {tokens} tokens in one process, {rounds} rounds"
    )
    for column in ("format", "old tok/s (median)", "new tok/s (median)", "new / old", "old best", "new best"):
        table.add_column(column, justify="right")
    for f in formats:
        o, w = statistics.median(ms["old", f]), statistics.median(ms["new", f])
        bo, bw = min(ms["old", f]), min(ms["new", f])
        table.add_row(
            f, f"{1e3 / o:.1f}", f"{1e3 / w:.1f}", f"{o / w:.2f}", f"{1e3 / bo:.1f}", f"{1e3 / bw:.1f}"
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=BASELINE, help="the revision whose kernels are the reference")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument(
        "--working-set",
        type=int,
        default=WORKING_SET >> 20,
        help="MB each shape cycles through (0: one copy)",
    )
    parser.add_argument("--no-model", action="store_true", help="only the per-projection kernels")
    parser.add_argument(
        "--processes",
        action="store_true",
        help="whole model: the old revision's tree and this one as alternating processes (with accuracy)",
    )
    parser.add_argument("--no-kernels", action="store_true", help="only the whole model")
    parser.add_argument("--decode-worker", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--accuracy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    formats = args.formats.split(",")
    if args.decode_worker:
        decode_worker(args.decode_worker, formats, args.tokens, args.accuracy)
        return
    console = Console(width=200)
    with tempfile.TemporaryDirectory(prefix="resplit-gemv-") as tmp:
        work = Path(tmp)
        new = native.library()
        if new is None:
            raise SystemExit("the native kernels do not build here")
        old = old_library(args.old, work)
        if not args.no_kernels:
            console.print(f"memory read bandwidth (torch.sum, 512 MB fp32): {read_bandwidth():.1f} GB/s")
            console.print(kernels(old, new, (1, 4), args.trials, args.working_set << 20))
        if not args.no_model and args.processes:
            console.print(whole_model(args.old, work, formats, args.rounds, args.tokens, args.threads))
        elif not args.no_model:
            console.print(swapped(old, new, work, formats, args.rounds, args.tokens))


if __name__ == "__main__":
    main()
