"""Writing a Forward stream's replies without waiting for each write to finish.

grpc.aio reports a write as finished only after a round trip through its
completion queue's poller thread and the event loop: a few hundred microseconds
on a small host. A servicer that yields its replies waits for that before it
runs on, and so did the first hop of a server-loop session between passing a
token to the client and starting the next step, on every token. Here a write
starts at once and the next write (or the end of the stream) waits for it: the
stream keeps gRPC's one-write-at-a-time rule and its flow control (a client
that stops reading stops the stream after one more reply), and a step no longer
waits for the bookkeeping of the write before it.
"""

from __future__ import annotations

import asyncio

import grpc

from resplit.v1 import worker_pb2


class Replies:
    """The replies of one Forward stream, one write in flight at a time."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.context = context
        self._pending: asyncio.Future[None] | None = None

    async def send(self, reply: worker_pb2.ForwardResponse) -> None:
        """Start writing ``reply`` once the previous write has finished."""
        await self.flush()
        self._pending = asyncio.ensure_future(self.context.write(reply))
        # One turn of the loop starts the write (gRPC takes the message then), before a
        # step run inline on this thread (see core/threads.py) blocks the loop.
        await asyncio.sleep(0)

    async def flush(self) -> None:
        """Wait for the write in flight; its failure (the client went away) is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await pending

    async def settle(self) -> None:
        """Before the stream ends with an error: let a write in flight finish, whatever it does."""
        pending, self._pending = self._pending, None
        if pending is not None:
            await asyncio.wait([pending])  # never raises the write's error; our own cancellation does
            _retrieve(pending)

    def discard(self) -> None:
        """The stream is going away some other way (cancelled): drop a write in flight."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
            pending.add_done_callback(_retrieve)


def _retrieve(write: asyncio.Future[None]) -> None:
    """Read a finished write's outcome, so that asyncio does not log its error as lost."""
    if not write.cancelled():
        write.exception()
