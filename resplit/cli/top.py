"""``resplit top``: a live terminal view of E(t) — nodes, links, latency.

It follows the monitor's WatchEnvironment stream, so what it shows is exactly
what the orchestrator decides from. ``--once`` prints one frame and exits (for
scripts and tests); ``--frames N`` bounds a live session.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from ..launcher import stack as stack_mod
from ..rpc.channels import sync_channel
from ..v1 import common_pb2, monitor_pb2, monitor_pb2_grpc

STATE = {common_pb2.NODE_STATE_UP: "[green]UP[/green]", common_pb2.NODE_STATE_DOWN: "[red]DOWN[/red]"}


def _pct(value: float) -> str:
    color = "red" if value >= 0.85 else "yellow" if value >= 0.6 else "green"
    return f"[{color}]{value * 100:5.1f}%[/{color}]"


def _kv(metrics: common_pb2.NodeMetrics) -> str:
    """KV tokens reserved, against the budget when there is one."""
    if not metrics.kv_budget_tokens:
        return str(metrics.kv_reserved_tokens)
    share = metrics.kv_reserved_tokens / metrics.kv_budget_tokens
    return f"{metrics.kv_reserved_tokens}/{metrics.kv_budget_tokens} {_pct(share).strip()}"


def render(env: common_pb2.Environment) -> Group:
    """Nodes, links and latency tables of one E(t) snapshot."""
    metrics = {m.node_id: m for m in env.metrics}
    nodes = Table(title=f"nodes · E(t) at {time.strftime('%H:%M:%S', time.localtime(env.timestamp))}")
    for column in (
        "node",
        "state",
        "trusted",
        "cpu",
        "mem",
        "gpu",
        "rss MiB",
        "in flight",
        "queue",
        "kv tokens",
        "compute ms",
    ):
        nodes.add_column(column, justify="left" if column in ("node", "compute ms") else "right")
    for node in env.nodes:
        m = metrics.get(node.node_id)
        if m is None:
            cells = ["-"] * 8
        else:
            compute = ", ".join(f"{k}: {v:.1f}" for k, v in sorted(m.segment_compute_ms.items())) or "-"
            cells = [
                _pct(m.cpu_utilization),
                _pct(m.memory_utilization),
                _pct(m.gpu_utilization) if m.has_gpu else "no GPU",
                f"{m.rss_bytes / 2**20:.0f}",
                str(m.requests_in_flight),
                str(m.queue_depth),
                _kv(m),
                compute,
            ]
        nodes.add_row(node.node_id, STATE.get(node.state, "?"), "yes" if node.trusted else "no", *cells)
    links = Table(title="links")
    for column in ("src", "dst", "bandwidth Mbit/s", "rtt ms", "age s"):
        links.add_column(column, justify="right" if column not in ("src", "dst") else "left")
    for link in env.links:
        age = max(env.timestamp - link.timestamp, 0.0)
        links.add_row(link.src, link.dst, f"{link.bandwidth_mbps:.1f}", f"{link.rtt_ms:.2f}", f"{age:.1f}")
    latency = Table(title="end-to-end latency (EWMA)")
    latency.add_column("deployment")
    latency.add_column("ms", justify="right")
    for deployment, ms in sorted(env.latency_ewma_ms.items()):
        latency.add_row(deployment, f"{ms:.1f}")
    return Group(nodes, links, latency)


def _monitor_address(monitor: str, state_dir: Path) -> str:
    if monitor:
        return monitor
    try:
        return stack_mod.load(state_dir).by_name("monitor").address
    except (stack_mod.StackError, KeyError) as exc:
        raise typer.BadParameter(f"no --monitor given and no running stack in {state_dir}: {exc}") from None


def top(
    monitor: Annotated[
        str, typer.Option(help="host:port of the monitor (default: the running stack's)")
    ] = "",
    interval: Annotated[float, typer.Option(min=0.05, max=3600, help="seconds between frames")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False,
    frames: Annotated[int, typer.Option(min=0, help="stop after this many frames (0: until Ctrl-C)")] = 0,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", envvar="RESPLIT_STATE_DIR", help="where the stack file lives")
    ] = Path(".resplit"),
) -> None:
    """Live view of nodes, links and latency, from the monitor's E(t) stream."""
    console = Console()
    address = _monitor_address(monitor, state_dir)
    with sync_channel(address) as channel:
        stub = monitor_pb2_grpc.MonitorServiceStub(channel)
        try:
            if once:
                console.print(render(stub.GetEnvironment(monitor_pb2.GetEnvironmentRequest(), timeout=5)))
                return
            stream = stub.WatchEnvironment(monitor_pb2.WatchEnvironmentRequest(interval_s=interval))
            with Live(console=console, auto_refresh=False) as live:
                for shown, env in enumerate(stream, start=1):
                    live.update(render(env), refresh=True)
                    if frames and shown >= frames:
                        stream.cancel()
                        break
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            Console(stderr=True).print(f"[red]monitor at {address}: {exc.code().name}[/red] {exc.details()}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            return
