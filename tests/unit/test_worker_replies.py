"""A Forward stream's replies: a write starts at once, the next one waits for it."""

from __future__ import annotations

import asyncio

import pytest

from resplit.v1 import worker_pb2
from services.worker.replies import Replies


class Context:
    """Records writes; each finishes only when the test says so (as gRPC's completion does)."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finish: dict[int, asyncio.Future[None]] = {}

    async def write(self, reply: worker_pb2.ForwardResponse) -> None:
        step = reply.token.step
        self.started.append(step)
        self.finish[step] = asyncio.get_running_loop().create_future()
        await self.finish[step]


def _token(step: int) -> worker_pb2.ForwardResponse:
    return worker_pb2.ForwardResponse(token=worker_pb2.TokenOutput(step=step))


async def _one_write_in_flight() -> tuple[Context, Replies]:
    context = Context()
    replies = Replies(context)
    await replies.send(_token(0))
    return context, replies


def test_a_write_starts_before_send_returns_and_the_next_waits_for_it():
    async def scenario() -> None:
        context, replies = await _one_write_in_flight()
        assert context.started == [0]  # started, not finished: the caller runs on
        second = asyncio.ensure_future(replies.send(_token(1)))
        await asyncio.sleep(0.01)
        assert context.started == [0] and not second.done()  # one write at a time
        context.finish[0].set_result(None)
        await second
        assert context.started == [0, 1]
        context.finish[1].set_result(None)
        await replies.flush()

    asyncio.run(asyncio.wait_for(scenario(), 5))  # a send that waited for its own write would hang


def test_a_failed_write_is_raised_by_the_next_send_and_swallowed_by_settle():
    async def scenario() -> None:
        context, replies = await _one_write_in_flight()
        context.finish[0].set_exception(ConnectionError("client went away"))
        with pytest.raises(ConnectionError, match="went away"):
            await replies.send(_token(1))
        await replies.send(_token(2))
        context.finish[2].set_exception(ConnectionError("again"))
        await replies.settle()  # the stream ends with its own error instead
        await replies.settle()  # nothing in flight: a no-op

    asyncio.run(asyncio.wait_for(scenario(), 5))  # a send that waited for its own write would hang


def test_discard_cancels_a_write_in_flight():
    async def scenario() -> None:
        context, replies = await _one_write_in_flight()
        replies.discard()
        await asyncio.sleep(0)
        assert context.finish[0].cancelled()
        await replies.flush()  # nothing left to wait for

    asyncio.run(asyncio.wait_for(scenario(), 5))  # a send that waited for its own write would hang
