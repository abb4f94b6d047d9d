"""New sessions that find the worker full wait a moment for a slot, in order of arrival.

Why: refused at once, a full worker is a loss system. Sessions arriving at random
find all ``--max-sessions`` slots taken while one of them has just freed, and that
slot stays idle until the next arrival: at twice the rate the worker serves, about
a tenth of its capacity goes unused that way (Erlang's loss formula, 8 slots), and
the client-side throttle (resplit/sdk/throttle.py) sends about twice what is
admitted. A few sessions waiting here take a freed slot at once. The wait is
bounded (``wait_s``), so an admitted session's time to first token grows by at most
that, and so is the room (``max_waiting``): past it, or once its wait is up, a
session is refused RESOURCE_EXHAUSTED with the retry hint, as before.

A session admitted here holds its slot (SessionTable.hold_slot) until its handler
opens it, so that no later arrival takes the slot first; the transport lets it go
if the stream ends before that.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from .sessions import SessionTable


@dataclass(frozen=True)
class Admission:
    """What became of a new session: admitted (``refusal`` empty) or refused, and whether
    it waited in the room first."""

    refusal: str
    waited: bool

    @property
    def outcome(self) -> str:
        """For the admissions counter: admitted / waited / refused / refused_after_wait."""
        if self.refusal:
            return "refused_after_wait" if self.waited else "refused"
        return "waited" if self.waited else "admitted"


class WaitingRoom:
    """Sessions waiting for a slot on one worker, first come first served."""

    def __init__(self, table: SessionTable, max_waiting: int, wait_s: float) -> None:
        self.table = table
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self._queue: deque[tuple[str, asyncio.Future[None]]] = deque()
        table.on_free = self.wake

    def __len__(self) -> int:
        return len(self._queue)

    async def admit(self, session_id: str) -> Admission:
        """Hold a slot for ``session_id``, waiting for one up to ``wait_s``. A session already
        here (its other segment, a move to a new epoch) never waits: refusing or delaying
        it would fail a rollout under a full worker."""
        if self.table.holds(session_id):
            return Admission("", waited=False)
        if not self._queue and not self.table.refusal(session_id):
            self.table.hold_slot(session_id)
            return Admission("", waited=False)
        if len(self._queue) >= self.max_waiting or self.wait_s <= 0:
            waiting = f" ({len(self._queue)} waiting for a slot already)" if self._queue else ""
            return Admission(self.table.full() + waiting, waited=False)
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (session_id, slot)
        self._queue.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(slot), self.wait_s)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            if slot.done():  # woken, but its caller went away: the slot is someone else's
                self.table.let_go(session_id)
            raise
        finally:
            if entry in self._queue:
                self._queue.remove(entry)
        if slot.done():  # woken, maybe as the wait ran out: the slot is held for it
            return Admission("", waited=True)
        slot.cancel()
        return Admission(f"{self.table.full()} (waited {self.wait_s * 1000:.0f} ms for a slot)", waited=True)

    def wake(self) -> None:
        """A slot freed: hand it to the longest waiting session."""
        while self._queue and self.table.has_room():
            session_id, slot = self._queue.popleft()
            if slot.done():
                continue
            self.table.hold_slot(session_id)
            slot.set_result(None)
