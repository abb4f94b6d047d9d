"""Every status a worker ends a call with, in one place.

A worker's own refusals are typed (core/errors.py) and map to one gRPC code
each; a later hop's refusal travels up as :class:`HopError`, unchanged but for
a prefix naming where it happened; an idle session ends DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import grpc

from .core import errors

STATUS = {
    errors.BadInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotHosted: grpc.StatusCode.NOT_FOUND,
    errors.StaleEpoch: grpc.StatusCode.FAILED_PRECONDITION,
    errors.OutOfOrder: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Exhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Duplicate: grpc.StatusCode.ALREADY_EXISTS,
    errors.LoadFailed: grpc.StatusCode.FAILED_PRECONDITION,
    errors.MigrationFailed: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotTrusted: grpc.StatusCode.PERMISSION_DENIED,
}


class HopError(Exception):
    """Another hop of the route refused or was lost; carries its status so we can pass it on."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def status_of(exc: errors.WorkerError) -> grpc.StatusCode:
    """The code of one of this worker's own refusals."""
    for cls, code in STATUS.items():
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


def refusal(exc: errors.WorkerError | HopError | TimeoutError) -> tuple[grpc.StatusCode, str]:
    """The status a Forward stream ends with: another hop's unchanged, an idle
    session's DEADLINE_EXCEEDED, else this worker's own refusal."""
    if isinstance(exc, HopError):
        return exc.code, exc.details
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
    return status_of(exc), str(exc)
