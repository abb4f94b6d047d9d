"""A token sampled on the first hop's own worker: handed over in-process, and the read of
the network copy left in flight is the next read's result (core/shortcut.py, hops.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from resplit.v1 import worker_pb2
from services.worker.core.shortcut import LocalTokens
from services.worker.hops import Downstream


class _Call:
    """A Forward call whose replies the test releases one at a time."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[worker_pb2.ForwardResponse] = asyncio.Queue()
        self.reads = 0
        self.cancelled = False

    async def read(self) -> worker_pb2.ForwardResponse:
        self.reads += 1
        return await self.replies.get()

    async def done_writing(self) -> None:
        pass

    def cancel(self) -> None:
        self.cancelled = True


class _Stub:
    def __init__(self, call: _Call) -> None:
        self.call = call

    def Forward(self) -> _Call:
        return self.call


def _token(step: int) -> worker_pb2.ForwardResponse:
    return worker_pb2.ForwardResponse(token=worker_pb2.TokenOutput(step=step, token_id=100 + step))


def test_a_token_reaches_only_the_step_waiting_for_it():
    async def run():
        tokens = LocalTokens()
        waiter = tokens.expect("s", 1, 4)
        assert not tokens.deliver("s", 1, 3, "older step")
        assert not tokens.deliver("s", 2, 4, "other epoch")
        assert not tokens.deliver("t", 1, 4, "other session")
        assert tokens.deliver("s", 1, 4, "token") and await waiter == "token"
        assert not tokens.deliver("s", 1, 4, "again") and len(tokens) == 0

    asyncio.run(run())


def test_a_step_that_ended_another_way_stops_waiting():
    async def run():
        tokens = LocalTokens()
        waiter = tokens.expect("s", 1, 4)
        tokens.forget("s", 1, 4)
        assert waiter.cancelled() and len(tokens) == 0
        assert not tokens.deliver("s", 1, 4, "late")

    asyncio.run(run())


def test_the_read_left_in_flight_is_the_next_reads_result():
    async def run():
        call = _Call()
        downstream = Downstream(_Stub(call), "127.0.0.1:1", (3, 5))
        waiter = asyncio.get_running_loop().create_future()
        waiter.set_result("local")
        assert await downstream.read_or(waiter) is None  # the local token came first
        await call.replies.put(_token(4))  # then the network copy
        assert (await downstream.read()).token.step == 4
        assert call.reads == 1  # the same read, not a second one

    asyncio.run(run())


def test_a_reply_that_is_ready_wins_over_a_waiter_done_at_the_same_time():
    async def run():
        call = _Call()
        downstream = Downstream(_Stub(call), "127.0.0.1:1", (3, 5))
        await call.replies.put(_token(4))
        waiter = asyncio.get_running_loop().create_future()
        reply = await downstream.read_or(waiter)
        assert reply is not None and reply.token.step == 4 and not waiter.done()

    asyncio.run(run())


@pytest.mark.parametrize("copy_arrives", [True, False])
def test_closing_waits_a_bounded_time_for_the_copy_on_its_way(copy_arrives, monkeypatch):
    """The copy arrives: closing ends then, well before the bound. It does not: closing
    gives up at the bound."""
    drain = 5.0 if copy_arrives else 0.2
    monkeypatch.setattr("services.worker.hops.CLOSE_DRAIN_S", drain)

    async def run():
        call = _Call()
        downstream = Downstream(_Stub(call), "127.0.0.1:1", (3, 5))
        waiter = asyncio.get_running_loop().create_future()
        waiter.set_result("local")
        assert await downstream.read_or(waiter) is None
        if copy_arrives:
            asyncio.get_running_loop().call_later(0.05, call.replies.put_nowait, _token(4))
        started = asyncio.get_running_loop().time()
        await downstream.close()
        took = asyncio.get_running_loop().time() - started
        assert call.cancelled
        assert took < 4.0 if copy_arrives else drain * 0.9 <= took < 4.0

    asyncio.run(run())


def _handler():

    from services.worker.forward import ForwardHandler

    hosting = SimpleNamespace(latest_epoch=lambda deployment: 1)
    return ForwardHandler(hosting, None, None, None, 1 << 20, None, node_id="worker-0")


def _relayed(handler, downstream, waiter):
    async def collect():
        hosted = SimpleNamespace(deployment="d", generative=True)
        return [reply async for reply in handler._relay(downstream, hosted, waiter)]

    return collect()


def test_the_relayed_copy_is_dropped_and_its_news_of_a_newer_epoch_goes_on_with_the_next_token():
    async def run():
        handler, call = _handler(), _Call()
        downstream = Downstream(_Stub(call), "127.0.0.1:1", (3, 5))
        loop = asyncio.get_running_loop()
        first = loop.create_future()
        first.set_result(worker_pb2.TokenOutput(step=4, token_id=104, latest_epoch=1))
        got = await _relayed(handler, downstream, first)
        assert [(r.token.step, r.token.latest_epoch) for r in got] == [(4, 1)]
        # The next step: the copy of step 4 comes (the middle hop knows of epoch 2), then step 5's token.
        await call.replies.put(
            worker_pb2.ForwardResponse(token=worker_pb2.TokenOutput(step=4, latest_epoch=2))
        )
        second = loop.create_future()
        loop.call_later(0.05, second.set_result, worker_pb2.TokenOutput(step=5, token_id=105, latest_epoch=1))
        got = await _relayed(handler, downstream, second)
        assert [(r.token.step, r.token.token_id, r.token.latest_epoch) for r in got] == [(5, 105, 2)]

    asyncio.run(run())


def test_a_token_that_comes_over_the_network_first_is_taken_and_counted_as_such():
    async def run():
        handler, call = _handler(), _Call()
        downstream = Downstream(_Stub(call), "127.0.0.1:1", (3, 5))
        waiter = asyncio.get_running_loop().create_future()
        await call.replies.put(worker_pb2.ForwardResponse(token=worker_pb2.TokenOutput(step=4, token_id=7)))
        got = await _relayed(handler, downstream, waiter)
        assert [(r.token.step, r.token.token_id) for r in got] == [(4, 7)] and not waiter.done()
        assert downstream.delivered_step == -1  # nothing to drop later

    asyncio.run(run())
