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


class ReaderStalled(Exception):
    """The caller took no reply for ``stall_s``: it stopped reading (and the stream's
    flow-control window is full), so the session is cut off instead of held."""


class Replies:
    """The replies of one Forward stream, one write in flight at a time.

    A caller that stops reading holds at most gRPC's flow-control window of replies
    plus the one write in flight; after ``stall_s`` with that write unfinished the
    session ends (:class:`ReaderStalled`) and frees its memory (0: wait forever)."""

    def __init__(self, context: grpc.aio.ServicerContext, stall_s: float = 0.0) -> None:
        self.context = context
        self.stall_s = stall_s
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
        if pending is None:
            return
        if self.stall_s > 0:
            done, _ = await asyncio.wait([pending], timeout=self.stall_s)
            if not done:
                pending.cancel()
                pending.add_done_callback(_retrieve)
                raise ReaderStalled(
                    f"the caller took no reply for {self.stall_s:g} s (--stalled-write-timeout-s): "
                    "cut off, its memory freed"
                )
        await pending

    async def settle(self) -> None:
        """Before the stream ends with an error: let a write in flight finish, whatever it
        does (for at most ``stall_s``: a stalled one is dropped)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            # Never raises the write's error; our own cancellation does.
            done, _ = await asyncio.wait([pending], timeout=self.stall_s or None)
            if not done:
                pending.cancel()
                pending.add_done_callback(_retrieve)
                return
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
