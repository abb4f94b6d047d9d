"""The worker's session table counts sessions by id, which is what an inline step asks."""

from __future__ import annotations

import pytest
import torch

from resplit.models import SessionState
from services.worker.core.errors import Exhausted
from services.worker.core.hosting import Hosted
from services.worker.core.sessions import Limits, Session, SessionTable


def _hosted(start: int, end: int, epoch: int = 1) -> Hosted:
    # Session bookkeeping never touches the segment: no model is needed here.
    return Hosted("d", epoch, start, end, None, "", 0, torch.float32, torch.device("cpu"), True, 64)  # type: ignore[arg-type]


def _open(table: SessionTable, session_id: str, hosted: Hosted) -> Session:
    return table.open(Session(session_id=session_id, hosted=hosted, state=SessionState()))


def test_a_session_open_on_two_segments_or_two_epochs_is_one_client():
    table = SessionTable(Limits(max_sessions=8))
    first, last, next_epoch = _hosted(0, 3), _hosted(5, 7), _hosted(0, 3, epoch=2)
    a = _open(table, "a", first)
    _open(table, "a", last)  # S1 and S3 of one session on this worker (the paper's placement)
    _open(table, "a", next_epoch)  # crossing to a new epoch
    assert (len(table), table.clients()) == (3, 1)
    _open(table, "b", first)
    assert (len(table), table.clients()) == (4, 2)
    table.close(a)
    assert table.clients() == 2
    assert first.sessions == 1 and last.sessions == 1


def test_the_session_limit_counts_sessions_and_never_refuses_one_already_here():
    """At the limit a new session is refused, but one already open here still opens its
    other segment or its next epoch's (a live move under a full worker must not fail)."""
    table = SessionTable(Limits(max_sessions=1))
    _open(table, "a", _hosted(0, 3))
    with pytest.raises(Exhausted, match="already serves 1 sessions \\(limit 1\\)"):
        _open(table, "b", _hosted(0, 3))
    _open(table, "a", _hosted(5, 7))
    _open(table, "a", _hosted(0, 3, epoch=2))
    assert (len(table), table.clients()) == (3, 1)


def test_closing_a_session_mid_step_leaves_the_cache_to_the_step_and_frees_it_otherwise():
    """A batched forward may still be reading a session's cache when its stream goes away:
    the cache is then left to the step (freed with the session), never pulled from under it."""
    table = SessionTable(Limits())
    busy, idle = _open(table, "busy", _hosted(0, 3)), _open(table, "idle", _hosted(0, 3))
    busy.state.cache, idle.state.cache = object(), object()
    table.begin_step(busy, 0, 1)
    table.close(busy)
    table.close(idle)
    assert busy.state.cache is not None and idle.state.cache is None
    assert len(table) == 0


def test_the_kv_budget_admits_what_fits_and_names_itself_when_a_session_does_not():
    table = SessionTable(Limits(max_tokens=1000, kv_budget_tokens=100))
    hosted = _hosted(0, 3)

    def opened(session_id: str, max_new_tokens: int) -> Session:
        return table.open(
            Session(session_id=session_id, hosted=hosted, state=SessionState(), max_new_tokens=max_new_tokens)
        )

    a, b, c = opened("a", 30), opened("b", 30), opened("c", 30)
    table.begin_step(a, 0, 10)  # a 10-token prompt and up to 30 new tokens: 40 reserved
    table.begin_step(b, 0, 20)  # 50
    assert table.reserved == 90
    with pytest.raises(
        Exhausted, match=r"KV budget is 100 tokens \(--kv-budget-tokens\) and 90 are reserved"
    ):
        table.begin_step(c, 0, 5)  # needs 35
    for step in range(1, 31):  # an admitted session never runs out of room
        table.end_step(a)
        a.state.seq_len = 9 + step
        table.begin_step(a, step, 1)
    assert table.reserved == 90
    table.close(b)  # its room goes back
    table.begin_step(c, 0, 5)
    assert table.reserved == 75
    unbounded = opened("d", 0)  # no max_new_tokens: it reserves --max-tokens, which does not fit
    with pytest.raises(Exhausted, match="needs 1000"):
        table.begin_step(unbounded, 0, 5)
