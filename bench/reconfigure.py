"""What a reconfiguration costs, and what a live session feels of it.

For contexts of 128, 1024 and 4096 tokens, a session generates through a
3-segment split (S1 and S3 on trusted worker-0, S2 on worker-1) while the
middle segment is moved to worker-2. Measured, in one run:

* solve: the splitter's PLACEMENT_ONLY solve for this model over the three
  nodes (the step between a trigger and a rollout);
* prepare and commit: the broadcaster's two phases (worker-2 loads S2 while
  the old epoch serves; the epoch flips);
* stall: how much longer the first token after the switch takes than the
  median token before it; it holds the route lookup, the session's move and
  one decode step. Two ways of moving:
  - kv: the new hops pull the session's KV cache from the old ones;
  - replay: the new hops rebuild it by prefilling the token history.

Every run's tokens are checked against the same session with no
reconfiguration. Prints a table and writes results/reconfigure.png.
Usage: python bench/reconfigure.py [--contexts 128 1024 4096] [--out results]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

from resplit.launcher import stack as stack_mod
from resplit.models.tiny import build_tiny
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client, Sampling
from resplit.v1 import (
    broadcaster_pb2,
    broadcaster_pb2_grpc,
    common_pb2,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    splitter_pb2,
    splitter_pb2_grpc,
)

MODEL = {
    "hidden_size": 512,
    "num_hidden_layers": 8,
    "intermediate_size": 1408,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
}
UNITS = MODEL["num_hidden_layers"] + 2
BEFORE = [(0, 3, "worker-0"), (3, 7, "worker-1"), (7, UNITS, "worker-0")]
AFTER = [(0, 3, "worker-0"), (3, 7, "worker-2"), (7, UNITS, "worker-0")]
NEW_TOKENS, SWITCH_AT = 16, 6


def _segments(triples) -> list[common_pb2.Segment]:
    return [common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=n) for a, b, n in triples]


def _deploy(address: str, name: str, model_dir: Path) -> None:
    request = orchestrator_pb2.DeployRequest(
        deployment=common_pb2.Deployment(name=name, model_dir=str(model_dir)), segments=_segments(BEFORE)
    )
    with sync_channel(address) as channel:
        orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Deploy(request, timeout=600)


def _solve_ms(address: str, model_dir: Path, name: str) -> float:
    """One PLACEMENT_ONLY solve of this model over the three workers, as the loop would ask."""
    with sync_channel(address) as channel:
        stub = splitter_pb2_grpc.SplitterServiceStub(channel)
        profile = stub.ProfileModel(splitter_pb2.ProfileModelRequest(model_dir=str(model_dir)), timeout=60)
        nodes = [
            splitter_pb2.NodeProfile(
                node_id=f"worker-{i}", trusted=i == 0, device_profile="CPU-8C-AVX2", memory_bytes=8 << 30
            )
            for i in range(3)
        ]
        links = [
            common_pb2.Link(src=f"worker-{a}", dst=f"worker-{b}", bandwidth_mbps=1000, rtt_ms=0.2)
            for a in range(3)
            for b in range(3)
            if a != b
        ]
        problem = splitter_pb2.Problem(
            model=profile,
            nodes=nodes,
            links=links,
            policy=common_pb2.Policy(alpha=1.0, thresholds=common_pb2.Thresholds(l_max_ms=150)),
            workload=splitter_pb2.Workload(prompt_tokens=128, generate_tokens=32),
            current=common_pb2.Plan(deployment=name, epoch=1, segments=_segments(BEFORE)),
        )
        start = time.perf_counter()
        stub.Solve(splitter_pb2.SolveRequest(problem=problem, mode=splitter_pb2.SOLVE_MODE_PLACEMENT_ONLY))
        return (time.perf_counter() - start) * 1e3


def _rollout(address: str, name: str) -> broadcaster_pb2.RolloutResponse:
    plan = common_pb2.Plan(deployment=name, segments=_segments(AFTER))
    with sync_channel(address) as channel:
        stub = broadcaster_pb2_grpc.BroadcasterServiceStub(channel)
        return stub.Rollout(broadcaster_pb2.RolloutRequest(plan=plan, drain_deadline_s=5), timeout=600)


def run_one(stack, model_dir: Path, context: int, mode: str, reference: list[int]) -> dict:
    name = f"r{context}-{mode}"
    orchestrator = stack.by_name("orchestrator").address
    _deploy(orchestrator, name, model_dir)
    prompt = [4 + (i * 37) % 300 for i in range(context)]
    row: dict = {"context": context, "mode": mode}
    tokens = []
    # Client-stepped: the session waits at token SWITCH_AT while the plan changes under it
    # (with the server loop the first hop would run on to the end meanwhile).
    with Client(orchestrator, move_cache=mode == "kv", server_loop=False) as client:
        route = client.route(name)
        for token in client.generate_ids(prompt, route, Sampling(max_new_tokens=NEW_TOKENS)):
            tokens.append(token)
            if len(tokens) == SWITCH_AT:
                row["solve_ms"] = _solve_ms(stack.by_name("splitter").address, model_dir, name)
                answer = _rollout(stack.by_name("broadcaster").address, name)
                row["prepare_ms"], row["commit_ms"] = answer.times.prepare_ms, answer.times.commit_ms
    if [t.token_id for t in tokens] != reference:
        raise SystemExit(f"{name}: the tokens changed across the reconfiguration")
    moved = next(i for i, t in enumerate(tokens) if t.epoch != tokens[0].epoch)
    steady = statistics.median(t.latency_s for t in tokens[1:moved] + tokens[moved + 1 :]) * 1e3
    row["decode_ms"] = steady
    row["stall_ms"] = tokens[moved].latency_s * 1e3 - steady
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[128, 1024, 4096])
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    console = Console(width=150)
    work = Path(tempfile.mkdtemp(prefix="resplit-bench-"))
    with console.status("building the model"):
        model_dir = build_tiny("llama", work / "model", **MODEL)
    max_tokens = str(max(args.contexts) + NEW_TOKENS + 8)
    with console.status("starting the stack"):
        stack = stack_mod.up(
            work / "stack",
            workers=3,
            trusted=1,
            timeout_s=120,
            extra_args={"orchestrator": ["--no-adaptive"], "worker": ["--max-tokens", max_tokens]},
        )
    rows = []
    try:
        orchestrator = stack.by_name("orchestrator").address
        for context in args.contexts:
            _deploy(orchestrator, f"ref{context}", model_dir)
            prompt = [4 + (i * 37) % 300 for i in range(context)]
            with Client(orchestrator) as client:
                route = client.route(f"ref{context}")
                reference = [t.token_id for t in client.generate_ids(prompt, route, Sampling(NEW_TOKENS))]
            for mode in ("kv", "replay"):
                with console.status(f"context {context}, {mode}"):
                    rows.append(run_one(stack, model_dir, context, mode, reference))
    finally:
        stack_mod.down(work / "stack")
    kv_bytes = 2 * (BEFORE[1][1] - BEFORE[1][0]) * MODEL["hidden_size"] * 4  # moved blocks, fp32 K and V
    table = Table(title="Moving S2 to another worker under a live session (8-block Llama, hidden 512, CPU)")
    for column in (
        "context",
        "move",
        "solve ms",
        "prepare ms",
        "commit ms",
        "trigger->commit ms",
        "KV moved MB",
        "decode ms/token",
        "stall ms",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["context"]),
            r["mode"],
            f"{r['solve_ms']:.1f}",
            f"{r['prepare_ms']:.1f}",
            f"{r['commit_ms']:.1f}",
            f"{r['solve_ms'] + r['prepare_ms'] + r['commit_ms']:.1f}",
            f"{kv_bytes * (r['context'] + SWITCH_AT - 1) / 1e6:.1f}" if r["mode"] == "kv" else "0",
            f"{r['decode_ms']:.1f}",
            f"{r['stall_ms']:.1f}",
        )
    console.print(table)
    console.print("tokens identical to an unreconfigured session in every run")
    args.out.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(6, 4))
    for mode in ("kv", "replay"):
        points = [(r["context"], r["stall_ms"]) for r in rows if r["mode"] == mode]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=mode)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("context tokens when the session moves")
    axes.set_ylabel("stall of the switching token, ms")
    axes.set_title("Live session move: KV migration vs replay")
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.out / "reconfigure.png", dpi=120)
    console.print(f"plot: {args.out / 'reconfigure.png'}")


if __name__ == "__main__":
    main()
