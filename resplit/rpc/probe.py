"""Client-side health probes: grpc.health.v1 and the HTTP /healthz port.

Used by the launcher, ``resplit status``, ``resplit health`` (the compose
healthcheck) and the tests, so every one of them asks the same question.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .channels import sync_channel
from .security import Security


def grpc_health(
    address: str, service: str = "", timeout_s: float = 2.0, *, security: Security | None = None
) -> str:
    """``SERVING``, ``NOT_SERVING``, ... or ``UNREACHABLE (<why>)``.

    Over the process's TLS credentials (or ``security``); health needs no token."""
    with sync_channel(address, security=security) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            return f"UNREACHABLE ({exc.code().name})"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def http_health(host: str, port: int, timeout_s: float = 2.0) -> tuple[int, str]:
    """(HTTP status, reason) of ``GET /healthz``; (0, why) when unreachable."""
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return reply.status, json.loads(reply.read()).get("reason", "")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read()).get("reason", "")
        except ValueError:
            return exc.code, ""
    except (OSError, ValueError) as exc:
        return 0, str(exc)


def main(argv: list[str] | None = None) -> int:
    """``python -m resplit.rpc.probe HOST:PORT [SERVICE]``: exit 0 when SERVING.

    What ``resplit health`` does, for container healthchecks: it imports grpc and this
    module alone (0.35 s of CPU, against 1.5 s for the whole CLI), which counts where
    ten containers check themselves every few seconds on a 2-core edge box.
    TLS credentials from RESPLIT_TLS_* and the token from RESPLIT_TOKEN_FILE (health
    needs none)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print("usage: python -m resplit.rpc.probe HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    state = grpc_health(args[0], args[1] if len(args) > 1 else "", timeout_s=5.0)
    print(f"{args[0]}: {state}")
    return 0 if state == "SERVING" else 1


if __name__ == "__main__":
    raise SystemExit(main())
