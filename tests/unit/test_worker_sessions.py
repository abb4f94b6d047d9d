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


def test_the_session_limit_counts_open_segments():
    table = SessionTable(Limits(max_sessions=1))
    _open(table, "a", _hosted(0, 3))
    with pytest.raises(Exhausted, match="limit 1"):
        _open(table, "b", _hosted(0, 3))


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
