"""What swapping layers of a live deployment costs, and what its live sessions feel of it.

An 8-block Llama (hidden 512) split three ways (S1 [0, 3) and S3 [7, 10) on trusted
worker-0, S2 [3, 7) on worker-1) serves SESSIONS sessions that decode freely (the
first hop's server loop) while one of these plan changes commits under them:

* reference: the same plan again (every segment re-filed under the next epoch, no
  weights read): what any rollout costs here;
* 1 block: unit 4 (in S2) from another checkpoint of the same architecture;
* half the model: units 1-4 (S1's two blocks, one privacy-critical, and S2's first two).

Each swap runs once per session policy: drain (sessions in flight finish on the old
weights) and replay (each is rebuilt on the new ones at its next token by replaying
its history). Measured in one run: the broadcaster's prepare and commit, the whole
SwapLayers call, and the stall of the live sessions: the slowest token of any session
from the moment the change is asked for until one second after it committed, less the
median token of the two seconds before it; and, as the reference, that slowest token
over the slowest token of those two seconds (the same sessions, no change under them).
Sessions that fail: counted (the SDK survives a lost hop, so a failure is a session
that raised). The sessions stop one second after the change committed. Each cell is the
median over ``--rounds`` runs (a fresh deployment each), with the range where it matters.
Usage: python bench/layer_swap.py [--sessions 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from _stack import deploy
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
)

MODEL = {
    "hidden_size": 512,
    "num_hidden_layers": 8,
    "intermediate_size": 1408,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "max_position_embeddings": 4096,
}
SPLIT = [(0, 3, "worker-0"), (3, 7, "worker-1"), (7, 10, "worker-0")]
CASES = [("reference (same plan)", None), ("1 block", (4, 5)), ("half the model", (1, 5))]
POLICIES = {"drain": common_pb2.SESSION_POLICY_DRAIN, "replay": common_pb2.SESSION_POLICY_REPLAY}
PROMPT_TOKENS, NEW_TOKENS, WARM_S, SETTLE_S = 64, 3000, 2.0, 1.0


class Session(threading.Thread):
    """One live session: (arrival time, latency) of every token, and whether it failed."""

    def __init__(self, address: str, name: str, seed: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.address, self.name, self.stop = address, name, stop
        self.prompt = [4 + (seed * 31 + i * 37) % 300 for i in range(PROMPT_TOKENS)]
        self.tokens: list[tuple[float, float]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with Client(self.address) as client:
                route = client.route(self.name)
                for token in client.generate_ids(self.prompt, route, Sampling(max_new_tokens=NEW_TOKENS)):
                    self.tokens.append((time.perf_counter(), token.latency_s))
                    if self.stop.is_set():
                        break  # closes the session
        except BaseException as exc:  # counted as a failed session
            self.error = exc


def _change(orchestrator: str, name: str, units, source: Path, policy: int) -> None:
    with sync_channel(orchestrator) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        if units is None:
            plan = stub.GetPlan(orchestrator_pb2.GetPlanRequest(deployment=name), timeout=30)
            stub.ApplyPlan(
                orchestrator_pb2.ApplyPlanRequest(deployment=name, segments=plan.segments), timeout=600
            )
            return
        request = orchestrator_pb2.SwapLayersRequest(
            deployment=name,
            units=[common_pb2.UnitRange(start=units[0], end=units[1])],
            source_dir=str(source),
            sessions=policy,
            requested_by="bench/layer_swap.py",
        )
        stub.SwapLayers(request, timeout=600)


def _times(broadcaster: str, name: str) -> broadcaster_pb2.RolloutTimes:
    with sync_channel(broadcaster) as channel:
        stub = broadcaster_pb2_grpc.BroadcasterServiceStub(channel)
        return stub.GetRollout(broadcaster_pb2.GetRolloutRequest(deployment=name), timeout=30).times


def run_one(stack, model: Path, other: Path, name: str, units, policy: int, sessions: int) -> dict:
    orchestrator = stack.by_name("orchestrator").address
    deploy(orchestrator, name, model, SPLIT)
    stop = threading.Event()
    live = [Session(orchestrator, name, i, stop) for i in range(sessions)]
    for session in live:
        session.start()
    while not all(s.tokens or s.error for s in live):  # every prompt is in
        time.sleep(0.01)
    time.sleep(WARM_S)
    asked = time.perf_counter()
    _change(orchestrator, name, units, other, policy)
    done = time.perf_counter()
    time.sleep(SETTLE_S)
    stop.set()
    for session in live:
        session.join(600)
    before = [lat for s in live for at, lat in s.tokens[1:] if asked - WARM_S <= at < asked]
    during = [lat for s in live for at, lat in s.tokens if asked <= at <= done + SETTLE_S]
    times = _times(stack.by_name("broadcaster").address, name)
    steady = statistics.median(before) * 1e3
    stall = max(during) * 1e3 - steady
    return {
        "reference": max(during) / max(before),
        "prepare_ms": times.prepare_ms,
        "commit_ms": times.commit_ms,
        "call_ms": (done - asked) * 1e3,
        "decode_ms": steady,
        "stall_ms": stall,
        "live": sum(1 for s in live if any(at >= asked for at, _ in s.tokens)),
        "failed": sum(1 for s in live if s.error is not None),
    }


def spread(values: list[float]) -> str:
    """A table cell: the median over rounds, with the range."""
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    console = Console(width=200)
    work = Path(tempfile.mkdtemp(prefix="resplit-bench-"))
    with console.status("building the models"):
        model = build_tiny("llama", work / "model", **MODEL)
        other = build_tiny("llama", work / "other", seed=1, **MODEL)
    with console.status("starting the stack"):
        stack = stack_mod.up(
            work / "stack",
            workers=3,
            trusted=1,
            timeout_s=120,
            extra_args={"orchestrator": ["--no-adaptive"]},
        )
    rows = []
    try:
        for label, units in CASES:
            for policy_name, policy in POLICIES.items():
                if units is None and policy_name == "replay":
                    continue  # nothing changes weights: sessions move their caches as always
                runs = []
                for round_ in range(args.rounds):
                    with console.status(f"{label}, {policy_name}, round {round_ + 1}"):
                        name = f"swap-{len(rows)}-{round_}"
                        runs.append(run_one(stack, model, other, name, units, policy, args.sessions))
                rows.append({"case": label, "policy": policy_name if units else "-", "runs": runs})
    finally:
        stack_mod.down(work / "stack")
    table = Table(
        title=f"Swapping layers under {args.sessions} live sessions (8-block Llama, hidden 512, 3-way split)"
    )
    for column in (
        "change",
        "sessions",
        "prepare ms",
        "commit ms",
        "SwapLayers ms",
        "decode ms/token",
        "stall ms",
        "slowest token vs before",
        "live at swap",
        "failed",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        runs = r["runs"]

        def cell(key: str, runs=runs) -> str:
            return f"{statistics.median(run[key] for run in runs):.1f}"

        table.add_row(
            r["case"],
            r["policy"],
            spread([run["prepare_ms"] for run in runs]),
            cell("commit_ms"),
            cell("call_ms"),
            cell("decode_ms"),
            spread([run["stall_ms"] for run in runs]),
            f"{statistics.median(run['reference'] for run in runs):.1f}x",
            f"{min(run['live'] for run in runs)}",
            str(sum(run["failed"] for run in runs)),
        )
    console.print(table)
    console.print(f"median (range) over {args.rounds} rounds; live at swap: the fewest in any round")
    if any(run["failed"] for r in rows for run in r["runs"]):
        raise SystemExit("a session failed across a swap")


if __name__ == "__main__":
    main()
