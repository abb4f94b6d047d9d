"""Sessions on one worker: per-session state for one segment, and the limits.

A session's KV cache lives with the segment that computed it. Limits protect
everyone else: a cap on open sessions, on tokens per session, an idle timeout,
and a KV budget: the tokens of cache all sessions on this worker may hold
together. A session reserves its share at its first step (what it holds then
plus what it may still generate), so one admitted never runs out of room
mid-generation; one that does not fit is refused there, naming the budget.
Hitting a limit closes only that session and frees its memory.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from resplit.core.limits import retry_hint
from resplit.models import SessionState
from resplit.models.sampling import Sampler

from .errors import Duplicate, Exhausted, OutOfOrder
from .hosting import Hosted


@dataclass
class Limits:
    max_sessions: int = 64
    max_tokens: int = 4096
    idle_timeout_s: float = 300.0
    #: Tokens of KV cache all open session segments may reserve together (0: no budget).
    kv_budget_tokens: int = 0
    #: The retry hint of a refusal that passes once other sessions end (a full worker, a
    #: full KV budget); a session too long for --max-tokens carries none: retrying cannot help.
    retry_after_ms: int = 100


@dataclass
class Session:
    session_id: str
    hosted: Hosted
    state: SessionState
    sampler: Sampler | None = None
    return_logits: bool = False
    next_step: int = 0
    generated: int = 0
    last_used: float = field(default_factory=time.monotonic)
    #: A step of this session is running (maybe in a batch with other sessions' steps).
    in_step: bool = False
    #: The most tokens this session may still generate (0: no bound but --max-tokens).
    max_new_tokens: int = 0
    #: Tokens of KV cache reserved for it in the worker's budget.
    reserved: int = 0

    @property
    def key(self) -> tuple[str, int, int]:
        """A session crossing to a new epoch is open twice for a moment (old and new)."""
        return (self.session_id, self.hosted.epoch, self.hosted.start)


class SessionTable:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._sessions: dict[tuple[str, int, int], Session] = {}
        #: Open segments per session id, kept as sessions open and close: read every step.
        self._per_id: Counter[str] = Counter()
        #: Tokens of KV cache reserved by the open sessions (see Limits.kv_budget_tokens).
        self.reserved = 0
        #: Sessions admitted at their stream's open whose handler has not opened them yet:
        #: each holds a slot, so that none admitted later (or woken from the waiting room,
        #: core/waiting.py) takes it first.
        self._slots_held: set[str] = set()
        #: Called when a slot frees (a session closed, a held slot let go): the waiting room.
        self.on_free: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._sessions)

    def clients(self) -> int:
        """Distinct sessions: one whose segments S1 and S3 both run here, or one crossing
        to a new epoch, is open twice but counts once."""
        return len(self._per_id)

    def has_room(self) -> bool:
        """Whether a new session would find a free slot (held slots count as taken)."""
        return len(self._per_id) + len(self._slots_held) < self.limits.max_sessions

    def holds(self, session_id: str) -> bool:
        """Whether ``session_id`` is open here or has a slot held for it."""
        return session_id in self._per_id or session_id in self._slots_held

    def refusal(self, session_id: str) -> str:
        """Why a session ``session_id`` would be refused here now ("" if it would not)."""
        if self.holds(session_id) or self.has_room():
            return ""
        return self.full()

    def full(self) -> str:
        """The refusal of a new session by a full worker, with its retry hint."""
        return (
            f"this worker already serves {len(self._per_id)} sessions (limit {self.limits.max_sessions}); "
            f"{retry_hint(self.limits.retry_after_ms)} or use another route"
        )

    def hold_slot(self, session_id: str) -> None:
        """Keep a slot for ``session_id`` until it opens or :meth:`let_go` (admitted at its
        stream's open, before its handler reads the open message)."""
        if session_id not in self._per_id:
            self._slots_held.add(session_id)

    def let_go(self, session_id: str) -> None:
        """The slot held for ``session_id`` is not needed (its stream ended before it opened)."""
        if session_id in self._slots_held:
            self._slots_held.discard(session_id)
            self._freed()

    def _freed(self) -> None:
        if self.on_free is not None:
            self.on_free()

    def open(self, session: Session) -> Session:
        if session.key in self._sessions:
            raise Duplicate(
                f"session {session.session_id!r} is already open on units starting at {session.hosted.start}"
            )
        # The limit counts sessions, not their segments: one already here opening another
        # segment (S1 and S3 on one worker) or crossing to a new epoch (a live move, while
        # its old segment drains) is never refused, or a rollout under a full worker fails.
        refusal = self.refusal(session.session_id)
        if refusal:
            raise Exhausted(refusal)
        self._slots_held.discard(session.session_id)
        self._sessions[session.key] = session
        self._per_id[session.session_id] += 1
        session.hosted.sessions += 1
        return session

    def segment_kv_tokens(self) -> dict[str, int]:
        """Tokens the open sessions hold per hosted segment, keyed "deployment/start-end":
        what a plan change moving that segment would pull (the orchestrator's change cost)."""
        held: Counter[str] = Counter()
        for session in self._sessions.values():
            hosted = session.hosted
            held[f"{hosted.deployment}/{hosted.start}-{hosted.end}"] += session.state.seq_len
        return dict(held)

    def sessions_of(self, session_id: str, deployment: str, epoch: int) -> list[Session]:
        return [
            s
            for (sid, ep, _), s in self._sessions.items()
            if sid == session_id and ep == epoch and s.hosted.deployment == deployment
        ]

    def close(self, session: Session) -> None:
        """Drop the session and its cache (idempotent)."""
        if self._sessions.pop(session.key, None) is not None:
            self._per_id[session.session_id] -= 1
            if not self._per_id[session.session_id]:
                del self._per_id[session.session_id]
                self._freed()
            session.hosted.sessions -= 1
            self.reserved -= session.reserved
            session.reserved = 0
            if not session.in_step:  # else the step still reads it: freed with the session
                session.state.cache = None

    def begin_step(self, session: Session, step: int, new_tokens: int) -> None:
        """Check order and the token limit before a step runs."""
        if step != session.next_step:
            raise OutOfOrder(
                f"session {session.session_id!r} expected step {session.next_step}, got step {step}"
            )
        total = session.state.seq_len + new_tokens
        if total > self.limits.max_tokens:
            raise Exhausted(
                f"session {session.session_id!r} would hold {total} tokens, over the limit of "
                f"{self.limits.max_tokens}; the session is closed and its memory freed"
            )
        self._reserve(session, total)
        session.last_used = time.monotonic()
        session.in_step = True

    def _reserve(self, session: Session, total: int) -> None:
        """Hold room in the KV budget for what ``session`` holds after this step and may
        still generate; raise Exhausted, naming the budget, when the rest is taken."""
        budget = self.limits.kv_budget_tokens
        if not budget or (session.reserved and total <= session.reserved):
            return
        ahead = max(0, session.max_new_tokens - session.generated) if session.max_new_tokens else None
        want = self.limits.max_tokens if ahead is None else min(self.limits.max_tokens, total + ahead)
        want = max(want, total)
        others = self.reserved - session.reserved
        if others + want > budget:
            raise Exhausted(
                f"this worker's KV budget is {budget} tokens (--kv-budget-tokens) and {others} are "
                f"reserved by other sessions; session {session.session_id[:64]!r} needs {want} "
                f"(what it holds plus what it may generate): {retry_hint(self.limits.retry_after_ms)} "
                "or use another route"
            )
        self.reserved = others + want
        session.reserved = want

    def end_step(self, session: Session) -> None:
        session.next_step += 1
        session.last_used = time.monotonic()
        session.in_step = False
