"""resplit against llama.cpp on this CPU: the same Llama, decode tok/s per weight format.

Issue 30's comparison. The benchmark's random Llama (hidden 1024, intermediate 2816,
``--blocks`` blocks, 193 M parameters at 15) is written once as safetensors and, for
llama.cpp, as a GGUF of the same tensors (``bench/_gguf.py``), quantized by
``llama-quantize`` to Q8_0 and Q4_0. Then, in rounds that alternate the engines so a
shared machine's drift hits them all alike:

* llama.cpp: ``llama-bench -p 0 -n TOKENS -t THREADS`` (text generation, one sequence),
  locally and over three ``ggml-rpc-server`` processes on this host (``-rpc``, every
  layer offloaded: llama.cpp's own split inference), when its build has RPC;
* resplit whole: resplit's segment code runs every unit in this process (``--threads``);
* resplit split: ``resplit up`` with three workers (their default settings, or
  ``--worker-arg``), the model deployed S1 | S2 | S3 in the format, greedy tokens
  streamed by the SDK and checked equal to the whole run's.

Pairs: fp32 and bf16 against llama.cpp F32, int8 against Q8_0, int4 against Q4_0
(llama.cpp's own recipes: Q4_0 keeps the output matrix at Q6_K, resplit keeps the
embedding in bf16 and quantizes the head). Then each format gets a stack of its own and
every worker's resident memory is read against the bytes of the segment it holds
(issue 30: RSS <= 1.2 x quantized segment bytes + 300 MB).

llama.cpp is not a dependency: point ``--llama-cpp`` at a source tree built with its
CMake (``cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_RPC=ON && cmake --build build
--target llama-bench llama-quantize ggml-rpc-server``); docs/BENCHMARKS.md says which
commit was measured. Without ``--llama-cpp`` only resplit's rows run (whole and split per
format, and split / whole as the median of the rounds' own ratios, with their range): the
split's per-token cost on a machine without a llama.cpp build.

Writes a bar chart of the medians (``--plot``, default results/vs_llamacpp.png).

``--memory-only`` skips llama.cpp and the timed rounds: the per-format RSS stacks alone
(each worker's idle RSS, SERVING before the deploy, and its RSS after a short generation).

Usage:
  python bench/vs_llamacpp.py [--llama-cpp ~/llama.cpp] [--blocks 15] [--tokens 32] [--rounds 3]
      [--threads 2] [--worker-arg=--decode-threads=2 ...] [--formats fp32,int8,int4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from _gguf import write_gguf
from _peers_plot import plot
from _sizing import HIDDEN, segment_run
from _stack import deploy, fixed_placement
from pipeline_overhead import split_run, three_segments
from rich.console import Console
from rich.table import Table

from resplit.launcher import stack as stack_mod
from resplit.models import Checkpoint, load_segment
from resplit.models.tiny import build_tiny
from resplit.sdk import Client

#: resplit's weight format -> (llama.cpp's type it is compared with, issue 30's target ratio).
PAIRS = {"fp32": ("F32", 0.9), "bf16": ("F32", 0.9), "int8": ("Q8_0", 0.8), "int4": ("Q4_0", 0.7)}
PROMPT = [5 + (i * 7) % 300 for i in range(12)]
#: Issue 30: resplit split / the same engine whole, in time per token.
SPLIT_TARGET = 1.06
MB = 1 << 20


def gguf_models(model_dir: Path, work: Path, llama_cpp: Path, build: Path) -> dict[str, Path]:
    """llama.cpp type -> GGUF file of the benchmark model."""
    f32 = write_gguf(model_dir, work / "model-F32.gguf", llama_cpp)
    files = {"F32": f32}
    for kind in ("Q8_0", "Q4_0"):
        out = work / f"model-{kind}.gguf"
        subprocess.run(
            [str(build / "bin" / "llama-quantize"), str(f32), str(out), kind],
            check=True,
            capture_output=True,
        )
        files[kind] = out
    return files


def llama_bench(build: Path, model: Path, tokens: int, threads: int, rpc: list[str] | None = None) -> float:
    """llama.cpp's text-generation tok/s for ``model`` (one llama-bench repetition), over
    the ``rpc`` servers (host:port) when given."""
    argv = [str(build / "bin" / "llama-bench"), "-m", str(model), "-p", "0", "-n", str(tokens)]
    argv += ["-t", str(threads), "-r", "1", "-o", "json"]
    argv += ["-rpc", ",".join(rpc), "-ngl", "99"] if rpc else []
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return float(json.loads(done.stdout)[0]["avg_ts"])


@contextlib.contextmanager
def rpc_servers(build: Path, count: int, threads: int) -> Iterator[list[str]]:
    """``count`` ggml-rpc-server processes on loopback (``threads`` each); their endpoints."""
    binary = build / "bin" / "ggml-rpc-server"
    if not binary.exists():
        yield []
        return
    ports = [free_port() for _ in range(count)]
    servers = [
        subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port), "-t", str(threads)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        for port in ports:  # listening before llama-bench connects
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ggml-rpc-server on port {port} did not start")
                time.sleep(0.1)
        yield [f"127.0.0.1:{port}" for port in ports]
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)


@contextlib.contextmanager
def worker_env(pairs: list[str]) -> Iterator[None]:
    """``pairs`` (KEY=VALUE) in the environment while the stack starts: its processes
    inherit them, this process's own runs and llama.cpp's do not."""
    saved = dict(os.environ)
    os.environ.update(pair.split("=", 1) for pair in pairs)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def worker_memory(model_dir: Path, work: Path, blocks: int, weights: str, args: list[str]) -> list[tuple]:
    """(worker, segment MiB, idle RSS MiB, RSS MiB, bound MiB) of each worker of a stack holding
    one format; idle: the same worker SERVING before the deploy (Python, torch, transformers'
    configuration and model code, grpc: what every worker holds whatever it serves)."""
    state = work / f"rss-{weights}"
    segments = three_segments(blocks)
    sizes = {
        node: load_segment(Checkpoint(model_dir), a, b, torch.device("cpu"), weights=weights).param_bytes()
        / MB
        for a, b, node in segments
    }
    stack = stack_mod.up(state, workers=3, trusted=3, extra_args=fixed_placement(args))
    try:
        stack.use()
        idle = {node: rss_mb(stack.by_name(node).pid) for node in sizes}
        address = stack.by_name("orchestrator").address
        deploy(address, f"m-{weights}", model_dir, segments, weights=weights)
        with Client(address) as client:
            split_run(client, client.route(f"m-{weights}"), PROMPT, 8)
        rows = []
        for node, size in sizes.items():
            rss = rss_mb(stack.by_name(node).pid)
            rows.append((node, size, idle[node], rss, 1.2 * size + 300))
        return rows
    finally:
        stack_mod.down(state)


def resplit_only(
    console: Console,
    args: argparse.Namespace,
    formats: list[str],
    whole: dict[str, list[float]],
    split: dict[str, list[float]],
    worker_args: str,
) -> None:
    """The table without llama.cpp: each format's whole and split tok/s, and split / whole
    in time as the median of the rounds' own ratios (a round runs both back to back, so a
    shared machine's drift between rounds cancels out), with their range."""
    table = Table(
        title=f"decode tok/s, {args.blocks}-block Llama (hidden 1024), whole with {args.threads} threads, "
        f"median of {args.rounds} rounds; workers: {worker_args}"
    )
    for column in ("resplit", "whole", "split x3", "split / whole (time), median (range)", "target"):
        table.add_column(column, justify="right")
    for f in formats:
        ratios = [w / s for w, s in zip(whole[f], split[f], strict=True)]
        met = "met" if statistics.median(ratios) <= SPLIT_TARGET else "NOT met"
        table.add_row(
            f,
            f"{statistics.median(whole[f]):.1f}",
            f"{statistics.median(split[f]):.1f}",
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})",
            f"<= {SPLIT_TARGET} {met}",
        )
    console.print(table)
    rounds = (
        f"{f} " + ", ".join(f"{w:.1f}/{s:.1f}" for w, s in zip(whole[f], split[f], strict=True))
        for f in formats
    )
    console.print("rounds (whole/split tok/s): " + "; ".join(rounds))


