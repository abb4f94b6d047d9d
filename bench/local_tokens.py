"""What taking the token from the first hop's own worker saves, on links with a round trip.

The paper's placement: S1 and S3 on worker-0 (trusted), S2 on worker-1. Without
the shortcut, a token sampled by S3 goes back to worker-1 and from there to S1
on worker-0 before the next step starts: two crossings of the link per token on
top of the two the activations make. With it (``--local-tokens``, the default),
worker-0's first hop takes the token as S3 samples it.

The kernel here may lack netem, so the link's round trip comes from TCP proxies
that hold every byte for half the RTT each way (``_delay_proxy.py``): the route's
hops to worker-1 and back to worker-0 go through them, the client reaches
worker-0 directly. Each round decodes with both, on the same stack and route:

* local: the route as the orchestrator gives it (its last hop names worker-0);
* relayed: the same route with the last hop's node id left out, so worker-0's
  first hop does not know the head runs beside it, which is what a worker
  started with ``--no-local-tokens`` does.

Prints ms per token for each and the saving per token against the RTT: the
saving should be about one RTT (the two crossings of the way back) plus the
local work of relaying.
Usage: python bench/local_tokens.py [--rtt-ms 0 5 10 20] [--rounds 8] [--tokens 20]
       [--target-ms 35 | --blocks N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _sizing import model_for
from pipeline_overhead import deploy, paper_placement, split_run, three_segments
from rich.console import Console
from rich.progress import track
from rich.table import Table

from resplit.launcher import stack as stack_mod
from resplit.launcher.processes import free_port
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client
from resplit.v1 import common_pb2, worker_pb2, worker_pb2_grpc

PROXY = Path(__file__).resolve().parent / "_delay_proxy.py"


class Proxies:
    """One proxy process: a delayed way to each of ``targets``; ``address[target]`` is it."""

    def __init__(self, targets: list[str], rtt_ms: float) -> None:
        self.address = {target: f"127.0.0.1:{free_port()}" for target in targets}
        mappings = [f"{a.rsplit(':', 1)[1]}={t}" for t, a in self.address.items()]
        self.process = subprocess.Popen(
            [sys.executable, str(PROXY), str(rtt_ms / 2.0), *mappings], stdout=subprocess.PIPE, text=True
        )
        if self.process.stdout is None or self.process.stdout.readline().strip() != "ready":
            self.close()
            raise SystemExit(f"the delay proxy did not start (exit code {self.process.poll()})")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def ping_ms(address: str, calls: int = 20) -> float:
    """Median gRPC Ping round trip to ``address``: the link the route's hops see."""
    with sync_channel(address) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        stub.Ping(worker_pb2.PingRequest(payload=b"x"), timeout=10)  # connect
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            stub.Ping(worker_pb2.PingRequest(payload=b"x" * 64), timeout=10)
            samples.append((time.perf_counter() - started) * 1e3)
    return statistics.median(samples)


def through(route: common_pb2.Route, proxies: Proxies | None, head_named: bool) -> common_pb2.Route:
    """``route`` with every hop after the first reached through its proxy, and the last
    hop's node id left out unless ``head_named``."""
    changed = common_pb2.Route()
    changed.CopyFrom(route)
    for hop in changed.hops[1:]:
        if proxies is not None:
            hop.address = proxies.address[hop.address]
    if not head_named:
        changed.hops[-1].node_id = ""
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 5.0, 10.0, 20.0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--target-ms", type=float, default=35.0)
    parser.add_argument("--blocks", type=int, help="use this many blocks (>= 3) instead of sizing")
    args = parser.parse_args()
    if any(r < 0 for r in args.rtt_ms):
        parser.error(f"--rtt-ms must be >= 0, got {args.rtt_ms}")
    console = Console(width=160)
    work = Path(tempfile.mkdtemp(prefix="resplit-bench-"))
    prompt = [5 + (i * 7) % 300 for i in range(16)]
    with console.status("sizing the model to this machine"):
        blocks, model_dir, _ = model_for(work, args.blocks, args.target_ms, prompt, "cpu")
    with console.status("starting the stack"):
        stack = stack_mod.up(work / "stack", workers=2, trusted=1, secure=False)
    rows = []
    try:
        address = stack.by_name("orchestrator").address
        segments = [(a, b, n) for a, b, n in paper_placement(three_segments(blocks))]
        segments = [(a, b, "worker-1" if i == 1 else n) for i, (a, b, n) in enumerate(segments)]
        deploy(address, "local-tokens", model_dir, segments)
        with Client(address) as client:
            route = client.route("local-tokens")
            targets = sorted({hop.address for hop in route.hops[1:]})
            for rtt in args.rtt_ms:
                proxies = Proxies(targets, rtt) if rtt > 0 else None
                try:
                    modes = {
                        "local": through(route, proxies, True),
                        "relayed": through(route, proxies, False),
                    }
                    ping = ping_ms(modes["local"].hops[1].address)
                    if ping < rtt:  # the hops would not cross the delayed link: nothing to measure
                        raise SystemExit(f"a Ping through the {rtt:g} ms proxy took {ping:.2f} ms")
                    for mode in modes.values():  # warm-up
                        split_run(client, mode, prompt, 4)
                    per_round = {m: [] for m in modes}
                    for _ in track(
                        range(args.rounds), description=f"RTT {rtt:g} ms", console=console, transient=True
                    ):
                        ids = {}
                        for name, mode in modes.items():
                            _, steps, ids[name] = split_run(client, mode, prompt, args.tokens)
                            per_round[name].append(statistics.median(steps) * 1e3)
                        if ids["local"] != ids["relayed"]:
                            raise SystemExit(f"the two ways generated different tokens: {ids}")
                finally:
                    if proxies is not None:
                        proxies.close()
                local, relayed = (statistics.median(per_round[m]) for m in ("local", "relayed"))
                saved = [r - loc for loc, r in zip(per_round["local"], per_round["relayed"], strict=True)]
                rows.append((rtt, ping, local, relayed, statistics.median(saved), min(saved), max(saved)))
    finally:
        stack_mod.down(work / "stack")
    table = Table(
        title="Token taken on the first hop's worker vs relayed back, paper placement, "
        f"{blocks}-block Llama (fp32, CPU)"
    )
    for column in (
        "link RTT, ms",
        "Ping worker-1, ms",
        "local, ms/token",
        "relayed, ms/token",
        "saved per token, ms (range)",
        "saved / RTT",
    ):
        table.add_column(column, justify="right")
    for rtt, ping, local, relayed, saved, low, high in rows:
        table.add_row(
            f"{rtt:g}",
            f"{ping:.2f}",
            f"{local:.2f}",
            f"{relayed:.2f}",
            f"{saved:.2f} ({low:.2f} to {high:.2f})",
            f"{saved / rtt:.2f}" if rtt > 0 else "",
        )
    console.print(table)
    console.print(
        f"{args.rounds} rounds x {args.tokens} tokens per RTT, both ways in every round on one stack "
        "(S1+S3 on worker-0, S2 on worker-1); links through delaying TCP proxies; "
        "the same greedy tokens both ways"
    )


if __name__ == "__main__":
    main()
