"""Rows sent in one turn of the event loop leave as one message: a lane's writer.

Why: a batched step on a segment settles every row's result at once, and each
session's task then sends its own row on: 16 sessions meant 16 messages to the
same next hop, 16 reads there, and 16 wake-ups spread over milliseconds while
the next hop's batch waited for the last of them (bench/hop_messages.py: 16
rows cross a hop in 0.97 ms as 16 messages, 0.42 ms as one; the wait for
members was about 10 ms of a 25-ms iteration at 16 sessions). The tasks woken
by one batch all run in the same turn of the loop, so what they send in that
turn is gathered and written once, by a writer task whose first step the loop
runs after them: a lone session's row leaves as soon as the loop has run what
was already due, and no timer ever holds a row back.

While a message is being written (gRPC allows one write at a time per stream,
and flow control may hold it), rows keep gathering for the next one; a message
holds at most ``max_bytes`` of rows (and always at least one). A sender's
``send`` returns once the message carrying its row is written, so a slow
receiver slows its senders as a stream of their own would; a failed write
fails every row in it and every row gathered behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Row = TypeVar("Row")

#: Writes one message made of these rows; raises if it could not.
Write = Callable[[list[Row]], Awaitable[None]]


class Coalescer(Generic[Row]):
    """Gathers the rows sent in one turn of the loop into one write."""

    def __init__(self, write: Write[Row], max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self._write = write
        self.max_bytes = max_bytes
        #: Rows not yet taken by a write: (row, its size, its sender's future).
        self._pending: list[tuple[Row, int, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: Set once a write failed: every later send raises it (the lane is gone).
        self.failed: BaseException | None = None
        #: Messages written and rows they carried (the worker's metrics count them in its write).
        self.messages = 0
        self.rows = 0

    async def send(self, row: Row, size: int) -> None:
        """Send ``row`` (``size`` bytes) in the next message; returns once it is written."""
        if self.failed is not None:
            raise self.failed
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((row, size, future))
        if self._writer is None:
            # The writer's first step runs after whatever the loop already had ready: the
            # other tasks woken by the same batch append their rows before it takes them.
            self._writer = loop.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                taken, size = 0, 0
                for _, row_size, _ in self._pending:
                    if taken and size + row_size > self.max_bytes:
                        break
                    taken += 1
                    size += row_size
                batch, self._pending = self._pending[:taken], self._pending[taken:]
                try:
                    await self._write([row for row, _, _ in batch])
                except BaseException as exc:
                    self.fail(exc if isinstance(exc, Exception) else RuntimeError("lane write cancelled"))
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(self.failed)  # type: ignore[arg-type]
                    if not isinstance(exc, Exception):
                        raise
                    return
                self.messages += 1
                self.rows += taken
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._writer = None

    def fail(self, error: BaseException) -> None:
        """No more writes: ``error`` for every row waiting and every later send."""
        if self.failed is None:
            self.failed = error
        pending, self._pending = self._pending, []
        for _, _, future in pending:
            if not future.done():
                future.set_exception(self.failed)

    @property
    def waiting(self) -> int:
        """Rows gathered and not yet taken by a write."""
        return len(self._pending)
