"""The one place a hop waits: its session's requests, the ring's replies, the next hop's end.

Why one queue: a hop has three things that can happen next and must never
miss any of them. Its caller sends the next step (or closes); on the first
hop, the head hop returns the step's token over the ring; and the next hop
may fail at any moment, which the hop must pass up at once even while no
request is due (in the ring a middle hop never waits for a token, so nothing
else would tell it). Each source puts into the inbox from its own task and
the hop's handler reads one queue, in arrival order, with one timeout.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

Request = TypeVar("Request")
Reply = TypeVar("Reply")


class Ended:
    """The caller ended its side of the stream (no more requests)."""


ENDED = Ended()


class Inbox(Generic[Request, Reply]):
    """What happens next to one session on one hop, in the order it happened."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Request | Reply | Ended | BaseException] = asyncio.Queue()

    def put(self, item: Request | Reply) -> None:
        """A request from the caller or a reply returned over the ring."""
        self._queue.put_nowait(item)

    def end(self) -> None:
        """The caller will send nothing more."""
        self._queue.put_nowait(ENDED)

    def fail(self, error: BaseException) -> None:
        """The next hop (or the ring) failed: the hop's next wait raises ``error``."""
        self._queue.put_nowait(error)

    async def get(self, timeout_s: float, waiting_for: str) -> Request | Reply | Ended:
        """The next thing that happened; a failure is raised. Nothing for ``timeout_s``
        raises TimeoutError naming what the hop was ``waiting_for``."""
        try:
            async with asyncio.timeout(timeout_s):
                item = await self._queue.get()
        except TimeoutError:
            raise TimeoutError(
                f"no {waiting_for} for {timeout_s:g} s; the session is closed and its memory freed"
            ) from None
        if isinstance(item, BaseException):
            raise item
        return item
