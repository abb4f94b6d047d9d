"""The registration/heartbeat schedule, apart from how it talks to Redis.

Why separate: the rules (register first; heartbeat every interval; register
again when the registry forgot us; back off while the registry is unreachable)
are testable without Redis, and the data plane must never wait on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator

from resplit.core.cancel import raise_if_cancelling

log = logging.getLogger(__name__)


class Heartbeat:
    """Keeps one node registered while the process lives."""

    def __init__(
        self,
        register: Callable[[], Awaitable[None]],
        beat: Callable[[], Awaitable[bool]],
        interval_s: float,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._register = register
        self._beat = beat
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.registered = False
        self.registrations = 0
        self.last_error = ""

    async def tick(self) -> None:
        """One step: register if needed, else refresh. Raises on registry errors."""
        if not self.registered or not await self._beat():
            await self._register()
            self.registrations += 1
            if self.registered:
                log.warning("registry had forgotten this node; registered again")
            self.registered = True

    def retry_delays(self) -> Iterator[float]:
        """Sleeps between failed ticks: from 0.1 s doubling, never above the interval (nor
        ``max_backoff_s``): a registry that comes back empty gets this node again within
        one interval, before the control loop's grace for re-registering runs out."""
        delay = min(0.1, self.interval_s)
        while True:
            yield delay
            delay = min(delay * 2, self.interval_s, self.max_backoff_s)

    async def run(self) -> None:
        """Tick forever, backing off exponentially while the registry is unreachable."""
        delays = self.retry_delays()
        while True:
            try:
                await self.tick()
                self.last_error = ""
                delays = self.retry_delays()
            except Exception as exc:
                raise_if_cancelling(exc)  # a cancel in disguise ends the loop (resplit/core/cancel.py)
                if str(exc) != self.last_error:
                    log.warning("registry unreachable, will retry: %s", exc)
                self.last_error = str(exc)
                await asyncio.sleep(next(delays))
                continue
            await asyncio.sleep(self.interval_s)
