"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status.

A gRPC failure of the SDK underneath is mapped here by its status *name* (this module
imports no grpc): the worker refusing a session past its limit (RESOURCE_EXHAUSTED)
is a 429, no route to the deployment (UNAVAILABLE) a 503, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INVALID_REQUEST = "invalid_request_error"


@dataclass
class ApiError(Exception):
    """An answer that is an error: its HTTP status and the OpenAI error object."""

    status: int
    message: str
    type: str = INVALID_REQUEST
    param: str | None = None
    code: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, INVALID_REQUEST, param, code)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, INVALID_REQUEST, None, "invalid_api_key")


def unknown_model(model: str, known: list[str]) -> ApiError:
    listed = ", ".join(sorted(known)) or "none"
    return ApiError(
        404, f"The model {model!r} does not exist (deployed: {listed})", INVALID_REQUEST, "model",
        "model_not_found",
    )  # fmt: skip


def no_route(detail: str) -> ApiError:
    return ApiError(503, f"no route to the deployment right now: {detail}", "server_error", None, "no_route")


#: gRPC status name -> (HTTP status, type, code) for a failure of a session or a route.
_BY_STATUS: dict[str, tuple[int, str, str]] = {
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error", "rate_limit_exceeded"),
    "UNAVAILABLE": (503, "server_error", "no_route"),
    "NOT_FOUND": (404, INVALID_REQUEST, "model_not_found"),
    "INVALID_ARGUMENT": (400, INVALID_REQUEST, "invalid_value"),
    "OUT_OF_RANGE": (400, INVALID_REQUEST, "invalid_value"),
    "FAILED_PRECONDITION": (503, "server_error", "no_route"),
    "DEADLINE_EXCEEDED": (504, "server_error", "timeout"),
    "UNAUTHENTICATED": (502, "server_error", "upstream_unauthenticated"),
    "PERMISSION_DENIED": (502, "server_error", "upstream_permission_denied"),
}


def from_status(status: str, details: str) -> ApiError:
    """The error a client sees for a gRPC failure named ``status`` (``"UNAVAILABLE"``, ...)."""
    http, kind, code = _BY_STATUS.get(status, (500, "server_error", "internal_error"))
    if http == 429:
        message = f"the deployment is at its session limit, retry later ({details})"
    elif http == 503:
        message = f"no route to the deployment right now: {details}"
    else:
        message = f"{status}: {details}"
    return ApiError(http, message, kind, None, code)
