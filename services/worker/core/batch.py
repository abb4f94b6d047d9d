"""Iteration-level batching: the one-token steps of many sessions as one forward.

Why: a decode step reads every weight of the segment once to move one token,
so on a worker that serves many sessions the weights are read once per session
per token. Run as one batched forward, N sessions' steps read them once (their
attention still runs per session, over its own cache): N tokens for about the
price of one while the step is bound by memory bandwidth.

How (vLLM's loop, in small): a step that finds its segment idle runs at once, a
batch of one, so a lone session never waits for company. Steps that arrive
while a batch runs wait; when it ends, every waiting step of that segment runs
as the next batch (up to ``max_rows``): the generating sessions' decode steps
first, then prompts within the cost bound (:meth:`Batcher._choose`). Sessions join
and leave between iterations simply by having a step ready or not.

The sessions on a segment come back together: their next steps arrive a few
milliseconds apart (each token goes round the ring, or out to its client and
back), and the first of them would find the segment idle and run alone, the
others as a second batch behind it, every iteration: two forwards where one would
do (measured: batches of 1 and 15 alternating for 16 sessions on one worker; on a
3-way split the sessions stayed in fragments of a few rows per stage, each paying
a full read of the weights). So a segment's *members* (the sessions that stepped
on it lately) are waited for: a batch starts once every member has a step
waiting, or after ``gather_s`` (never longer than ``GATHER_FORWARDS`` of the
segment's last forward: about a ring's round on a 3- or 4-way split), with whoever
arrived. A session alone is every member and never waits; one that
ends leaves (:meth:`Batcher.leave`), and one not seen for a while
(``STALE_FORWARDS`` forwards, at least ``STALE_MIN_S``) stops being waited for.
Fragments of sessions at different hops of a ring merge into one batch this way
within a few iterations: worth it where hops share cores, and no loss where a
forward costs about the same whatever its rows (a decode step bound by memory
bandwidth); ``gather_s = 0`` turns it off.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")

#: Runs one batch: the items of one key, in order; one result (or exception) per item.
RunBatch = Callable[[Hashable, list[Item]], Awaitable[list[Any]]]


#: The longest a batch waits for its missing members, in the segment's last forward times.
GATHER_FORWARDS = 4
#: A member not seen for this many of the segment's forwards (and STALE_MIN_S) is not waited for.
STALE_FORWARDS = 8
STALE_MIN_S = 0.5


@dataclass
class _Members:
    """The sessions stepping on one segment lately, and when each was last seen."""

    seen: dict[Hashable, float] = field(default_factory=dict)
    forward_s: float = 0.0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def missing(self, present: set[Hashable], now: float) -> bool:
        """Whether a member still to come is worth waiting for (stale ones are dropped)."""
        stale = max(STALE_MIN_S, STALE_FORWARDS * self.forward_s)
        for member, seen in list(self.seen.items()):
            if now - seen > stale:
                del self.seen[member]
        return any(member not in present for member in self.seen)


class Batcher(Generic[Item]):
    """Collects steps per key (a hosted segment) and runs them in batches, one at a time per key."""

    def __init__(
        self,
        run: RunBatch,
        max_rows: int = 64,
        gather_s: float = 0.2,
        max_cost: int | None = None,
        on_gather: Callable[[float], None] | None = None,
    ) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        if gather_s < 0:
            raise ValueError(f"gather_s must be at least 0, got {gather_s}")
        self.run = run
        self.max_rows = max_rows
        self.gather_s = gather_s
        #: The most cost (new tokens) one batch takes, beyond its first step; None: no bound.
        self.max_cost = max_cost
        #: Per key: (step, its session, its cost, its result to be) in arrival order.
        self._waiting: dict[Hashable, list[tuple[Item, Hashable, int, asyncio.Future[Any]]]] = {}
        self._running: set[Hashable] = set()
        self._members: dict[Hashable, _Members] = {}
        self._drains: set[asyncio.Task[None]] = set()
        #: Told how long each batch waited for its members (seconds; 0 when none was missing):
        #: what the member wait costs an iteration, for the worker's metrics.
        self.on_gather = on_gather

    def waiting(self) -> int:
        """Steps waiting for the batch in flight to end."""
        return sum(len(items) for items in self._waiting.values())

    def leave(self, member: Hashable) -> None:
        """``member`` (a session) ends: no batch waits for its next step."""
        for members in self._members.values():
            members.seen.pop(member, None)
            members.arrived.set()

    async def submit(self, key: Hashable, item: Item, member: Hashable | None = None, cost: int = 1) -> Any:
        """Run ``item`` (a step of ``member``, its session; ``cost``: its new tokens) in
        the next batch of ``key`` that has room for it (at once when ``key`` is idle and no
        member is still to come back); its result, or its own exception raised (never a
        batch mate's)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((item, member, cost, future))
        members = self._members.setdefault(key, _Members())
        if member is not None:
            members.seen[member] = time.monotonic()
        members.arrived.set()
        if key not in self._running:
            # An idle key: this batch is this step and whoever of its group comes back
            # meanwhile, run in the caller's task (no hand-off for a lone session). Its
            # cancellation concerns only itself; whatever arrived meanwhile is drained by a
            # task of its own.
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

    async def _gather(self, key: Hashable) -> None:
        """Until every member of ``key`` has a step waiting, or ``gather_s`` (at most
        ``GATHER_FORWARDS`` last forwards) has passed."""
        members = self._members.get(key)
        if members is None or self.gather_s == 0:
            return
        deadline = time.monotonic() + min(self.gather_s, GATHER_FORWARDS * members.forward_s)
        while members.missing({m for _, m, _, _ in self._waiting.get(key, ())}, time.monotonic()):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            members.arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await members.arrived.wait()

    async def _next_batch(self, key: Hashable) -> None:
        began = time.monotonic()
        await self._gather(key)
        if self.on_gather is not None:
            self.on_gather(time.monotonic() - began)
        waiting = self._waiting[key]
        chosen = self._choose(waiting)
        batch = [waiting[i] for i in chosen]
        left = set(chosen)
        waiting[:] = [entry for i, entry in enumerate(waiting) if i not in left]
        if not waiting:
            del self._waiting[key]
        batch = [entry for entry in batch if not entry[3].done()]  # gone meanwhile
        if not batch:
            return
        started = time.monotonic()
        try:
            results = await self.run(key, [entry[0] for entry in batch])
        except BaseException as exc:  # the batch itself failed: every step of it fails
            results = [exc] * len(batch)
            if not isinstance(exc, Exception):
                _settle(batch, results)
                raise
        self._members[key].forward_s = time.monotonic() - started
        _settle(batch, results)

    def _choose(self, waiting: list[tuple[Item, Hashable, int, asyncio.Future[Any]]]) -> list[int]:
        """Which waiting steps (their indexes) the next batch runs.

        Decode steps first (those with a member: sessions already generating), then
        prompts in arrival order while the cost bound holds (the first prompt always).
        Why: in arrival order, a session that had its first token came back behind every
        prompt queued meanwhile; 16 sessions arriving together left the first ones' next
        token waiting for all the others' prompts at every hop (their first two tokens'
        gaps were the slowest 5 % of all, bench/concurrency.py). As vLLM schedules it,
        running sessions step every iteration and prompts take what the budget leaves.
        While prompts wait, decode steps leave them one row, so a full batch of
        generating sessions cannot starve a new one.
        """
        if self.max_rows == 1:
            return [0]
        decode = [i for i, entry in enumerate(waiting) if entry[1] is not None]
        prompts = [i for i, entry in enumerate(waiting) if entry[1] is None]
        chosen = decode[: self.max_rows - (1 if prompts else 0)]
        cost = sum(waiting[i][2] for i in chosen)
        for n, i in enumerate(prompts):
            if len(chosen) >= self.max_rows:
                break
            if n and self.max_cost is not None and cost + waiting[i][2] > self.max_cost:
                break
            chosen.append(i)
            cost += waiting[i][2]
        return chosen


def _settle(batch: list[tuple[Any, Hashable, int, asyncio.Future[Any]]], results: list[Any]) -> None:
    for (_, _, _, future), result in zip(batch, results, strict=True):
        if future.done():  # its session went away meanwhile
            continue
        if isinstance(result, asyncio.CancelledError):
            future.cancel()
        elif isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
