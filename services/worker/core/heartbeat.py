"""The registration/heartbeat schedule, apart from how it talks to Redis.

Why separate: the rules (register first; heartbeat every interval; register
again when the registry forgot us; back off while the registry is unreachable)
are testable without Redis, and the data plane must never wait on them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

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

    async def run(self) -> None:
        """Tick forever, backing off exponentially while the registry is unreachable."""
        backoff = self.interval_s
        while True:
            try:
                await self.tick()
                self.last_error = ""
                backoff = self.interval_s
            except Exception as exc:
                if str(exc) != self.last_error:
                    log.warning("registry unreachable, will retry: %s", exc)
                self.last_error = str(exc)
                backoff = min(max(backoff * 2, 0.1), self.max_backoff_s)
                await asyncio.sleep(backoff)
                continue
            await asyncio.sleep(self.interval_s)
