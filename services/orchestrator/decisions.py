"""A bounded copy of each deployment's decision log, written back when Redis loses it.

Why: the decision log (a Redis stream) is what an operator reads to learn why a plan
changed, and the control loop reads the latency measured after each change from it.
A Redis that restarts empty lost it all (the 10-minute soak of issue 26 ended with 1
event of its run's dozens). The orchestrator is the log's only writer, so it keeps
the newest ``KEPT_EVENTS`` of each deployment it knows (with their stream ids and
measured latencies) and, when the stream no longer holds the newest one it saw, writes
them back in front of whatever was appended since. An orchestrator that restarts
reads its copy from Redis; one that restarts while Redis is empty has none to give:
then the log starts again (as the deployments themselves would be lost, see memory.py).
"""

from __future__ import annotations

import logging
from collections import deque

from resplit.state import StateStore

log = logging.getLogger(__name__)

#: Events kept per deployment (a few KB each): the newest of the log, bounded memory.
KEPT_EVENTS = 512
#: The newest events whose measured latency is still looked up (it arrives after a change).
MEASURED_LOOKBACK = 8


class KeptEvents:
    def __init__(self, store: StateStore, kept: int = KEPT_EVENTS) -> None:
        self.store = store
        self.kept = kept
        self._events: dict[str, deque[tuple[str, bytes]]] = {}
        self._measured: dict[str, dict[str, float]] = {}

    def forget(self, name: str) -> None:
        self._events.pop(name, None)
        self._measured.pop(name, None)

    def ids(self, name: str) -> list[str]:
        """The stream ids kept of ``name``'s log, oldest first."""
        return [i for i, _ in self._events.get(name, ())]

    async def sync(self, name: str) -> bool:
        """Take the events appended since the last sync; write the copy back when the
        log lost it. True when it was written back."""
        events = self._events.setdefault(name, deque(maxlen=self.kept))
        last = events[-1][0] if events else None
        rows = await self.store.events_after(name, last, self.kept)
        restored = False
        if last is not None and (not rows or rows[0][0] != last):
            kept = list(events)
            restored = await self.store.restore_events(name, kept, self._measured.get(name, {}))
            if not restored:
                return False  # appended meanwhile: next time
            log.warning("Redis lost the decision log of %s: wrote back its last %d events", name, len(kept))
            rows = await self.store.events_after(name, last, self.kept)
        events.extend(row for row in rows if row[0] != last)
        await self._look_up_measured(name, everything=last is None)
        return restored

    async def _look_up_measured(self, name: str, everything: bool) -> None:
        """The measured latencies of the newest events (of all kept, on the first sync)."""
        measured = self._measured.setdefault(name, {})
        kept = self.ids(name)
        recent = kept if everything else kept[-MEASURED_LOOKBACK:]
        measured.update(await self.store.measured_latencies(name, [i for i in recent if i not in measured]))
        alive = set(kept)
        for stale in [i for i in measured if i not in alive]:
            del measured[stale]
