"""What the shared service runtime costs per RPC.

Times WorkerService.Ping (64-byte payload) over loopback against a worker
process started the way `resplit up` starts it (metrics interceptor, health,
reflection), and against a bare grpc.aio server in another process answering
the same RPC with no interceptor, in the same run. Prints the medians and the
ratio. Usage: python bench/rpc_overhead.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
# Plaintext on loopback, explicitly: this measures resplit's gRPC runtime against a bare server.
os.environ.setdefault("RESPLIT_INSECURE", "1")
from support import wait_for

from resplit.launcher.processes import RedisServer, ServiceProcess, free_port
from resplit.rpc.channels import sync_channel
from resplit.v1 import worker_pb2, worker_pb2_grpc

BARE_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    import grpc
    from resplit.v1 import worker_pb2, worker_pb2_grpc

    class Bare(worker_pb2_grpc.WorkerServiceServicer):
        async def Ping(self, request, context):
            return worker_pb2.PingResponse(payload=request.payload, node_id="bare")

    async def main():
        server = grpc.aio.server()
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(Bare(), server)
        server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())
    """
)


def time_pings(address: str, calls: int) -> list[float]:
    with sync_channel(address) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        request = worker_pb2.PingRequest(payload=b"x" * 64)
        for _ in range(200):
            stub.Ping(request, timeout=5)
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            stub.Ping(request, timeout=5)
            samples.append((time.perf_counter() - start) * 1e3)
    return samples


def _bare_up(address: str) -> bool:
    try:
        time_pings(address, 1)
        return True
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    redis_server = RedisServer().start()
    worker = ServiceProcess("worker", redis_server.url, ["--node-id", "bench"]).start()
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port)])
    try:
        worker.wait_health("SERVING")
        wait_for(lambda: _bare_up(f"127.0.0.1:{bare_port}"), 20, what="bare server")
        results = {}
        for _ in range(2):  # interleave to share machine noise fairly
            results.setdefault("bare grpc.aio", []).extend(
                time_pings(f"127.0.0.1:{bare_port}", args.calls // 2)
            )
            results.setdefault("resplit worker", []).extend(time_pings(worker.address, args.calls // 2))
    finally:
        worker.kill()
        bare.kill()
        redis_server.stop()
    table = Table(title=f"WorkerService.Ping round trip over loopback ({args.calls} calls each)")
    for column in ("server", "median ms", "p95 ms", "ratio to bare (median)"):
        table.add_column(column)
    base = statistics.median(results["bare grpc.aio"])
    for name, samples in results.items():
        p95 = statistics.quantiles(samples, n=20)[-1]
        table.add_row(
            name,
            f"{statistics.median(samples):.3f}",
            f"{p95:.3f}",
            f"{statistics.median(samples) / base:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
