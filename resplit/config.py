"""Typed service configuration from flags and environment variables.

Every service describes its settings as a pydantic-settings model. Values come
from command-line flags (``--port 50051``) first, then ``RESPLIT_*``
environment variables, then defaults. A bad value must stop start-up with one
line a person can act on, not a traceback: :func:`load_settings` does that.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Annotated, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict, SettingsError

Port = Annotated[int, Field(ge=1, le=65535)]
EXIT_BAD_CONFIG = 2


class ServiceSettings(BaseSettings):
    """Settings every service has: where it listens, Redis, logging, shutdown."""

    model_config = SettingsConfigDict(
        env_prefix="RESPLIT_",
        cli_kebab_case=True,
        cli_exit_on_error=False,
        cli_implicit_flags=True,
        extra="forbid",
    )

    host: str = Field("127.0.0.1", description="address the gRPC server binds to")
    port: Port = Field(50051, description="gRPC port")
    http_port: Port = Field(9100, description="HTTP side port serving /healthz and /metrics")
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="plaintext gRPC port serving grpc.health.v1 alone, for kubelet gRPC probes (0: none)",
    )
    advertise_host: str = Field(
        "", description="host other processes use to reach this one (default: host, or 127.0.0.1 for 0.0.0.0)"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", pattern=r"^rediss?://", description="Redis URL")
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    shutdown_grace_s: float = Field(5.0, ge=0, le=300, description="seconds in-flight RPCs get on SIGTERM")
    health_interval_s: float = Field(1.0, gt=0, le=60, description="how often dependencies are re-checked")
    max_message_bytes: int = Field(
        256 * 1024 * 1024, ge=4 * 1024 * 1024, description="gRPC send/receive message limit"
    )
    # Transport security (docs/OPERATIONS.md, "Security"). The token itself is never a flag
    # (flags show in `ps`): it comes from --token-file or the RESPLIT_TOKEN variable.
    tls_cert: str = Field("", description="PEM certificate of this service (server and client side)")
    tls_key: str = Field("", description="PEM private key of --tls-cert")
    tls_ca: str = Field("", description="PEM CA bundle that signs every peer's certificate")
    tls_client_auth: bool = Field(True, description="require client certificates (mutual TLS)")
    token_file: str = Field("", description="file holding the bearer token (or env RESPLIT_TOKEN)")
    insecure: bool = Field(False, description="allow running without TLS (plaintext gRPC); logs a warning")
    # Server-wide caps (docs/OPERATIONS.md, "Limits"): an RPC over one is refused at once
    # with RESOURCE_EXHAUSTED and a retry hint; health checks are never capped.
    max_rpcs: int = Field(
        256,
        ge=0,
        le=1_000_000,
        description="RPCs (open streams included) this service runs at once (0: no cap)",
    )
    max_rpcs_per_client: int = Field(
        128,
        ge=0,
        le=1_000_000,
        description="RPCs one client identity (its certificate's name, else its address) runs here at once "
        "(0: no cap); below --max-rpcs so one flood leaves room for the other services",
    )
    retry_after_ms: int = Field(
        100, ge=0, le=600_000, description="the retry hint an RPC refused over a cap carries (ms)"
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        "uvloop",
        description="event loop under gRPC: uvloop (libuv, cheaper per message) or the standard asyncio one",
    )

    @property
    def address(self) -> str:
        """host:port other processes dial to reach this service."""
        host = self.advertise_host or ("127.0.0.1" if self.host in ("0.0.0.0", "::", "[::]") else self.host)
        return f"{host}:{self.port}"


S = TypeVar("S", bound=ServiceSettings)

_SECRET_IN_URL = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<password>[^@/]*)@", re.I)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``redis://:***@host:6379/0``)."""
    return _SECRET_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def transport_problem(settings: ServiceSettings) -> str | None:
    """Why these settings cannot start a service safely, or None."""
    tls = bool(settings.tls_cert or settings.tls_key or settings.tls_ca)
    if not tls and not settings.insecure:
        return (
            "no TLS configured: give --tls-cert, --tls-key and --tls-ca (env RESPLIT_TLS_CERT, "
            "RESPLIT_TLS_KEY, RESPLIT_TLS_CA), or --insecure (env RESPLIT_INSECURE=1) to run plaintext"
        )
    if tls and not (settings.tls_cert and settings.tls_key):
        return "TLS needs both --tls-cert and --tls-key (env RESPLIT_TLS_CERT, RESPLIT_TLS_KEY)"
    if tls and settings.tls_client_auth and not settings.tls_ca:
        return "mutual TLS needs --tls-ca (env RESPLIT_TLS_CA), or --no-tls-client-auth"
    return None


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        name = ".".join(str(p) for p in item["loc"]) or "settings"
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f" (got {redact_url(str(value))!r})"
        flag = name.replace("_", "-")
        parts.append(f"--{flag} (env RESPLIT_{name.upper()}): {item['msg']}{shown}")
    return "; ".join(parts)


def parse_settings(cls: type[S], argv: Sequence[str] | None = None) -> S:
    """Parse flags + environment into ``cls``; raises ValueError with one clear line."""
    try:
        return CliApp.run(cls, cli_args=list(argv) if argv is not None else sys.argv[1:])
    except ValidationError as exc:
        raise ValueError(_describe(exc)) from None
    except SettingsError as exc:
        raise ValueError(str(exc).strip().splitlines()[-1]) from None


def load_settings(cls: type[S], prog: str, argv: Sequence[str] | None = None) -> S:
    """Like :func:`parse_settings`, but a bad value ends the process with one line.

    Also refuses to start without TLS unless ``--insecure`` is given, and makes
    the service's TLS material and token the credentials of every channel this
    process opens (:mod:`resplit.rpc.security`).
    """
    from .rpc import security  # grpc only for services, not for the pure settings models

    try:
        settings = parse_settings(cls, argv)
        problem = transport_problem(settings)
        if problem:
            raise ValueError(problem)
        token = security.read_token(settings.token_file)
        if token and not settings.tls_cert:
            raise ValueError("a bearer token is only accepted over TLS: configure --tls-cert and --tls-key")
        if settings.tls_cert:
            creds = security.Security.from_files(
                settings.tls_ca or None, settings.tls_cert, settings.tls_key, token=token
            )
        else:
            creds = security.Security.insecure()
    except ValueError as exc:  # SecurityError is a ValueError
        print(f"{prog}: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    security.configure(creds)
    return settings
