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


class _Offered:
    """A caller's request that counts against the inbox's bound until it is taken."""

    __slots__ = ("item",)

    def __init__(self, item: object) -> None:
        self.item = item


class Inbox(Generic[Request, Reply]):
    """What happens next to one session on one hop, in the order it happened.

    The caller's requests are bounded (``max_requests`` read ahead of the hop, see
    :meth:`offer`); the ring's replies and failures are not, as each step produces
    a bounded number of them and the hop waits for them."""

    def __init__(self, max_requests: int = 0) -> None:
        self._queue: asyncio.Queue[Request | Reply | Ended | BaseException | _Offered] = asyncio.Queue()
        #: At most this many offered requests wait here (0: no bound).
        self.max_requests = max_requests
        self._offered = 0
        self._room = asyncio.Event()
        self._room.set()

    def put(self, item: Request | Reply) -> None:
        """A request from the caller or a reply returned over the ring."""
        self._queue.put_nowait(item)

    async def offer(self, item: Request) -> None:
        """A request from the caller, once fewer than ``max_requests`` wait: the reader of
        the caller's stream stops here, and gRPC's flow control then stops the caller, so a
        caller that sends faster than its steps run holds a bounded amount of this worker."""
        while self.max_requests and self._offered >= self.max_requests:
            self._room.clear()
            await self._room.wait()
        self._offered += 1
        self._queue.put_nowait(_Offered(item))

    @property
    def waiting_requests(self) -> int:
        """Offered requests not yet taken."""
        return self._offered

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
        if isinstance(item, _Offered):
            self._offered -= 1
            self._room.set()
            item = item.item
        if isinstance(item, BaseException):
            raise item
        return item
