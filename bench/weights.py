"""Decode speed and accuracy of each weight format (``--weights``, issue 30).

Builds the benchmark's random Llama (hidden 1024, intermediate 2816, 15 blocks by
default: the 193 M-parameter model of issue 30) and, for fp32, bf16, int8 and int4:

* whole: resplit's segment code runs every unit in this process (torch's default
  threads), one session, greedy: median ms per decode step; and ``--rows``
  sessions stepped together through the batched decode step (``step_rows``);
* split: `resplit up` starts three workers, the model is deployed S1 | S2 | S3 in
  that format, and the SDK streams greedy tokens (the first hop runs the loop);
* accuracy against fp32, over a fixed prompt set: every format is fed the same
  tokens (the prompt, then fp32's greedy continuation) and its logits at each
  step are compared with fp32's: the largest |logit error| and the share of steps
  whose greedy token is fp32's.

Rounds alternate the formats, so a shared machine's drift hits them all alike;
medians over rounds are printed. ``--kernels`` times instead the candidate engines of
one projection, ``--compile`` one block's MLP eager and through torch.compile. Usage:
  python bench/weights.py [--blocks 15] [--tokens 16] [--rounds 5] [--rows 4] [--no-split] [--threads N]
  python bench/weights.py --kernels | --compile [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
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

FORMATS = ("fp32", "bf16", "int8", "int4")
PROMPTS = [[5 + (i * k) % 300 for i in range(12)] for k in (7, 11, 13, 17, 19, 23, 29, 31)]


def forced_logits(segment, prompt: list[int], continuation: list[int]) -> torch.Tensor:
    """Logits [steps, V] after the prompt and after each token of ``continuation``."""
    state, out = segment.new_state(), []
    for ids in [prompt, *([t] for t in continuation)]:
        out.append(segment.step(state, input_ids=torch.tensor([ids])).logits[0])
    return torch.stack(out)


def accuracy(engines: dict, tokens: int) -> dict[str, tuple[float, float]]:
    """format -> (max |logit - fp32 logit|, share of steps whose argmax is fp32's)."""
    reference = {}
    for i, prompt in enumerate(PROMPTS):
        ids = segment_run(engines["fp32"], prompt, tokens)[2]
        reference[i] = (ids[:-1], forced_logits(engines["fp32"], prompt, ids[:-1]))
    result = {}
    for name, engine in engines.items():
        errors, agree, steps = [], 0, 0
        for i, prompt in enumerate(PROMPTS):
            continuation, expected = reference[i]
            got = forced_logits(engine, prompt, continuation)
            errors.append((got - expected).abs().max().item())
            agree += int((got.argmax(-1) == expected.argmax(-1)).sum())
            steps += expected.shape[0]
        result[name] = (max(errors), agree / steps)
    return result


def rows_run(segment, rows: int, tokens: int) -> list[float]:
    """Seconds per batched decode step of ``rows`` sessions (``step_rows``)."""
    states = [segment.new_state() for _ in range(rows)]
    for state, prompt in zip(states, PROMPTS, strict=False):
        segment.step(state, input_ids=torch.tensor([prompt]))
    ids = torch.tensor([[5 + i] for i in range(rows)])
    steps = []
    for _ in range(tokens):
        start = time.perf_counter()
        out = segment.step_rows(states, input_ids=ids)
        ids = out.logits.argmax(-1, keepdim=True)
        steps.append(time.perf_counter() - start)
    return steps


def kernels(rows_list=(1, 4), trials: int = 15, calls: int = 50) -> Table:
    """Microseconds per call of each candidate engine for one 1024 x 2816 projection (the
    model's gate/up shape), best of ``trials``: the measurement ``resplit.models.quant``
    picked its kernels by. The best of many trials, so a busy shared machine costs less."""
    from torch.nn import functional as F

    from resplit.models.quant import QuantLinear

    linear = torch.nn.Linear(1024, 2816, bias=False)
    w = linear.weight.detach()
    scale = w.abs().amax(1) / 127
    q8 = torch.round(w / scale[:, None]).to(torch.int8)
    i8, i4 = QuantLinear(linear, "int8"), QuantLinear(linear, "int4")
    table = Table(
        title=f"one 1024 x 2816 projection, us per call (best of {trials}), {torch.get_num_threads()} threads"
    )
    table.add_column("engine")
    for rows in rows_list:
        table.add_column(f"{rows} row(s)", justify="right")
    wb, sb = w.bfloat16(), scale.bfloat16()
    candidates = {
        "fp32 F.linear (fp32 weights)": lambda x: F.linear(x, w),
        "bf16 F.linear (bf16 weights, input cast)": lambda x: F.linear(x.bfloat16(), wb).float(),
        "int8 _weight_int8pack_mm, fp32 input": lambda x: torch.ops.aten._weight_int8pack_mm(x, q8, scale),
        "int8 _weight_int8pack_mm, bf16 input (chosen)": i8,
        "int4 _weight_int4pack_mm_for_cpu, fp32 input": lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, i4.qweight, 32, i4.qscales.float()
        ),
        "int4 _weight_int4pack_mm_for_cpu, bf16 input (chosen)": i4,
        "int8 dequantize to bf16, then F.linear": lambda x: F.linear(
            x.bfloat16(), q8.bfloat16() * sb[:, None]
        ),
    }
    for name, run in candidates.items():
        cells = []
        for rows in rows_list:
            x = torch.randn(rows, 1024)
            best = float("inf")
            with torch.inference_mode():
                for _ in range(trials):
                    start = time.perf_counter()
                    for _ in range(calls):
                        run(x)
                    best = min(best, (time.perf_counter() - start) / calls)
            cells.append(f"{best * 1e6:.0f}")
        table.add_row(name, *cells)
    return table


