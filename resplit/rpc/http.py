"""The HTTP side port: ``/healthz`` for probes, ``/metrics`` for Prometheus.

Served by aiohttp on the service's own event loop, so /healthz tells the same
truth as grpc.health.v1 (both read one :class:`~resplit.rpc.health.Readiness`).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .health import Readiness


def build_app(service: str, readiness: Readiness) -> web.Application:
    """The side-port application of one service."""

    async def healthz(_: web.Request) -> web.Response:
        body = {
            "service": service,
            "status": "SERVING" if readiness.serving else "NOT_SERVING",
            "reason": readiness.reason,
        }
        return web.json_response(body, status=200 if readiness.serving else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_side_port(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Bind and serve ``app``; the caller cleans up the returned runner."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
