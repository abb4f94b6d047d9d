"""``resplit deploy / undeploy / generate / embed``: using a running stack."""

from __future__ import annotations

import datetime
import statistics
import sys
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.table import Table

from ..rpc.channels import sync_channel
from ..v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from .targets import service_address

console = Console()
err = Console(stderr=True)

Orchestrator = Annotated[
    str | None,
    typer.Option(envvar="RESPLIT_ORCHESTRATOR", help="orchestrator host:port (default: local stack)"),
]
StateDir = Annotated[Path, typer.Option("--state-dir", envvar="RESPLIT_STATE_DIR", help="local stack folder")]


def parse_split(text: str) -> list[common_pb2.Segment]:
    """``"0:2@edge-1,2:5@mec-2,5:7@edge-1"`` -> segments."""
    segments = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            units, node = part.split("@")
            start, end = (int(x) for x in units.split(":"))
        except ValueError:
            raise typer.BadParameter(f"{part!r} is not START:END@NODE") from None
        segments.append(common_pb2.Segment(units=common_pb2.UnitRange(start=start, end=end), node_id=node))
    return segments


def plan_table(plan: common_pb2.Plan) -> Table:
    table = Table(title=f"plan of {plan.deployment!r}, epoch {plan.epoch}")
    for column in ("segment", "units", "node"):
        table.add_column(column)
    for i, segment in enumerate(plan.segments, 1):
        table.add_row(f"S{i}", f"[{segment.units.start}, {segment.units.end})", segment.node_id)
    created = datetime.datetime.fromtimestamp(plan.created_at).strftime("%Y-%m-%d %H:%M:%S")
    table.caption = f"created {created} · {plan.reason or 'no reason given'}"
    if plan.predicted.phi:
        table.caption += f" · predicted L {plan.predicted.latency_ms:,.1f} ms, Phi {plan.predicted.phi:.4g}"
    return table


def _fail(exc: grpc.RpcError) -> typer.Exit:
    err.print(f"[red]{exc.code().name}[/red]: {exc.details()}")
    return typer.Exit(1)


def register(app: typer.Typer) -> None:
    @app.command()
    def deploy(
        model_dir: Annotated[Path, typer.Argument(help="local Hugging Face model directory")],
        name: Annotated[str, typer.Option(help="deployment name")],
        split: Annotated[str, typer.Option(help="START:END@NODE,... (default: {S1,S2,S3})")] = "",
        compression: Annotated[str, typer.Option(help="none, fp16, bf16 or int8 between hops")] = "none",
        dtype: Annotated[str, typer.Option(help="float32, float16, bfloat16; empty = checkpoint's")] = "",
        weights: Annotated[
            str, typer.Option(help="fp32, bf16, int8 or int4: weight format each worker quantizes to")
        ] = "fp32",
        orchestrator: Orchestrator = None,
        state_dir: StateDir = Path(".resplit"),
    ) -> None:
        """Deploy a model: load its segments on workers and commit epoch 1."""
        spec = common_pb2.Deployment(
            name=name,
            model_dir=str(model_dir.resolve()),
            compression=compression,
            dtype=dtype,
            weights=weights,
        )
        request = orchestrator_pb2.DeployRequest(deployment=spec, segments=parse_split(split))
        with sync_channel(service_address("orchestrator", orchestrator, state_dir)) as channel:
            try:
                reply = orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Deploy(request, timeout=600)
            except grpc.RpcError as exc:
                raise _fail(exc) from None
        console.print(plan_table(reply.plan))

    @app.command()
    def undeploy(
        name: Annotated[str, typer.Argument(help="deployment name")],
        orchestrator: Orchestrator = None,
        state_dir: StateDir = Path(".resplit"),
    ) -> None:
        """Release a deployment's segments on its workers."""
        with sync_channel(service_address("orchestrator", orchestrator, state_dir)) as channel:
            try:
                orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Undeploy(
                    orchestrator_pb2.UndeployRequest(deployment=name), timeout=60
                )
            except grpc.RpcError as exc:
                raise _fail(exc) from None
        console.print(f"undeployed {name}")

    @app.command()
    def generate(
        prompt: Annotated[str, typer.Argument(help="prompt text")],
        deployment: Annotated[str, typer.Option(help="deployment name")],
        max_new_tokens: Annotated[int, typer.Option(min=1)] = 32,
        temperature: Annotated[float, typer.Option(min=0)] = 0.0,
        top_k: Annotated[int, typer.Option(min=0)] = 0,
        top_p: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
        seed: int = 0,
        orchestrator: Orchestrator = None,
        state_dir: StateDir = Path(".resplit"),
    ) -> None:
        """Stream generated text, then per-token latency."""
        from ..sdk import Client

        latencies = []
        with Client(service_address("orchestrator", orchestrator, state_dir)) as client:
            try:
                for token in client.generate(
                    prompt,
                    deployment=deployment,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    seed=seed,
                ):
                    sys.stdout.write(token.text)
                    sys.stdout.flush()
                    latencies.append(token.latency_s * 1e3)
            except grpc.RpcError as exc:
                raise _fail(exc) from None
            except LookupError as exc:
                err.print(str(exc))
                raise typer.Exit(1) from None
        print()
        if len(latencies) > 1:
            decode = latencies[1:]
            console.print(
                f"{len(latencies)} tokens · first token {latencies[0]:.1f} ms · "
                f"decode median {statistics.median(decode):.2f} ms/token"
            )

    @app.command()
    def embed(
        texts: Annotated[list[str], typer.Argument(help="texts to embed")],
        deployment: Annotated[str, typer.Option(help="deployment name")],
        orchestrator: Orchestrator = None,
        state_dir: StateDir = Path(".resplit"),
    ) -> None:
        """Print embeddings (norm and first values) of texts."""
        from ..sdk import Client

        with Client(service_address("orchestrator", orchestrator, state_dir)) as client:
            try:
                vectors = client.embed(texts, deployment=deployment)
            except grpc.RpcError as exc:
                raise _fail(exc) from None
            except LookupError as exc:
                err.print(str(exc))
                raise typer.Exit(1) from None
        table = Table(title=f"embeddings from {deployment!r} ({vectors.shape[1]} dims)")
        for column in ("text", "norm", "first values"):
            table.add_column(column)
        for text, vector in zip(texts, vectors, strict=True):
            head = ", ".join(f"{v:+.3f}" for v in vector[:4].tolist())
            table.add_row(text, f"{float(vector.norm()):.4f}", f"[{head}, ...]")
        console.print(table)