def peers_table(
    console: Console,
    args: argparse.Namespace,
    formats: list[str],
    llama: dict[str, list[float]],
    llama_rpc: dict[str, list[float]],
    whole: dict[str, list[float]],
    split: dict[str, list[float]],
    worker_args: str,
) -> None:
    """The table against llama.cpp, and its bar chart (``--plot``)."""
    kinds = sorted(llama)
    table = Table(
        title=f"decode tok/s, {args.blocks}-block Llama (hidden 1024), {args.threads} threads, "
        f"median of {args.rounds} rounds; workers: {worker_args}"
    )
    for column in (
        "resplit",
        "llama.cpp",
        "llama.cpp tok/s",
        "llama.cpp RPC x3 / local (time)",
        "resplit whole",
        "resplit split",
        "split / llama.cpp",
        "target",
        "split / whole (time)",
    ):
        table.add_column(column, justify="right")
    for f in formats:
        kind, target = PAIRS[f]
        ref, w, s = (statistics.median(v) for v in (llama[kind], whole[f], split[f]))
        met = "met" if s / ref >= target else "NOT met"
        remote = f"{ref / statistics.median(llama_rpc[kind]):.3f}" if llama_rpc[kind] else "no RPC build"
        table.add_row(
            f,
            kind,
            f"{ref:.1f}",
            remote,
            f"{w:.1f}",
            f"{s:.1f}",
            f"{s / ref:.2f}",
            f">= {target} {met}",
            f"{w / s:.3f}",
        )
    console.print(table)
    console.print(
        "rounds: "
        + "; ".join(f"llama.cpp {k} {', '.join(f'{v:.1f}' for v in llama[k])}" for k in kinds)
        + "; "
        + "; ".join(f"split {f} {', '.join(f'{v:.1f}' for v in split[f])}" for f in formats)
    )
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    bars = []
    for f in formats:
        kind = PAIRS[f][0]
        values = {"llama.cpp": statistics.median(llama[kind])}
        if llama_rpc[kind]:
            values["llama.cpp RPC x3"] = statistics.median(llama_rpc[kind])
        values["resplit whole"] = statistics.median(whole[f])
        values["resplit split x3"] = statistics.median(split[f])
        bars.append((f"{f} / {kind}", values))
    console.print(f"plot: {plot(args.plot, table.title, bars)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--llama-cpp", type=Path, help="llama.cpp source tree, built (default: resplit's rows only)"
    )
    parser.add_argument("--build", type=Path, help="its CMake build folder (default: <llama-cpp>/build)")
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=32, help="decode steps timed per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp's threads and this process's")
    parser.add_argument("--formats", default="fp32,bf16,int8,int4")
    parser.add_argument(
        "--worker-arg",
        action="append",
        default=[],
        help="a flag for every worker, e.g. --worker-arg=--decode-threads=2",
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the workers only, e.g. OMP_WAIT_POLICY=PASSIVE",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the per-format RSS stacks")
    parser.add_argument(
        "--memory-only", action="store_true", help="only the per-format RSS stacks (no llama.cpp, no timing)"
    )
    parser.add_argument("--rpc-threads", type=int, default=1, help="threads of each ggml-rpc-server")
    parser.add_argument(
        "--plot", type=Path, default=Path("results/vs_llamacpp.png"), help="where the bar chart goes"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    formats = [f for f in args.formats.split(",") if f]
    unknown = sorted(set(formats) - set(PAIRS))
    if unknown:
        raise SystemExit(f"unknown formats {unknown}; choose from {sorted(PAIRS)}")
    if args.memory_only:
        work = Path(tempfile.mkdtemp(prefix="resplit-vs-llamacpp-"))
        model_dir = build_tiny("llama", work / "llama", num_hidden_layers=args.blocks, **HIDDEN)
        Console(width=200).print(memory_table(model_dir, work, args.blocks, formats, args.worker_arg))
        return
    build: Path | None = None
    if args.llama_cpp is not None:
        build = args.build or args.llama_cpp / "build"
        if not (build / "bin" / "llama-bench").exists():
            raise SystemExit(f"{build / 'bin' / 'llama-bench'} not found: build llama.cpp first (see --help)")
    console = Console(width=200)
    work = Path(tempfile.mkdtemp(prefix="resplit-vs-llamacpp-"))
    model_dir = build_tiny("llama", work / "llama", num_hidden_layers=args.blocks, **HIDDEN)
    ggufs: dict[str, Path] = {}
    if build is not None:
        with console.status("writing GGUF files and quantizing them with llama-quantize"):
            ggufs = gguf_models(model_dir, work, args.llama_cpp, build)
    engines = {
        f: load_segment(Checkpoint(model_dir), 0, args.blocks + 2, torch.device("cpu"), weights=f)
        for f in formats
    }
    kinds = sorted({PAIRS[f][0] for f in formats}) if build is not None else []
    llama: dict[str, list[float]] = {k: [] for k in kinds}
    llama_rpc: dict[str, list[float]] = {k: [] for k in kinds}
    whole: dict[str, list[float]] = {f: [] for f in formats}
    split: dict[str, list[float]] = {f: [] for f in formats}
    state = work / "stack"
    with console.status("starting the stack and deploying every format"), worker_env(args.worker_env):
        stack = stack_mod.up(state, workers=3, trusted=3, extra_args=fixed_placement(args.worker_arg))
    try:
        stack.use()
        address = stack.by_name("orchestrator").address
        for f in formats:
            deploy(address, f"w-{f}", model_dir, three_segments(args.blocks), weights=f)
        rpc_cm = rpc_servers(build, 3, args.rpc_threads) if build is not None else contextlib.nullcontext([])
        with Client(address) as client, rpc_cm as rpc:
            routes = {f: client.route(f"w-{f}") for f in formats}
            for f in formats:  # warm-up
                segment_run(engines[f], PROMPT, 4)
                split_run(client, routes[f], PROMPT, 4)
            for k in kinds:
                assert build is not None
                llama_bench(build, ggufs[k], 8, args.threads)
            for r in range(args.rounds):
                console.log(f"round {r + 1}/{args.rounds}")
                for k in kinds:
                    assert build is not None
                    llama[k].append(llama_bench(build, ggufs[k], args.tokens, args.threads))
                    if rpc:
                        llama_rpc[k].append(llama_bench(build, ggufs[k], args.tokens, args.threads, rpc))
                for f in formats:
                    alone = segment_run(engines[f], PROMPT, args.tokens + 1)
                    whole[f].append(1 / statistics.median(alone[1]))
                    through = split_run(client, routes[f], PROMPT, args.tokens + 1)
                    if through[2] != alone[2]:
                        raise SystemExit(f"{f}: the split generated {through[2]}, the whole run {alone[2]}")
                    split[f].append(1 / statistics.median(through[1]))
    finally:
        stack_mod.down(state)

    worker_args = " ".join(args.worker_arg + args.worker_env) or "defaults"
    if build is None:
        resplit_only(console, args, formats, whole, split, worker_args)
    else:
        peers_table(console, args, formats, llama, llama_rpc, whole, split, worker_args)
    if not args.no_memory:
        console.print(memory_table(model_dir, work, args.blocks, formats, args.worker_arg))


def memory_table(
    model_dir: Path, work: Path, blocks: int, formats: list[str], worker_args: list[str]
) -> Table:
    """Every worker's RSS, idle and with its segment, one stack per format (:func:`worker_memory`)."""
    memory = Table(title="worker resident memory, one format deployed (MiB); bound 1.2 x segment + 300")
    for column in ("weights", "worker", "segment", "idle RSS", "RSS", "bound", "within"):
        memory.add_column(column, justify="right")
    for f in formats:
        for node, size, idle, rss, bound in worker_memory(model_dir, work, blocks, f, worker_args):
            cells = (f"{size:.0f}", f"{idle:.0f}", f"{rss:.0f}", f"{bound:.0f}")
            memory.add_row(f, node, *cells, "yes" if rss <= bound else "NO")
        time.sleep(0.5)
    return memory


if __name__ == "__main__":
    main()
