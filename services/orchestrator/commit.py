"""The one commit path of the orchestrator.

Errors first: every refusal of a plan change carries the gRPC status it is
answered with, chosen by the type of the error, never by its wording.
"""

from __future__ import annotations

import grpc

from resplit.core.privacy import PrivacyError
from resplit.core.units import NodeDown, PlanError


class CommitError(Exception):
    """A plan change refused or not committed; ``code`` is the gRPC status to answer with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def refused(exc: PlanError, prefix: str = "") -> CommitError:
    """A plan that cannot be served, as a CommitError: FAILED_PRECONDITION when the
    cluster is what stands in its way (a node down, a privacy-critical unit on an
    untrusted node), INVALID_ARGUMENT when the plan itself is wrong (a gap in the
    split, a node nobody registered)."""
    code = (
        grpc.StatusCode.FAILED_PRECONDITION
        if isinstance(exc, (NodeDown, PrivacyError))
        else grpc.StatusCode.INVALID_ARGUMENT
    )
    return CommitError(code, f"{prefix}{exc}")


__all__ = ["CommitError", "refused"]
