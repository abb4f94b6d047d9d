"""A worker's receiving end of a lane (services/worker/lanes.py receive): each row into its
session's inbox, only with that hop's key; a lost lane fails the sessions it fed."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from resplit.v1 import tensor_pb2, worker_pb2
from services.worker.core.inbox import Inbox
from services.worker.core.ring import HopTable, RingTable
from services.worker.lanes import receive
from services.worker.statuses import HopError


def _activation(session: str, key: str, data: bytes, epoch: int = 1) -> worker_pb2.LaneRow:
    return worker_pb2.LaneRow(
        session_id=session, deployment="d", epoch=epoch, key=key, activation=tensor_pb2.TensorChunk(data=data)
    )


def _reply(session: str, key: str, token: int) -> worker_pb2.LaneRow:
    reply = worker_pb2.ForwardResponse(token=worker_pb2.TokenOutput(token_id=token))
    return worker_pb2.LaneRow(session_id=session, deployment="d", epoch=1, key=key, reply=reply)


async def _messages(*messages: worker_pb2.LaneMessage, then: asyncio.Event | None = None):
    for message in messages:
        yield message
    if then is not None:  # the lane stays open until cancelled
        await then.wait()


def test_rows_land_in_their_sessions_inboxes_only_with_their_keys():
    async def run():
        hops, ring = HopTable(), RingTable()
        a, b, first = Inbox(), Inbox(), Inbox()
        key_a = hops.open("a", "d", 1, a).key
        key_b = hops.open("b", "d", 1, b).key
        ring_key = ring.open("c", "d", 1, first).key
        message = worker_pb2.LaneMessage(
            rows=[
                _activation("a", key_a, b"one"),
                _activation("b", key_a, b"forged"),  # a's key on b's row: dropped
                _activation("b", key_b, b"two"),
                _activation("x", key_b, b"nobody"),  # no such session: dropped
                _activation("a", key_a, b"stale", epoch=2),  # another epoch: dropped
                _reply("c", ring_key, 42),
                _reply("c", "0" * 32, 43),  # a wrong ring key: dropped
            ]
        )
        ack = await receive(_messages(message), hops, ring)
        assert isinstance(ack, worker_pb2.LaneAck)
        got_a = await a.get(1, "row")
        got_b = await b.get(1, "row")
        assert got_a.activation.data == b"one" and got_b.activation.data == b"two"
        assert (await first.get(1, "reply")).token.token_id == 42
        for inbox in (a, b, first):  # nothing else landed
            with pytest.raises(TimeoutError):
                await inbox.get(0.02, "row")

    asyncio.run(run())


def test_a_lost_lane_fails_the_sessions_it_fed_and_no_other():
    async def run():
        hops, ring = HopTable(), RingTable()
        fed, other = Inbox(), Inbox()
        key = hops.open("a", "d", 1, fed).key
        hops.open("b", "d", 1, other)
        lane = asyncio.ensure_future(
            receive(
                _messages(worker_pb2.LaneMessage(rows=[_activation("a", key, b"x")]), then=asyncio.Event()),
                hops,
                ring,
            )
        )
        assert (await fed.get(1, "row")).activation.data == b"x"
        lane.cancel()  # the sending worker's connection broke
        with pytest.raises(asyncio.CancelledError):
            await lane
        with pytest.raises(HopError) as lost:
            await fed.get(1, "row")
        assert lost.value.code == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(TimeoutError):
            await other.get(0.02, "row")

    asyncio.run(run())
