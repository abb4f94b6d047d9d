"""Transport security for every gRPC hop: TLS / mutual TLS and a bearer token.

One :class:`Security` value says how this process talks gRPC: the CA that
signs every peer's certificate, this process's own certificate and key (a
service's certificate serves both as its server certificate and as its client
certificate when it dials other services: mutual TLS), and the bearer token it
sends. It is a process-wide setting that :mod:`resplit.rpc.channels` reads, so
call sites never handle credentials:

* a service configures it once at start-up from its settings
  (:func:`resplit.config.load_settings` calls :func:`configure`);
* ``resplit up`` / the CLI configure it from the stack's state dir
  (:func:`resplit.launcher.stack.load`);
* the SDK takes one per client (``Client(..., security=Security.from_files(...))``);
* otherwise it comes from the environment (``RESPLIT_TLS_CA``, ``RESPLIT_TLS_CERT``,
  ``RESPLIT_TLS_KEY``, ``RESPLIT_TOKEN_FILE`` or ``RESPLIT_TOKEN``), and with none of
  them set, channels are plaintext.

The token never travels over plaintext: a token without TLS is a configuration
error. Nothing here ever puts a token, a key or a password into a message.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)

TOKEN_ENV = "RESPLIT_TOKEN"
#: Methods answered without a token (still over TLS when TLS is on): health checks
#: (container healthchecks, the launcher) and server reflection (grpcurl).
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class SecurityError(ValueError):
    """A TLS or token setting cannot be used; the message names the file, never its contents."""


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SecurityError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise SecurityError(f"the {what} {path} is empty")
    return data


def read_token(token_file: str = "", environ: Mapping[str, str] | None = None) -> str | None:
    """The token from ``token_file`` if given, else from ``$RESPLIT_TOKEN``, else None."""
    if token_file:
        token = _read(token_file, "token file").decode("utf-8", "replace").strip()
    else:
        token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    if token and any(c.isspace() for c in token):
        raise SecurityError("the bearer token must not contain whitespace")
    return token or None


@dataclass(frozen=True)
class Security:
    """TLS material and token of one process (or one SDK client)."""

    ca: bytes | None = field(default=None, repr=False)
    cert: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    def __repr__(self) -> str:  # never the key or the token
        parts = [
            f"tls={self.tls}",
            f"client_cert={self.cert is not None}",
            f"token={'set' if self.token else 'none'}",
        ]
        return f"Security({', '.join(parts)})"

    @classmethod
    def insecure(cls) -> Security:
        return cls()

    @classmethod
    def from_files(
        cls,
        ca: str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        token: str | None = None,
    ) -> Security:
        """Read PEM files (and the token file). ``cert`` and ``key`` go together."""
        if bool(cert) != bool(key):
            raise SecurityError("a TLS certificate needs its key and a key its certificate")
        if token_file:
            token = read_token(str(token_file))
        if token and not (ca or cert):
            raise SecurityError("a bearer token is only sent over TLS: configure a CA (and a certificate)")
        return cls(
            ca=_read(ca, "TLS CA file") if ca else None,
            cert=_read(cert, "TLS certificate") if cert else None,
            key=_read(key, "TLS key") if key else None,
            token=token or None,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Security:
        env = os.environ if environ is None else environ
        return cls.from_files(
            env.get("RESPLIT_TLS_CA") or None,
            env.get("RESPLIT_TLS_CERT") or None,
            env.get("RESPLIT_TLS_KEY") or None,
            token_file=env.get("RESPLIT_TOKEN_FILE") or None,
            token=read_token("", env),
        )

    @classmethod
    def from_pki_dir(cls, folder: str | os.PathLike[str]) -> Security:
        """The client credentials in a folder made by ``resplit certs`` / ``make certs``."""
        tls = Path(folder)
        return cls.from_files(
            tls / "ca.pem", tls / "client.pem", tls / "client-key.pem", token_file=tls / "token"
        )

    @classmethod
    def from_state_dir(cls, state_dir: str | os.PathLike[str]) -> Security:
        """The client credentials ``resplit up`` made for a local stack (``<state_dir>/tls``)."""
        return cls.from_pki_dir(Path(state_dir) / "tls")

    # -- gRPC credentials ------------------------------------------------------
    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """Credentials for a secure channel, or None for plaintext."""
        if not self.tls:
            return None
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )
        if self.token:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(self.token))
        return creds

    def server_credentials(self, require_client_auth: bool = True) -> grpc.ServerCredentials:
        if self.cert is None or self.key is None:
            raise SecurityError("a TLS server needs --tls-cert and --tls-key")
        if require_client_auth and self.ca is None:
            raise SecurityError("mutual TLS needs --tls-ca to check client certificates")
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=require_client_auth
        )


_process: Security | None = None


def configure(security: Security) -> None:
    """Set the credentials every channel of this process uses by default."""
    global _process
    _process = security


def current() -> Security:
    """This process's credentials: as configured, else from the environment (read once)."""
    global _process
    if _process is None:
        _process = Security.from_env()
    return _process


# -- server side: the bearer-token check ------------------------------------------


def _deny(message: str) -> Callable[..., Awaitable[Any]]:
    async def deny(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return deny


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Answers UNAUTHENTICATED unless the call carries ``authorization: Bearer <token>``.

    Health checks and reflection are exempt (:data:`EXEMPT_PREFIXES`). The
    token is compared in constant time and never logged or echoed.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def _problem(self, metadata: Any) -> str | None:
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if not values:
            return "missing bearer token: send metadata 'authorization: Bearer <token>'"
        given = values[0].encode() if isinstance(values[0], str) else bytes(values[0])
        if not hmac.compare_digest(given, self._expected):
            return "invalid bearer token"
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        problem = self._problem(handler_call_details.invocation_metadata)
        if problem is None:
            return handler
        log.warning("refused %s: %s", method, problem)
        deny = _deny(f"{problem} (resplit services need the deployment's token)")
        common = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(deny, **common)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(deny, **common)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(deny, **common)
        return grpc.stream_stream_rpc_method_handler(deny, **common)
