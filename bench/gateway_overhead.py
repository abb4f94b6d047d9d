"""Streaming overhead of the OpenAI-compatible gateway per token, against the SDK directly.

`resplit up --gateway` starts Redis, the services, three workers and the gateway on
loopback (plaintext: the comparison is about the HTTP layer, not TLS); a random Llama
(``--blocks`` blocks, hidden 64 unless ``--hidden`` says otherwise) is deployed as
S1 | S2 | S3 over worker-0 | worker-1 | worker-2. Then, alternating in every round,
the same greedy generation of ``--tokens`` tokens (past EOS: ``ignore_eos``):

* sdk: ``Client.generate`` in this process, the text decoded as it streams;
* gateway, raw SSE: ``POST /v1/completions`` with ``stream: true`` read line by line
  (what the gateway itself adds);
* gateway, openai client: the official client's ``completions.create(stream=True)``
  (what a user of it pays, the client's own parsing included).

Decode ms/token is the time from the first token (event) to the last, over the
tokens in between; the overhead is gateway minus sdk in the same round, its median
over rounds printed with the range. Every mode must produce the same text.
Usage: python bench/gateway_overhead.py [--tokens 64] [--rounds 15] [--blocks 4] [--hidden 64]
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time
from pathlib import Path

from _stack import deploy, fixed_placement, median_range
from rich.console import Console
from rich.progress import track
from rich.table import Table

from resplit.launcher import stack as stack_mod
from resplit.launcher.processes import free_port
from resplit.models.tiny import build_tiny
from resplit.sdk import Client

PROMPT = "The edge node keeps the embedding and the head"
TARGET_MS = 0.5  # the gateway's streaming overhead per token we aim for (loopback)


def sdk_run(client: Client, tokens: int) -> tuple[float, float, str]:
    """(first token s, decode s/token, text) through the SDK."""
    started = time.perf_counter()
    stamps, text = [], []
    for token in client.generate(PROMPT, deployment="bench", max_new_tokens=tokens, stop_token_ids=[]):
        stamps.append(time.perf_counter())
        text.append(token.text)
    return stamps[0] - started, (stamps[-1] - stamps[0]) / (len(stamps) - 1), "".join(text)


def _body(tokens: int) -> dict:
    return {"model": "bench", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "ignore_eos": True}


def raw_run(port: int, tokens: int) -> tuple[float, float, str]:
    """The same through the gateway, reading the server-sent events (one per token) as
    they come; one connection per request, its set-up in the first token's time."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/completions", json.dumps({**_body(tokens), "stream": True}))
    reply = conn.getresponse()
    stamps, text = [], []
    while True:
        line = reply.fp.readline()  # the chunked body's raw lines: data lines between chunk sizes
        if line.startswith(b"data: [DONE]"):
            break
        if line.startswith(b"data: "):
            stamps.append(time.perf_counter())
            text.append(json.loads(line[6:])["choices"][0]["text"])
    conn.close()
    if len(stamps) != tokens:
        raise SystemExit(f"the gateway streamed {len(stamps)} events for {tokens} tokens")
    return stamps[0] - started, (stamps[-1] - stamps[0]) / (len(stamps) - 1), "".join(text)


def openai_run(client, tokens: int) -> tuple[float, float, str]:
    started = time.perf_counter()
    stamps, text = [], []
    body = _body(tokens)
    extra = {"ignore_eos": body.pop("ignore_eos")}  # vLLM's extension: outside the client's signature
    stream = client.completions.create(**body, stream=True, extra_body=extra)
    for chunk in stream:
        stamps.append(time.perf_counter())
        text.append(chunk.choices[0].text)
    return stamps[0] - started, (stamps[-1] - stamps[0]) / (len(stamps) - 1), "".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()
    if args.blocks < 3:
        parser.error("--blocks must be at least 3 (one per segment)")
    import openai

    console = Console(width=200)
    work = Path(tempfile.mkdtemp(prefix="resplit-bench-"))
    model_dir = build_tiny(
        "llama", work / "llama", num_hidden_layers=args.blocks, hidden_size=args.hidden,
        intermediate_size=2 * args.hidden, max_position_embeddings=4096,
    )  # fmt: skip
    port = free_port()
    with console.status("starting the stack"):
        stack = stack_mod.up(
            work / "stack",
            workers=3,
            trusted=3,
            secure=False,
            gateway_port=port,
            extra_args=fixed_placement(),
        )
    modes = ("sdk", "raw", "openai")
    first = {m: [] for m in modes}
    decode = {m: [] for m in modes}
    try:
        first_cut, second_cut = 1 + args.blocks // 3, 1 + (2 * args.blocks) // 3
        segments = [(0, first_cut, "worker-0"), (first_cut, second_cut, "worker-1")]
        segments.append((second_cut, args.blocks + 2, "worker-2"))
        deploy(stack.by_name("orchestrator").address, "bench", model_dir, segments)
        with (
            Client(stack.by_name("orchestrator").address) as sdk,
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0) as oai,
        ):
            runs = {
                "sdk": lambda: sdk_run(sdk, args.tokens),
                "raw": lambda: raw_run(port, args.tokens),
                "openai": lambda: openai_run(oai, args.tokens),
            }
            for run in runs.values():  # warm-up: imports, tokenizers, connections
                run()
            for _ in track(range(args.rounds), description="rounds", console=console, transient=True):
                texts = {}
                for mode, run in runs.items():
                    ttft, per_token, texts[mode] = run()
                    first[mode].append(ttft * 1e3)
                    decode[mode].append(per_token * 1e3)
                if len(set(texts.values())) != 1:
                    raise SystemExit(f"the modes streamed different text: {texts}")
    finally:
        stack_mod.down(work / "stack")

    def overhead(mode: str) -> list[float]:
        return [g - s for g, s in zip(decode[mode], decode["sdk"], strict=True)]

    table = Table(
        title=f"Gateway streaming vs the SDK, Llama {args.blocks} blocks hidden {args.hidden} split over "
        f"3 workers, loopback, {args.tokens} tokens x {args.rounds} rounds"
    )
    table.add_column("metric")
    for title in ("SDK (Client.generate)", "gateway, raw SSE", "gateway, openai client"):
        table.add_column(title, justify="right")
    table.add_row("decode ms/token, median (range)", *(median_range(decode[m]) for m in modes))
    table.add_row(
        "overhead vs SDK ms/token, same round",
        "",
        median_range(overhead("raw")),
        median_range(overhead("openai")),
    )
    table.add_row("first token ms, median (range)", *(median_range(first[m]) for m in modes))
    console.print(table)
    console.print(
        f"target: gateway overhead <= {TARGET_MS} ms/token; the same greedy text in every mode and round"
    )


if __name__ == "__main__":
    main()
