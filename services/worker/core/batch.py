"""Iteration-level batching: the one-token steps of many sessions as one forward.

Why: a decode step reads every weight of the segment once to move one token,
so on a worker that serves many sessions the weights are read once per session
per token. Run as one batched forward, N sessions' steps read them once (their
attention still runs per session, over its own cache): N tokens for about the
price of one while the step is bound by memory bandwidth.

How (vLLM's loop, in small): a step that finds its segment idle runs at once, a
batch of one, so a lone session never waits for company. Steps that arrive
while a batch runs wait; when it ends, every waiting step of that segment runs
as the next batch (up to ``max_rows``). Sessions join and leave between
iterations simply by having a step ready or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")

#: Runs one batch: the items of one key, in order; one result (or exception) per item.
RunBatch = Callable[[Hashable, list[Item]], Awaitable[list[Any]]]


class Batcher(Generic[Item]):
    """Collects steps per key (a hosted segment) and runs them in batches, one at a time per key."""

    def __init__(self, run: RunBatch, max_rows: int = 64) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.run = run
        self.max_rows = max_rows
        self._waiting: dict[Hashable, list[tuple[Item, asyncio.Future[Any]]]] = {}
        self._running: set[Hashable] = set()
        self._drains: set[asyncio.Task[None]] = set()

    def waiting(self) -> int:
        """Steps waiting for the batch in flight to end."""
        return sum(len(items) for items in self._waiting.values())

    async def submit(self, key: Hashable, item: Item) -> Any:
        """Run ``item`` in the next batch of ``key`` (at once when ``key`` is idle); its
        result, or its own exception raised (never a batch mate's)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((item, future))
        if key not in self._running:
            # An idle key has nothing waiting: this batch is this step alone, run in the
            # caller's task (no hand-off for a lone session). Its cancellation concerns only
            # itself; whatever arrived meanwhile is drained by a task of its own.
            self._running.add(key)
            try:
                await self._next_batch(key)
            finally:
                if self._waiting.get(key):
                    drain = asyncio.create_task(self._drain(key))
                    self._drains.add(drain)
                    drain.add_done_callback(self._drains.discard)
                else:
                    self._running.discard(key)
        return await future

    async def _drain(self, key: Hashable) -> None:
        try:
            while self._waiting.get(key):
                await self._next_batch(key)
        finally:
            self._running.discard(key)

    async def _next_batch(self, key: Hashable) -> None:
        waiting = self._waiting[key]
        batch = waiting[: self.max_rows]
        del waiting[: self.max_rows]
        if not waiting:
            del self._waiting[key]
        batch = [(item, future) for item, future in batch if not future.done()]  # gone meanwhile
        if not batch:
            return
        try:
            results = await self.run(key, [item for item, _ in batch])
        except BaseException as exc:  # the batch itself failed: every step of it fails
            results = [exc] * len(batch)
            if not isinstance(exc, Exception):
                _settle(batch, results)
                raise
        _settle(batch, results)


def _settle(batch: list[tuple[Any, asyncio.Future[Any]]], results: list[Any]) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():  # its session went away meanwhile
            continue
        if isinstance(result, asyncio.CancelledError):
            future.cancel()
        elif isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
