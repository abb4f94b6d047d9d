"""Tokens that need not wait for the network: a head segment's token handed straight
to the first segment of the same session when both run in this worker.

Why: in the paper's placement (S1 and S3 on the trusted worker, S2 elsewhere) a
token sampled by S3 goes back over the network to S2's worker and from there to
S1, on this very worker: two network crossings on the critical path of every
token, a whole round trip of the edge link. The token still travels that way
(S2's hop waits for it to end its step, and passes on what it knows of newer
epochs), but the hop running S1 takes it from here the moment S3 samples it and
starts the next step while the copy travels; the copy is dropped when it comes.
The network path stays the fallback: whichever comes first wins, so a route
whose head is elsewhere, or a worker restarted in between, only loses the gain.
"""

from __future__ import annotations

import asyncio
from typing import Any


class LocalTokens:
    """Steps waiting for their token, by (session id, epoch, step)."""

    def __init__(self) -> None:
        self._waiting: dict[tuple[str, int, int], asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, session_id: str, epoch: int, step: int) -> asyncio.Future[Any]:
        """A future the head segment's token for this step will complete, if sampled here."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[(session_id, epoch, step)] = waiter
        return waiter

    def deliver(self, session_id: str, epoch: int, step: int, token: Any) -> bool:
        """Hand ``token`` to the step waiting for it; False when none waits here."""
        waiter = self._waiting.pop((session_id, epoch, step), None)
        if waiter is None or waiter.done():
            return False
        waiter.set_result(token)
        return True

    def forget(self, session_id: str, epoch: int, step: int) -> None:
        """The step ended another way (its token came over the network, or it failed)."""
        waiter = self._waiting.pop((session_id, epoch, step), None)
        if waiter is not None and not waiter.done():
            waiter.cancel()
