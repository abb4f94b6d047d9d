"""Which reported failures to verify: the data plane's reports, kept honest.

A session that loses a hop reports the nodes of its route at once
(``ReportFailure``), so the orchestrator can re-plan in that moment instead of
waiting for the heartbeat TTL and the next Delta t. A report is a claim, never a
verdict: the orchestrator checks the node itself (a Ping with a short deadline) and
only a node that fails that check is marked down. This module decides when a
report is worth a check, so that many sessions reporting the same loss cost one
check, and a hostile or confused reporter cannot make the orchestrator hammer a
healthy worker or take one down:

- one check per node at a time (reports that arrive meanwhile join it);
- a node found alive is not checked again for ``quiet_s``;
- a node already marked down is not checked again until it heartbeats back
  (the node registry says so: :meth:`Triage.claim` is told the node's state);
- each reporter gets at most ``burst`` reports per ``window_s``.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


class Action(enum.Enum):
    """What to do with one reported node."""

    VERIFY = "verify"  #: check it now (this caller holds the node's check)
    CHECKING = "checking"  #: another report's check is running
    RECENTLY_ALIVE = "recently alive"  #: checked and alive within quiet_s
    ALREADY_DOWN = "already down"  #: the registry reads it down already


@dataclass
class Triage:
    quiet_s: float = 1.0
    burst: int = 20
    window_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    _checking: set[str] = field(default_factory=set)
    _alive_at: dict[str, float] = field(default_factory=dict)
    _reports: dict[str, deque[float]] = field(default_factory=dict)

    def admit(self, reporter: str) -> bool:
        """Whether ``reporter`` may report now (at most ``burst`` reports per ``window_s``)."""
        now = self.clock()
        recent = self._reports.setdefault(reporter, deque())
        while recent and now - recent[0] >= self.window_s:
            recent.popleft()
        if len(recent) >= self.burst:
            return False
        recent.append(now)
        if len(self._reports) > 10_000:  # bounded memory under many reporters: forget idle ones
            for name in [r for r, times in self._reports.items() if not times]:
                del self._reports[name]
        return True

    def claim(self, node_id: str, down: bool) -> Action:
        """What to do with a report of ``node_id`` (``down``: the registry reads it down)."""
        if down:
            return Action.ALREADY_DOWN
        if node_id in self._checking:
            return Action.CHECKING
        alive_at = self._alive_at.get(node_id)
        if alive_at is not None and self.clock() - alive_at < self.quiet_s:
            return Action.RECENTLY_ALIVE
        self._checking.add(node_id)
        return Action.VERIFY

    def settle(self, node_id: str, alive: bool) -> None:
        """The check of ``node_id`` (claimed with VERIFY) ended."""
        self._checking.discard(node_id)
        if alive:
            self._alive_at[node_id] = self.clock()
        else:
            self._alive_at.pop(node_id, None)
