"""Gateway transport: the OpenAI-compatible API (``api.py``) on its own port, over the
SDK (``backend.py``). Its gRPC port serves grpc.health.v1 only, so the launcher, the
compose file and ``resplit status`` watch it like every other service. Ready while
the orchestrator answers. On SIGTERM the API stops accepting connections and gives
answers in progress the shutdown grace before their sessions are closed."""

from __future__ import annotations

import logging
import os
import ssl

import grpc
from aiohttp import web

from resplit.rpc.security import TOKEN_ENV, SecurityError, read_token
from resplit.rpc.server import StartupError

from .api import build_api
from .backend import Backend
from .config import API_KEY_ENV, GatewaySettings

log = logging.getLogger(__name__)


def read_api_key(settings: GatewaySettings) -> str | None:
    """The API key from --api-key-file, else $RESPLIT_API_KEY, else None (an open API).
    Read as the services' bearer token is (one word, surrounding whitespace dropped)."""
    if settings.api_key_file:
        return read_token(settings.api_key_file)
    return read_token("", {TOKEN_ENV: os.environ.get(API_KEY_ENV, "")})


class GatewayService:
    name = "gateway"
    service_names: list[str] = []

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.backend = Backend(settings)
        self.runner: web.AppRunner | None = None
        try:
            self.api_key = read_api_key(settings)
        except SecurityError as exc:
            raise StartupError(f"API key: {exc}") from None

    def register(self, server: grpc.aio.Server) -> None:
        return None  # health and reflection only

    def _ssl(self) -> ssl.SSLContext | None:
        s = self.settings
        if not (s.api_tls and s.tls_cert):
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(s.tls_cert, s.tls_key)
        return context

    async def start(self) -> None:
        s = self.settings
        self.backend.start()
        app = build_api(self.backend, s, self.api_key)
        self.runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=s.shutdown_grace_s
        )
        await self.runner.setup()
        context = self._ssl()
        site = web.TCPSite(self.runner, s.host, s.api_port, ssl_context=context, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen for the API on {s.host}:{s.api_port}: {exc.strerror or exc}"
            ) from None
        scheme = "https" if context else "http"
        log.info("gateway API on %s://%s:%d/v1", scheme, s.host, s.api_port)
        if not self.api_key:
            log.warning("the gateway API is OPEN: no API key configured (--api-key-file or %s)", API_KEY_ENV)

    async def check_ready(self) -> tuple[bool, str]:
        return await self.backend.ready()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()  # closes the port, waits up to the grace for answers in progress
        await self.backend.close()
