"""`make bench-gpu`: resplit's GPU benchmarks on a CUDA machine, one table with the machine.

Runs, with this interpreter (on an air-gapped GPU host: the host's own CUDA torch with
``make gpu-bundle``'s packages, see tools/gpu_bundle.py), each benchmark that has a CUDA
mode, and writes what they print to ``<out>/BENCHMARKS-gpu.md`` under the GPU, its driver
and the versions, for docs/BENCHMARKS.md. Today that is ``bench/pipeline_overhead.py
--device cuda`` (a split's cost per token against the same compute whole, issue 23's
<= 1.10). On a machine without CUDA it says so and exits with status 2: nothing runs.

Usage: python tools/bench_gpu.py [--out results] [--blocks 12] [--rounds 8] [--timeout-s 900]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_report import ROOT, machine

NO_CUDA = 2


def driver() -> str:
    """The NVIDIA driver's version, by NVML (nvidia-ml-py), or why it is unknown."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception as exc:  # no NVML on this host: the table says so
        return f"unknown ({type(exc).__name__})"


def benchmarks(blocks: int, rounds: int) -> list[list[str]]:
    """Each GPU benchmark's command line (after the interpreter)."""
    return [
        [
            "bench/pipeline_overhead.py", "--device", "cuda", "--blocks", str(blocks),
            "--rounds", str(rounds),
        ],
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--blocks", type=int, default=12, help="pipeline_overhead's model size on the GPU")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--timeout-s", type=float, default=900, help="the most one benchmark may take")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            f"no CUDA device here (torch {torch.__version__}, built for CUDA {torch.version.cuda}): "
            "the GPU benchmarks need one; nothing ran",
            file=sys.stderr,
        )
        raise SystemExit(NO_CUDA)
    lines = ["# resplit on a GPU", "", *machine(), f"- driver {driver()}, CUDA {torch.version.cuda}", ""]
    failed = 0
    for command in benchmarks(args.blocks, args.rounds):
        began = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=args.timeout_s
            )
            status = "ok" if done.returncode == 0 else f"exit {done.returncode}"
            text = done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            status, text = f"stopped after {args.timeout_s:.0f} s", f"{exc.stdout or ''}"
        failed += status != "ok"
        lines += [f"## `{' '.join(command)}`: {status}, {time.monotonic() - began:.0f} s", "", "```text"]
        lines += [text.rstrip(), "```", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    report = args.out / "BENCHMARKS-gpu.md"
    report.write_text("\n".join(lines))
    print(f"wrote {report}" + (f"; {failed} benchmark(s) failed" if failed else ""))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
