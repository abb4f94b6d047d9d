"""``resplit demo`` (what ``make demo`` runs).

Until the worker data plane lands this demo can only show the skeleton: the
stack comes up, every service is healthy, workers are registered, real RPCs
answer over real sockets, and the parts not built yet say so
(UNIMPLEMENTED) instead of pretending.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from rich.console import Console
from rich.panel import Panel

from ..launcher import stack as stack_mod
from ..rpc.channels import sync_channel
from ..v1 import monitor_pb2, monitor_pb2_grpc, splitter_pb2, splitter_pb2_grpc, worker_pb2, worker_pb2_grpc
from . import views

NOT_YET = """\
[bold]What this version cannot do yet[/bold] (those RPCs answer UNIMPLEMENTED, never a fake result):
  • run a split model (worker data plane, sessions, SDK generate/embed)
  • solve for the best split + placement (splitter)
  • node and link telemetry, E(t) (monitor)
  • the Alg. 1 adaptive loop and live reconfiguration (orchestrator + broadcaster)"""


def _ping_ms(address: str, count: int = 20) -> float:
    with sync_channel(address) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        stub.Ping(worker_pb2.PingRequest(payload=b"warm-up"), timeout=2)
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            stub.Ping(worker_pb2.PingRequest(payload=b"x" * 64), timeout=2)
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _reflected_services(address: str) -> list[str]:
    with sync_channel(address) as channel:
        return sorted(ProtoReflectionDescriptorDatabase(channel).get_services())


def _tour(console: Console, stack: stack_mod.Stack) -> None:
    monitor = stack.by_name("monitor")
    with sync_channel(monitor.address) as channel:
        nodes = (
            monitor_pb2_grpc.MonitorServiceStub(channel)
            .ListNodes(monitor_pb2.ListNodesRequest(), timeout=5)
            .nodes
        )
    console.print(views.nodes_table(stack))
    console.print(f"MonitorService.ListNodes over gRPC: {len(nodes)} workers registered")
    for worker in (r for r in stack.processes if r.kind == "worker"):
        console.print(
            f"WorkerService.Ping {worker.name} ({worker.address}): median {_ping_ms(worker.address):.2f} ms"
        )
    orchestrator = stack.by_name("orchestrator")
    listed = ", ".join(_reflected_services(orchestrator.address))
    console.print(f"reflection on the orchestrator (what `grpcurl list` shows): {listed}")
    splitter = stack.by_name("splitter")
    with sync_channel(splitter.address) as channel:
        try:
            splitter_pb2_grpc.SplitterServiceStub(channel).Solve(splitter_pb2.SolveRequest(), timeout=5)
        except grpc.RpcError as exc:
            console.print(f"SplitterService.Solve answers {exc.code().name}: {exc.details()}")


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
        _tour(console, stack)
        console.print(Panel(NOT_YET, title="not yet", border_style="yellow"))
    finally:
        if keep:
            console.print(f"stack left running; stop it with `resplit down --state-dir {state_dir}`")
        else:
            stopped, killed = stack_mod.down(state_dir)
            console.print(
                f"stack stopped ({len(stopped)} processes" + (f", SIGKILL: {killed})" if killed else ")")
            )
    return 0