def _best_us(run, x, trials: int = 10, calls: int = 30) -> float:
    with torch.inference_mode():
        for _ in range(5):
            run(x)
        best = float("inf")
        for _ in range(trials):
            start = time.perf_counter()
            for _ in range(calls):
                run(x)
            best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def compiled() -> Table:
    """One block's MLP (RMSNorm, gate, up, SiLU, down, residual) at one row, eager and
    through ``torch.compile`` (inductor), per format: what compiling the decode step
    could gain, and what it costs at load."""
    from torch.nn import functional as F

    from resplit.models.quant import QuantLinear

    table = Table(title=f"one block's MLP at 1 row, us (best of 10), {torch.get_num_threads()} threads")
    for column in ("weights", "eager", "torch.compile", "compile s", "within 1e-4"):
        table.add_column(column, justify="right")
    norm = torch.ones(1024)
    for name in FORMATS:
        layers = [torch.nn.Linear(1024, 2816, bias=False) for _ in range(2)]
        layers.append(torch.nn.Linear(2816, 1024, bias=False))
        gate, up, down = layers if name == "fp32" else (QuantLinear(m, name) for m in layers)

        def mlp(h, gate=gate, up=up, down=down):
            x = norm * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6))
            return h + down(F.silu(gate(x)) * up(x))

        x = torch.randn(1, 1, 1024)
        start = time.perf_counter()
        fast = torch.compile(mlp, dynamic=False)
        with torch.inference_mode():
            same = torch.allclose(fast(x), mlp(x), atol=1e-4, rtol=0)
        seconds = time.perf_counter() - start
        table.add_row(
            name, f"{_best_us(mlp, x):.0f}", f"{_best_us(fast, x):.0f}", f"{seconds:.1f}", str(same)
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--no-split", action="store_true", help="in-process runs only (no stack)")
    parser.add_argument(
        "--kernels", action="store_true", help="only time the candidate kernels of one projection"
    )
    parser.add_argument(
        "--compile", action="store_true", help="only time one block's MLP eager and with torch.compile"
    )
    parser.add_argument("--threads", type=int, help="intra-op threads of this process (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(width=200)
    if args.kernels or args.compile:
        console.print(kernels() if args.kernels else compiled())
        return
    work = Path(tempfile.mkdtemp(prefix="resplit-weights-"))
    model_dir = build_tiny("llama", work / "llama", num_hidden_layers=args.blocks, **HIDDEN)
    units = args.blocks + 2
    engines = {
        f: load_segment(Checkpoint(model_dir), 0, units, torch.device("cpu"), weights=f) for f in FORMATS
    }
    with console.status("accuracy against fp32"):
        errors = accuracy(engines, args.tokens)
    modes = ["whole", f"whole x{args.rows}"] + ([] if args.no_split else ["split"])
    times: dict[tuple[str, str], list[float]] = {(f, m): [] for f in FORMATS for m in modes}
    stack = None
    try:
        if not args.no_split:
            with console.status("starting the stack and deploying every format"):
                stack = stack_mod.up(work / "stack", workers=3, trusted=3, extra_args=fixed_placement())
                address = stack.by_name("orchestrator").address
                for f in FORMATS:
                    deploy(address, f"w-{f}", model_dir, three_segments(args.blocks), weights=f)
        with Client(stack.by_name("orchestrator").address) if stack else _Nothing() as client:
            routes = {f: client.route(f"w-{f}") for f in FORMATS} if stack else {}
            prompt = PROMPTS[0]
            for f in FORMATS:  # warm-up
                segment_run(engines[f], prompt, 4)
                if stack:
                    split_run(client, routes[f], prompt, 4)
            for r in range(args.rounds):
                console.log(f"round {r + 1}/{args.rounds}")
                for f in FORMATS:
                    whole = segment_run(engines[f], prompt, args.tokens)
                    times[f, "whole"].append(statistics.median(whole[1]) * 1e3)
                    batched = rows_run(engines[f], args.rows, args.tokens)
                    times[f, f"whole x{args.rows}"].append(statistics.median(batched) * 1e3)
                    if stack:
                        split = split_run(client, routes[f], prompt, args.tokens)
                        if split[2] != whole[2]:
                            raise SystemExit(f"{f}: split generated {split[2]}, whole {whole[2]}")
                        times[f, "split"].append(statistics.median(split[1]) * 1e3)
    finally:
        if stack:
            stack_mod.down(work / "stack")
    table = Table(
        title=f"weight formats, {args.blocks}-block Llama (hidden 1024), {torch.get_num_threads()} threads"
    )
    for column in (
        "weights",
        "param MB",
        *(f"{m} ms/token" for m in modes),
        "split / whole",
        "max |logit err| vs fp32",
        "greedy agreement",
    ):
        table.add_column(column, justify="right")
    for f in FORMATS:
        med = {m: statistics.median(times[f, m]) for m in modes}
        ratio = f"{med['split'] / med['whole']:.3f}" if "split" in med else ""
        cells = [f"{med['whole']:.2f}", f"{med[modes[1]]:.2f} ({med[modes[1]] / args.rows:.2f}/row)"]
        cells += [f"{med['split']:.2f}"] if "split" in med else []
        table.add_row(
            f,
            f"{engines[f].param_bytes() / 1e6:.0f}",
            *cells,
            ratio,
            f"{errors[f][0]:.4f}",
            f"{errors[f][1] * 100:.1f} %",
        )
    console.print(table)


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
