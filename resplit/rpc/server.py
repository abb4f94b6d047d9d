"""Run one service: gRPC (aio) + health + reflection + metrics + side HTTP port.

A service supplies a :class:`Service`-shaped object: which servicers to
add, what to start, how to tell whether it is ready, what to stop. This module
does the transport chores every service shares, so each ``server.py`` stays
thin: bind (one clear line if the port is taken), report NOT_SERVING until
``check_ready`` first says yes, re-check readiness every interval (sooner while
not ready: see :func:`recheck_delay`), and on
SIGTERM/SIGINT go NOT_SERVING, finish in-flight RPCs within the grace period
and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ..config import ServiceSettings
from ..core.cancel import raise_if_cancelling
from ..core.limits import Caps
from ..gcpolicy import freeze_startup
from ..telemetry import SERVICE_INFO, SERVICE_UP, setup_logging
from .channels import channel_options
from .health import Readiness
from .http import build_app, start_side_port
from .interceptors import MetricsInterceptor
from .limits import LimitInterceptor
from .security import SecurityError, TokenInterceptor, current

log = logging.getLogger(__name__)
EXIT_CANNOT_START = 1


class Service(Protocol):
    """What a service plugs into :func:`serve`.

    A service may also have ``async def drain(self) -> None``: run when shutdown begins,
    beside gRPC's graceful stop, to end the long-lived streams of its own that no client
    will end (the worker's lanes to its peers: each side's stop would otherwise wait the
    whole grace for the other's stream). It is cancelled once the gRPC server stopped."""

    name: str
    #: Full proto names of the services it serves, e.g. ``resplit.v1.WorkerService``.
    service_names: list[str]

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    async def check_ready(self) -> tuple[bool, str]: ...

    async def stop(self) -> None: ...


class StartupError(RuntimeError):
    """Start-up failed for a reason the operator can fix (message says which)."""


#: The first re-check of a service that is not ready; later ones double up to the interval.
FIRST_RECHECK_S = 0.05


def recheck_delay(ready: bool, was_ready: bool | None, delay: float, interval: float) -> float:
    """Seconds until readiness is checked again.

    A ready service is re-checked every ``interval``. One that is not ready (starting,
    or it just lost a dependency) is re-checked soon, then less and less often, up to
    the interval: a worker that has just registered reports SERVING within tens of
    milliseconds instead of up to a whole interval later, and a dependency that stays
    away is still only asked once per interval.
    """
    if ready:
        return interval
    if was_ready is None or was_ready:  # starting, or just became not ready
        return min(FIRST_RECHECK_S, interval)
    return min(delay * 2, interval)


async def _watch_readiness(service: Service, readiness: Readiness, interval: float) -> None:
    last: tuple[bool, str] | None = None
    delay = interval
    while True:
        try:
            state = await service.check_ready()
        except Exception as exc:  # a readiness probe must never kill the service
            raise_if_cancelling(exc)  # but a cancel in disguise ends the watcher (resplit/core/cancel.py)
            state = (False, f"readiness check failed: {exc}")
        delay = recheck_delay(state[0], None if last is None else last[0], delay, interval)
        if state != last:
            await readiness.set(*state)
            SERVICE_UP.set(1 if state[0] else 0)
            log.info("%s is %s (%s)", service.name, "SERVING" if state[0] else "NOT_SERVING", state[1])
            last = state
        await asyncio.sleep(delay)


async def serve(service: Service, settings: ServiceSettings) -> None:
    """Serve ``service`` until SIGTERM or SIGINT."""
    SERVICE_INFO.info({"service": service.name})
    readiness = Readiness(service.service_names)
    await readiness.set(False, "starting")
    await readiness.alive()
    security = current()  # configured from ``settings`` by load_settings
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor()]
    if security.token:
        interceptors.append(TokenInterceptor(security.token))
    # After the token check, before the caps: a service's own admission (a full worker's
    # new sessions) refuses before a call takes a slot or its handler runs.
    interceptors += getattr(service, "interceptors", list)()
    # After the token check: a caller without the token never takes a slot.
    caps = Caps(settings.max_rpcs, settings.max_rpcs_per_client, settings.retry_after_ms)
    interceptors.append(LimitInterceptor(caps, service.name))
    server = grpc.aio.server(interceptors=interceptors, options=channel_options(settings.max_message_bytes))
    service.register(server)
    health_pb2_grpc.add_HealthServicer_to_server(readiness.servicer, server)
    reflection.enable_server_reflection(
        [
            *service.service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    bind = f"{settings.host}:{settings.port}"
    try:
        if security.tls:
            server.add_secure_port(bind, security.server_credentials(settings.tls_client_auth))
        else:
            server.add_insecure_port(bind)
    except SecurityError as exc:
        raise StartupError(str(exc)) from None
    except RuntimeError as exc:
        raise StartupError(f"cannot listen for gRPC on {bind} (port in use or host invalid): {exc}") from None
    health_server = _health_only_server(readiness, settings)
    try:
        runner = await start_side_port(build_app(service.name, readiness), settings.host, settings.http_port)
    except OSError as exc:
        raise StartupError(
            f"cannot listen for HTTP on {settings.host}:{settings.http_port}: {exc.strerror or exc}"
        ) from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    await server.start()
    if health_server is not None:
        await health_server.start()
    mode = (
        ("mutual TLS" if settings.tls_client_auth else "TLS") + (" + bearer token" if security.token else "")
        if security.tls
        else "plaintext"
    )
    http = f"{settings.host}:{settings.http_port}"
    log.info("%s listening on %s (gRPC, %s), %s (HTTP, plain)", service.name, bind, mode, http)
    if not security.tls:
        log.warning(
            "%s runs WITHOUT transport security (--insecure): gRPC traffic is plaintext and "
            "unauthenticated; configure --tls-cert/--tls-key/--tls-ca for production",
            service.name,
        )
    watcher: asyncio.Task[None] | None = None
    try:
        await service.start()
        log.debug("%s: %d start-up objects frozen for the collector", service.name, freeze_startup())
        watcher = asyncio.create_task(_watch_readiness(service, readiness, settings.health_interval_s))
        await stop.wait()
        log.info("%s shutting down (grace %.1fs)", service.name, settings.shutdown_grace_s)
    finally:
        await readiness.shutting_down()
        SERVICE_UP.set(0)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        draining = time.monotonic()
        drain = getattr(service, "drain", None)
        ending = asyncio.ensure_future(drain()) if drain is not None else None
        await server.stop(settings.shutdown_grace_s)
        drained = time.monotonic() - draining
        if ending is not None:
            ending.cancel()
            try:
                await ending
            except asyncio.CancelledError:
                pass
            except Exception:  # the shutdown goes on: what drain() left, stop() closes
                log.warning("%s: draining failed", service.name, exc_info=True)
        if drained > settings.shutdown_grace_s + 1.0:  # gRPC's own stop overran the grace it was given
            log.warning("%s: the gRPC server took %.1f s to stop (grace %.1f s)", service.name, drained,
                        settings.shutdown_grace_s)  # fmt: skip
        # Bounded: a background task stuck in a client library (Redis going away at the
        # same moment) must not keep the process alive past the launcher's SIGKILL.
        stopping = asyncio.ensure_future(service.stop())
        done, _ = await asyncio.wait({stopping}, timeout=settings.shutdown_grace_s + 1.0)
        if not done:
            log.warning("%s: stopping background work took over %.1f s; exiting anyway", service.name,
                        settings.shutdown_grace_s + 1.0)  # fmt: skip
        await runner.cleanup()
        if health_server is not None:
            await health_server.stop(0)
    log.info("%s stopped", service.name)


def _health_only_server(readiness: Readiness, settings: ServiceSettings) -> grpc.aio.Server | None:
    """A plaintext gRPC server with grpc.health.v1 alone on ``--health-port`` (None: not asked for).

    Kubernetes' native gRPC probes speak no TLS, and the service port demands mutual TLS;
    this port tells what /healthz already tells in plain HTTP, and serves nothing else.
    """
    if not settings.health_port:
        return None
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(readiness.servicer, server)
    bind = f"{settings.host}:{settings.health_port}"
    try:
        server.add_insecure_port(bind)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen for gRPC health on {bind} (port in use?): {exc}") from None
    return server


class ServiceType(Protocol):
    """A service class (``WorkerService``, ...): its name, and a constructor taking its settings."""

    name: str

    def __call__(self, settings: Any) -> Service: ...


def loop_runner(event_loop: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """What runs a service's main coroutine: ``uvloop.run`` or ``asyncio.run``.

    Every message of a gRPC stream wakes the event loop at least once (grpc.aio hands
    completions to it through a socket), and libuv's loop does that wake and the
    callbacks after it for less than asyncio's. On 2 cores, a token of a tiny model
    through three workers took 3.0-3.2 ms on uvloop against 3.0-4.3 ms on asyncio's
    loop, and bench/worker_settings.py measured about 1% off a 3-way split's decode.
    asyncio stays one setting away (``--event-loop asyncio``) in case a platform
    lacks uvloop.
    """
    if event_loop == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


def run(service_type: ServiceType, settings: ServiceSettings) -> None:
    """Blocking entry point used by every ``python -m services.<name>``.

    The service is built here, after logging is set up, so that what its constructor
    logs (a worker's thread counts, say) reaches the log instead of being dropped."""
    setup_logging(service_type.name, settings.log_level)
    try:
        loop_runner(settings.event_loop)(serve(service_type(settings), settings))
    except StartupError as exc:
        print(f"resplit-{service_type.name}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CANNOT_START) from None
