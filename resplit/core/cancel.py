"""A cancellation that an ``except Exception`` caught in disguise, raised again.

Why: on Python 3.11, ``asyncio.wait_for`` can turn a cancel that lands as its timeout
fires into ``TimeoutError``. A background loop that catches ``Exception`` and goes on
(a worker's node agent and heartbeat: Redis or a peer away is retried next cycle) then
outlives its ``cancel()``, and the service's stop waits on it until the launcher's
SIGKILL (seen: the demo's worker-4, "stopping background work took over 6.0 s"). The
task still counts the cancel it was sent (``Task.cancelling``), so the loop can tell.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling(exc: BaseException) -> None:
    """Raise CancelledError (from ``exc``) when the current task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError() from exc


def stop_if_cancelled() -> None:
    """Raise CancelledError when the current task counts a cancel that did not end it: one
    that a library swallowed on the way (a gRPC call cancelled as it failed comes back as its
    own error, which the loop then handles as a failed cycle). A loop calls it each round."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
