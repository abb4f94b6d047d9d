"""Rich renderings of the stack, shared by ``up``, ``status`` and ``demo``."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..launcher.processes import is_alive
from ..launcher.stack import Stack, health_of
from ..state import StateStore
from ..v1 import common_pb2


def progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def status_rows(stack: Stack) -> list[dict[str, Any]]:
    rows = []
    for record in stack.processes:
        alive = is_alive(record)
        if record.kind == "redis":
            grpc_state, http_code = ("-", 0)
        else:
            grpc_state, http_code = health_of(record) if alive else ("DOWN", 0)
        healthy = alive and (record.kind == "redis" or (grpc_state == "SERVING" and http_code == 200))
        rows.append(
            {
                "name": record.name,
                "kind": record.kind,
                "pid": record.pid,
                "alive": alive,
                "address": record.address,
                "http_port": record.http_port,
                "grpc_health": grpc_state,
                "healthz": http_code,
                "healthy": healthy,
            }
        )
    return rows


def status_table(stack: Stack, rows: list[dict[str, Any]] | None = None) -> Table:
    table = Table(title="resplit stack")
    for column in ("service", "pid", "gRPC address", "grpc.health.v1", "/healthz"):
        table.add_column(column)
    for row in rows if rows is not None else status_rows(stack):
        colour = "green" if row["healthy"] else "red"
        table.add_row(
            row["name"],
            str(row["pid"]) + ("" if row["alive"] else " (gone)"),
            row["address"],
            f"[{colour}]{row['grpc_health']}[/{colour}]",
            f"{row['http_port']} → {row['healthz']}" if row["http_port"] else "-",
        )
    return table


def _nodes(stack: Stack) -> list[common_pb2.Node]:
    async def read() -> list[common_pb2.Node]:
        store = StateStore(stack.redis_url, retries=0, socket_timeout_s=1.0)
        try:
            return await store.list_nodes()
        finally:
            await store.close()

    try:
        return asyncio.run(read())
    except Exception:
        return []


def node_rows(stack: Stack) -> list[dict[str, Any]]:
    return [
        {
            "node_id": n.node_id,
            "address": n.address,
            "trusted": n.trusted,
            "state": common_pb2.NodeState.Name(n.state).removeprefix("NODE_STATE_"),
            "memory_gib": round(n.capacity.memory_bytes / 2**30, 1),
            "device": n.capacity.device_profile,
        }
        for n in _nodes(stack)
    ]


def nodes_table(stack: Stack) -> Table:
    table = Table(title="node registry (Redis)")
    for column in ("node", "address", "trusted", "state", "memory", "device"):
        table.add_column(column)
    for row in node_rows(stack):
        colour = "green" if row["state"] == "UP" else "red"
        table.add_row(
            row["node_id"],
            row["address"],
            "yes" if row["trusted"] else "no",
            f"[{colour}]{row['state']}[/{colour}]",
            f"{row['memory_gib']} GiB",
            row["device"],
        )
    return table
