"""A benchmark's dealings with a running stack: deploying its model, reading the workers' metrics,
and the cell its tables show a measurement in."""

from __future__ import annotations

import statistics
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from resplit.rpc.channels import sync_channel
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc


def fixed_placement(worker_args: list[str] | None = None) -> dict[str, list[str]]:
    """``extra_args`` for ``stack.up`` in a benchmark that measures the placement it deploys:
    the orchestrator serves plans as deployed (``--no-adaptive``). With its control loop on,
    the load a benchmark creates crosses U_max and the plan moves mid-run (seen: a MIGRATE
    6.6 s into 16 concurrent sessions of bench/concurrency.py, 2026-12-05), so a "3-way
    split" row would time whatever the loop made of it."""
    extra = {"orchestrator": ["--no-adaptive"]}
    if worker_args:
        extra["worker"] = list(worker_args)
    return extra


def deploy(
    address: str, name: str, model_dir: Path, segments: list[tuple[int, int, str]], weights: str = ""
) -> None:
    """Deploy ``model_dir`` as ``name`` with ``segments`` (start, end, node id) via the orchestrator,
    its workers quantizing to ``weights`` (empty: fp32)."""
    request = orchestrator_pb2.DeployRequest(
        deployment=common_pb2.Deployment(name=name, model_dir=str(model_dir), weights=weights),
        segments=[
            common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=n) for a, b, n in segments
        ],
    )
    with sync_channel(address) as channel:
        orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Deploy(request, timeout=600)


def worker_metrics(stack, prefix: str, worker: str = "") -> Iterator[tuple[str, float]]:
    """(labels, value) of every worker's (or only ``worker``'s) Prometheus samples whose name
    starts with ``prefix``."""
    for record in stack.processes:
        if record.kind != "worker" or (worker and record.name != worker):
            continue
        with urllib.request.urlopen(f"http://127.0.0.1:{record.http_port}/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(prefix):
                    name, value = line.rsplit(" ", 1)
                    yield name[len(prefix) :], float(value)


def median_range(values: list[float]) -> str:
    """A table cell: the median over rounds, with the range."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"
