"""Per-token cost of running a model split over three worker processes.

Builds a random Llama sized so that whole-model decode takes 20-50 ms per
token on this CPU (hidden 1024, 12 blocks, ~136 M parameters, fp32), then in
the same run and alternating rounds:

* whole: transformers runs the whole model in this process (KV cache, greedy);
* split: `resplit up` starts Redis, the services and three workers; the model
  is deployed as S1 | S2 | S3 on worker-0 | worker-1 | worker-2 and the SDK
  streams greedy tokens over loopback gRPC.

Prints decode latency (median ms/token), the split/whole ratio (target <=
1.10), the overhead per network hop, and prefill throughput for a 128-token
prompt. Usage: python bench/pipeline_overhead.py [--tokens 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, DynamicCache

from resplit.launcher import stack as stack_mod
from resplit.models.tiny import build_tiny
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client, Sampling
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

MODEL = {"hidden_size": 1024, "num_hidden_layers": 12, "intermediate_size": 2816, "num_attention_heads": 16}


def whole_run(model, prompt: list[int], tokens: int) -> tuple[float, list[float], list[int]]:
    """(prefill seconds, decode seconds per token, generated ids) with transformers in-process."""
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        start = time.perf_counter()
        out = model(torch.tensor([prompt]), cache=cache, use_cache=True)
        token = int(out.logits[0, -1].argmax())
        prefill = time.perf_counter() - start
        ids, steps = [token], []
        for _ in range(tokens - 1):
            start = time.perf_counter()
            out = model(torch.tensor([[token]]), cache=cache, use_cache=True)
            token = int(out.logits[0, -1].argmax())
            steps.append(time.perf_counter() - start)
            ids.append(token)
    return prefill, steps, ids


def split_run(client: Client, route, prompt: list[int], tokens: int) -> tuple[float, list[float], list[int]]:
    got = list(client.generate_ids(prompt, route, Sampling(max_new_tokens=tokens)))
    return got[0].latency_s, [t.latency_s for t in got[1:]], [t.token_id for t in got]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    console = Console()
    work = Path(tempfile.mkdtemp(prefix="resplit-bench-"))
    with console.status("building the model"):
        model_dir = build_tiny("llama", work / "model", **MODEL)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    params = sum(p.numel() for p in model.parameters())
    decode_prompt = [5 + (i * 7) % 300 for i in range(16)]
    prefill_prompt = [5 + (i * 13) % 300 for i in range(128)]
    with console.status("starting the stack"):
        # All three trusted, so the head may sit on worker-2: three distinct processes.
        stack = stack_mod.up(work / "stack", workers=3, trusted=3)
    try:
        segments = [(0, 5, "worker-0"), (5, 10, "worker-1"), (10, 14, "worker-2")]
        spec = common_pb2.Deployment(name="bench", model_dir=str(model_dir))
        request = orchestrator_pb2.DeployRequest(
            deployment=spec,
            segments=[
                common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=n)
                for a, b, n in segments
            ],
        )
        with sync_channel(stack.by_name("orchestrator").address) as channel:
            orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Deploy(request, timeout=600)
        results = {"whole": {"decode": [], "prefill": []}, "split": {"decode": [], "prefill": []}}
        with Client(stack.by_name("orchestrator").address) as client:
            route = client.route("bench")
            split_run(client, route, decode_prompt, 4)  # warm-up
            whole_run(model, decode_prompt, 4)
            for _ in range(args.rounds):
                _, steps, whole_ids = whole_run(model, decode_prompt, args.tokens)
                results["whole"]["decode"] += steps
                _, steps, split_ids = split_run(client, route, decode_prompt, args.tokens)
                results["split"]["decode"] += steps
                if split_ids != whole_ids:
                    raise SystemExit("split and whole model generated different tokens")
                results["whole"]["prefill"].append(whole_run(model, prefill_prompt, 1)[0])
                results["split"]["prefill"].append(split_run(client, route, prefill_prompt, 1)[0])
            ping = _ping(route)
    finally:
        stack_mod.down(work / "stack")
    whole = statistics.median(results["whole"]["decode"]) * 1e3
    split = statistics.median(results["split"]["decode"]) * 1e3
    hops = 3  # client -> worker-0 -> worker-1 -> worker-2 (replies come back the same way)
    table = Table(title=f"3-segment split vs whole model, {params / 1e6:.0f} M-parameter Llama (fp32, CPU)")
    for column in ("metric", "whole (1 process)", "split (3 workers)", "split / whole"):
        table.add_column(column)
    table.add_row("decode, median ms/token", f"{whole:.2f}", f"{split:.2f}", f"{split / whole:.3f}")
    pre_whole = len(prefill_prompt) / statistics.median(results["whole"]["prefill"])
    pre_split = len(prefill_prompt) / statistics.median(results["split"]["prefill"])
    table.add_row(
        "prefill (128 tokens), tokens/s",
        f"{pre_whole:.0f}",
        f"{pre_split:.0f}",
        f"{pre_split / pre_whole:.3f}",
    )
    table.add_row("overhead per network hop, ms", "", f"{(split - whole) / hops:.2f}", "")
    table.add_row("gRPC Ping round trip, median ms", "", f"{ping:.2f}", "")
    console.print(table)
    console.print(
        f"{args.rounds} rounds x {args.tokens} tokens; same greedy tokens in both runs; target ratio <= 1.10"
    )


def _ping(route) -> float:
    from resplit.v1 import worker_pb2, worker_pb2_grpc

    with sync_channel(route.hops[1].address) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        samples = []
        for _ in range(200):
            start = time.perf_counter()
            stub.Ping(worker_pb2.PingRequest(payload=b"x" * 64), timeout=5)
            samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


if __name__ == "__main__":
    main()
