"""The ring's closing link, first-hop side: where a head hop's replies for a session land.

Why a ring: a token sampled by the head hop goes straight to the session's
first hop, which passes it to the client and runs the next step (exo's ring).
Sending it back the way the activations came costs one message per middle hop
and holds every middle hop's stream until the token has passed; over three
workers a token's critical path is three messages instead of four, and in the
paper's placement (S1 and S3 on the same trusted worker) the token never
leaves that worker at all.

The first hop opens a slot for each session before it opens the rest of the
route; the head hop hands its replies to it in-process when both run in this
worker, else sends them as rows on the lane to this worker. The slot's key is
drawn by the first hop and only travels down the route inside the session's
open message, so a reply row that carries it comes from a hop of this
session's route. The hops after the first draw a key each in the same way,
returned to the hop before with the session's confirmation: that is where
the lanes' activation rows land (:class:`HopTable`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from .errors import NotHosted, NotTrusted
from .inbox import Inbox

SlotId = tuple[str, str, int]


@dataclass
class Slot:
    """One session's landing place on its first hop."""

    key: str
    inbox: Inbox[Any, Any]


class RingTable:
    """The open slots of this worker, by (session id, deployment, epoch)."""

    def __init__(self) -> None:
        self._slots: dict[SlotId, Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def open(self, session_id: str, deployment: str, epoch: int, inbox: Inbox[Any, Any]) -> Slot:
        """A slot whose replies go to ``inbox``, with a new key. A session opens once per
        epoch on its first hop (the session table refuses a duplicate first)."""
        slot = Slot(secrets.token_hex(16), inbox)
        self._slots[(session_id, deployment, epoch)] = slot
        return slot

    def find(self, session_id: str, deployment: str, epoch: int, key: str) -> Slot:
        """The slot a head hop attaches to; refused unless the key is the slot's."""
        slot = self._slots.get((session_id, deployment, epoch))
        if slot is None:
            raise NotHosted(
                f"no first hop of session {session_id[:64]!r} ({deployment[:64]!r} epoch {epoch}) "
                "waits here for the ring"
            )
        if not secrets.compare_digest(slot.key, key):
            raise NotTrusted(f"wrong ring key for session {session_id[:64]!r}")
        return slot

    def close(self, session_id: str, deployment: str, epoch: int) -> None:
        """The session ended on its first hop (idempotent)."""
        self._slots.pop((session_id, deployment, epoch), None)


class HopTable:
    """The hops after the first on this worker, by the key each drew: where the lanes'
    activation rows land.

    By key, not by session: one worker may run several hops of one session (a plan with
    every segment on one node), each fed by the hop before it."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[SlotId, Slot]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def open(self, session_id: str, deployment: str, epoch: int, inbox: Inbox[Any, Any]) -> Slot:
        """A slot whose activation rows go to ``inbox``, with a new key."""
        slot = Slot(secrets.token_hex(16), inbox)
        self._slots[slot.key] = ((session_id, deployment, epoch), slot)
        return slot

    def find(self, session_id: str, deployment: str, epoch: int, key: str) -> Slot:
        """The slot a lane row names by its key; refused unless it is that session's."""
        found = self._slots.get(key)
        if found is None:
            raise NotHosted(
                f"no hop of session {session_id[:64]!r} ({deployment[:64]!r} epoch {epoch}) "
                "with this key waits here"
            )
        identity, slot = found
        if identity != (session_id, deployment, epoch):
            raise NotTrusted(f"a lane row's key is not session {session_id[:64]!r}'s")
        return slot

    def close(self, key: str) -> None:
        """The hop ended (idempotent)."""
        self._slots.pop(key, None)
