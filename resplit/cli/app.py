"""``resplit`` commands: up, status, down, health, demo, events; plan solve/show/apply; layers swap/merge."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..config import redact_url
from ..launcher import stack as stack_mod
from ..rpc.probe import grpc_health
from . import serve, views

app = typer.Typer(
    help="resplit: adaptive split inference at the edge.", no_args_is_help=True, add_completion=False
)
console = Console()
err = Console(stderr=True)

StateDir = Annotated[
    Path, typer.Option("--state-dir", envvar="RESPLIT_STATE_DIR", help="where the stack file and logs live")
]
DEFAULT_STATE_DIR = Path(".resplit")
serve.register(app)


@app.command()
def up(
    workers: Annotated[int, typer.Option(min=0, max=64, help="number of workers")] = 3,
    trusted: Annotated[int, typer.Option(min=0, help="how many of the workers are trusted")] = 1,
    redis_url: Annotated[str | None, typer.Option(help="use this Redis instead of starting one")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="seconds to wait for every health check")] = 30.0,
    insecure: Annotated[
        bool, typer.Option(help="run plaintext gRPC (default: mutual TLS + token, dev CA in STATE_DIR/tls)")
    ] = False,
    gateway: Annotated[
        bool, typer.Option(help="also start the OpenAI-compatible gateway (docs/GATEWAY.md)")
    ] = False,
    gateway_port: Annotated[int, typer.Option(min=1, max=65535, help="the gateway's API port")] = (
        stack_mod.GATEWAY_API_PORT
    ),
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Start Redis, the five services and N workers as separate processes (mutual TLS by default)."""
    with views.progress(console) as bar:
        task = bar.add_task("waiting for health checks", total=None)
        try:
            stack = stack_mod.up(
                state_dir,
                workers=workers,
                trusted=trusted,
                redis_url=redis_url,
                timeout_s=timeout,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
                secure=not insecure,
                gateway_port=gateway_port if gateway else None,
            )
        except stack_mod.StackError as exc:
            err.print(f"[red]resplit up failed:[/red] {exc}")
            raise typer.Exit(1) from None
    console.print(views.status_table(stack))
    if gateway:
        scheme, ca = ("http", "") if insecure else ("https", f" (CA: {state_dir / 'tls' / 'ca.pem'})")
        console.print(f"OpenAI-compatible API: {scheme}://127.0.0.1:{gateway_port}/v1{ca}")
    console.print(f"stack file: {stack_mod.stack_file(state_dir)}  ·  stop it with [bold]resplit down[/bold]")


@app.command()
def status(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Health of every process of the running stack, and the node registry."""
    try:
        stack = stack_mod.load(state_dir)
    except stack_mod.StackError as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    rows = views.status_rows(stack)
    if as_json:
        console.print_json(
            data={
                "redis_url": redact_url(stack.redis_url),
                "processes": rows,
                "nodes": views.node_rows(stack),
            }
        )
    else:
        console.print(views.status_table(stack, rows))
        console.print(views.nodes_table(stack))
    if not all(r["healthy"] for r in rows):
        raise typer.Exit(1)


@app.command()
def down(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    grace: Annotated[float, typer.Option(min=0, help="seconds to wait after SIGTERM before SIGKILL")] = 10.0,
) -> None:
    """Stop exactly the processes `resplit up` started (by PID)."""
    try:
        stopped, killed = stack_mod.down(state_dir, grace_s=grace)
    except stack_mod.StackError as exc:
        err.print(str(exc))
        raise typer.Exit(1) from None
    console.print(
        f"stopped {len(stopped)} processes" + (f" (SIGKILL: {', '.join(killed)})" if killed else "")
    )


@app.command()
def health(
    address: Annotated[str, typer.Argument(help="host:port of a resplit gRPC service")],
    service: Annotated[str, typer.Option(help="service name to check; empty = overall")] = "",
    timeout: Annotated[float, typer.Option(min=0.1)] = 2.0,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Exit 0 if the service answers grpc.health.v1 SERVING (for container healthchecks).

    TLS credentials: the local stack's if one runs from STATE_DIR, else RESPLIT_TLS_*."""
    with contextlib.suppress(stack_mod.StackError):
        stack_mod.load(state_dir)
    state = grpc_health(address, service, timeout)
    console.print(f"{address}: {state}")
    if state != "SERVING":
        raise typer.Exit(1)


@app.command()
def certs(
    out: Annotated[Path, typer.Argument(help="folder to write into (created)")] = Path("certs"),
    name: Annotated[
        list[str] | None, typer.Option("--name", help="a service to issue a certificate for (repeatable)")
    ] = None,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="extra host name or IP every certificate is valid for")
    ] = None,
    readable_keys: Annotated[
        bool, typer.Option(help="keys and token mode 0644, for containers running as another user")
    ] = False,
) -> None:
    """Make a development CA, a certificate per service (+ client) and a token (for compose)."""
    from ..launcher.certs import DEFAULT_HOSTS, make_dev_pki

    names = name or [*COMPOSE_SERVICES]
    make_dev_pki(out, names, [*DEFAULT_HOSTS, *(host or [])], readable_keys=readable_keys)
    console.print(f"wrote a development CA, certificates for {', '.join(names)} and client, a token: {out}")


#: The resplit services of docker-compose.yml (their certificates name them: SANs).
COMPOSE_SERVICES = (
    *("monitor", "splitter", "broadcaster", "orchestrator", "gateway"),
    *("edge-1", "edge-2", "edge-3", "cloud-1"),
)


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="leave the stack running afterwards")] = False,
    state_dir: Annotated[Path, typer.Option(help="state folder of the demo stack")] = DEFAULT_STATE_DIR
    / "demo",
) -> None:
    """Start the stack, run MiniLM split over three workers and stream tokens from a tiny Llama."""
    from .demo import run_demo

    raise typer.Exit(run_demo(console, state_dir, keep))


from .top import top  # noqa: E402

app.command()(top)

from .control import apply, events, show, watch  # noqa: E402
from .layers import layers_app  # noqa: E402
from .plan import plan_app  # noqa: E402
from .testbed import testbed_app  # noqa: E402

app.command()(events)
plan_app.command()(show)
plan_app.command()(apply)
plan_app.command()(watch)
app.add_typer(plan_app, name="plan")
app.add_typer(testbed_app, name="testbed")
app.add_typer(layers_app, name="layers")
