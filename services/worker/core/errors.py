"""Why a worker refuses a request, independent of transport.

The transport maps each class to a gRPC status code; the message is what the
caller reads, so it names the session, units or limit involved.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Base class: a refusal that leaves every other session untouched."""


class BadInput(WorkerError):
    """Malformed input (INVALID_ARGUMENT)."""


class NotHosted(WorkerError):
    """Unknown deployment, units or session on this worker (NOT_FOUND)."""


class StaleEpoch(WorkerError):
    """The request's epoch is not the one this session or deployment is at (FAILED_PRECONDITION)."""


class OutOfOrder(WorkerError):
    """A step arrived out of order (FAILED_PRECONDITION)."""


class Exhausted(WorkerError):
    """A limit was hit: sessions, tokens (RESOURCE_EXHAUSTED)."""


class Duplicate(WorkerError):
    """A session with this id is already open here (ALREADY_EXISTS)."""


class LoadFailed(WorkerError):
    """A segment could not be loaded (FAILED_PRECONDITION)."""


class MigrationFailed(WorkerError):
    """A session's cache could not be moved here (FAILED_PRECONDITION): the client
    falls back to replaying the session's token history on the new route."""


class NotTrusted(WorkerError):
    """Privacy-critical units asked of a worker started without --trusted (PERMISSION_DENIED)."""
