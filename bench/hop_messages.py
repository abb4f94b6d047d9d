"""What one hop of a batched iteration costs in messages: N sessions' activations as N
messages on N streams (the data plane today) or as one message of N rows on one stream.

Why: at 16 sessions a 3-way split keeps only 1.1-1.3 of the 2 cores busy and the per-token
time is set by the ring's messaging (docs/BENCHMARKS.md, "concurrency"): a hop's batch
starts once every session's activation has arrived, each its own gRPC message. This
measures that cost alone, between two processes over loopback, with resplit's own
encoding (``resplit.core.tensors.encode`` into ``ForwardRequest.activation``) and its
channel options: the sender writes one iteration, the receiver decodes every row and,
once it has all N, acknowledges the iteration; the sender times write-to-acknowledgement.

* per session: N Forward-like streams, one activation row each per iteration (today);
* one message: one stream, the N rows as one activation tensor of N rows (what a
  hop-to-hop lane carrying rows with session ids would send).

Printed per N: the iteration's median and p95 (ms), per row, and the ratio per session /
one message, measured in the same run, alternating. Usage: python bench/hop_messages.py
[--rows 1 4 16 64] [--hidden 1024] [--iterations 300]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time

import grpc
import torch
from rich.console import Console
from rich.table import Table

from resplit.core.tensors import Assembler, encode
from resplit.launcher.processes import free_port
from resplit.rpc.channels import channel_options
from resplit.v1 import worker_pb2

METHOD = "/bench.Hop/Rows"
ACK = b"ok"


def _receiver(port: int, ready) -> None:
    """Serve METHOD: decode every activation; one ack per complete iteration (on the
    stream that completed it), the iteration's row count named in the session id."""

    async def main() -> None:
        pending: dict[int, int] = {}
        acks: dict[int, asyncio.Queue[bytes]] = {}

        async def rows(requests, context):
            stream = len(acks)
            acks[stream] = queue = asyncio.Queue()

            async def read() -> None:
                async for raw in requests:
                    request = worker_pb2.ForwardRequest.FromString(raw)
                    chunk = request.activation
                    assembler = Assembler()
                    assembler.add(chunk)
                    tensor = assembler.tensor()
                    iteration, wanted = (int(x) for x in chunk.header.session_id.split("/"))
                    pending[iteration] = pending.get(iteration, 0) + int(tensor.shape[0])
                    if pending[iteration] == wanted:
                        del pending[iteration]
                        queue.put_nowait(ACK)

            reader = asyncio.create_task(read())
            try:
                while True:
                    yield await queue.get()
            finally:
                reader.cancel()

        server = grpc.aio.server(options=channel_options(64 << 20))
        handler = grpc.stream_stream_rpc_method_handler(rows)
        generic = grpc.method_handlers_generic_handler("bench.Hop", {"Rows": handler})
        server.add_generic_rpc_handlers((generic,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


async def _time(port: int, rows: int, hidden: int, iterations: int, one_message: bool) -> list[float]:
    """Per-iteration seconds, write of the first row to the acknowledgement of the last."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=channel_options(64 << 20)) as channel:
        streams = 1 if one_message else rows
        calls = [
            channel.stream_stream(METHOD, request_serializer=bytes, response_deserializer=bytes)()
            for _ in range(streams)
        ]
        row = torch.randn(1, 1, hidden)
        batch = torch.randn(rows, 1, hidden)
        times = []

        async def send(call, tensor, iteration: int) -> None:
            for chunk in encode(tensor, session_id=f"{iteration}/{rows}", step=iteration):
                await call.write(worker_pb2.ForwardRequest(activation=chunk).SerializeToString())

        # One reader per stream would race for acks; only the completing stream acks, so
        # reads are posted on every stream and the first answer ends the iteration.
        readers = [asyncio.ensure_future(call.read()) for call in calls]
        for iteration in range(iterations + 20):
            started = time.perf_counter()
            if one_message:
                await send(calls[0], batch, iteration)
            else:
                await asyncio.gather(*(send(call, row, iteration) for call in calls))
            done, _ = await asyncio.wait(readers, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                index = readers.index(finished)
                readers[index] = asyncio.ensure_future(calls[index].read())
            if iteration >= 20:  # warm-up
                times.append(time.perf_counter() - started)
        for reader in readers:
            reader.cancel()
        for call in calls:
            call.cancel()
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two modes per row count")
    args = parser.parse_args()
    port = free_port()
    spawn = multiprocessing.get_context("spawn")  # gRPC does not survive a fork
    ready = spawn.Event()
    receiver = spawn.Process(target=_receiver, args=(port, ready), daemon=True)
    receiver.start()
    if not ready.wait(60):
        raise SystemExit("the receiver did not start")
    table = Table(
        title=f"One hop of a batched iteration over loopback gRPC: N activation rows (hidden {args.hidden}, "
        f"fp32), {args.iterations} iterations x {args.rounds} rounds"
    )
    columns = ("rows", "per session: p50 / p95 ms", "one message: p50 / p95 ms",
               "per row, per session / one", "per session / one message (p50)")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    try:
        for rows in args.rows:
            got: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for one in (False, True):
                    got[one] += asyncio.run(_time(port, rows, args.hidden, args.iterations, one))
            p50 = {one: statistics.median(t) * 1e3 for one, t in got.items()}
            p95 = {one: statistics.quantiles(t, n=20)[-1] * 1e3 for one, t in got.items()}
            table.add_row(
                str(rows),
                f"{p50[False]:.3f} / {p95[False]:.3f}",
                f"{p50[True]:.3f} / {p95[True]:.3f}",
                f"{p50[False] / rows:.3f} / {p50[True] / rows:.3f}",
                f"{p50[False] / p50[True]:.2f}x",
            )
    finally:
        receiver.terminate()
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
