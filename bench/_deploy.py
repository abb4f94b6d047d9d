"""Deploying a benchmark's model on a running stack, split as the benchmark says."""

from __future__ import annotations

from pathlib import Path

from resplit.rpc.channels import sync_channel
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc


def deploy(address: str, name: str, model_dir: Path, segments: list[tuple[int, int, str]]) -> None:
    """Deploy ``model_dir`` as ``name`` with ``segments`` (start, end, node id) via the orchestrator."""
    request = orchestrator_pb2.DeployRequest(
        deployment=common_pb2.Deployment(name=name, model_dir=str(model_dir)),
        segments=[
            common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=n) for a, b, n in segments
        ],
    )
    with sync_channel(address) as channel:
        orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Deploy(request, timeout=600)
