"""Lanes: one stream from this worker to each other worker, for every session's steps.

A session still opens on each hop with its own Forward stream, which confirms
it (with the key its lane rows must carry) and ends it with a status; the
steps' activations, and the head hop's replies to the first hop, travel on
the lane between the two workers, as rows of messages (core/coalesce.py: what
one batched step produced leaves as one message). On the receiving side each
row goes into its session's inbox, as if its own stream had brought it.

A row whose session is not (or no longer) here is dropped: the session's end
has already reached its sender by its Forward stream (or its first hop, by
the route's streams). A row whose key is wrong is dropped and logged. A lane
that breaks fails the steps of every session whose rows it brought, at once,
and the sender's next row opens a new lane.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

import grpc
from prometheus_client import Counter

from resplit.v1 import worker_pb2, worker_pb2_grpc

from .core.coalesce import Coalescer
from .core.errors import NotHosted, NotTrusted
from .core.inbox import Inbox
from .core.ring import HopTable, RingTable
from .statuses import HopError

log = logging.getLogger(__name__)

MESSAGES_SENT = Counter(
    "resplit_worker_messages_sent_total",
    "Data-plane messages this worker sent to other workers on its lanes (one carries the rows "
    "of many sessions; a reply handed over in-process is no message)",
)
LANE_ROWS = Counter(
    "resplit_worker_lane_rows_total",
    "Sessions' rows this worker sent on its lanes, by kind: an activation chunk down a route, "
    "or a head hop's reply to a first hop; with resplit_worker_messages_sent_total, how many "
    "rows a message carries",
    ["kind"],
)
DROPPED = Counter(
    "resplit_worker_lane_rows_dropped_total",
    "Lane rows received for no session open here (ended meanwhile) or with a wrong key",
    ["why"],
)
_GONE, _KEY = DROPPED.labels("no session"), DROPPED.labels("wrong key")


class Lane:
    """This worker's stream to one other worker, and its writer."""

    def __init__(self, stub: worker_pb2_grpc.WorkerServiceStub, address: str, max_bytes: int) -> None:
        self.address = address
        self._call = stub.Lane()
        self.rows = Coalescer[worker_pb2.LaneRow](self._write, max_bytes)
        # A lane that ends (the other worker restarted, the connection broke) is replaced at
        # the next row, not found broken by it: a session's step would fail on a lane it
        # never used.
        self._call.add_done_callback(self._ended)

    def _ended(self, _call: object) -> None:
        self.rows.fail(HopError(grpc.StatusCode.UNAVAILABLE, f"lane to {self.address}: ended"))

    async def _write(self, rows: list[worker_pb2.LaneRow]) -> None:
        try:
            await self._call.write(worker_pb2.LaneMessage(rows=rows))
            MESSAGES_SENT.inc()
            for row in rows:
                LANE_ROWS.labels(row.WhichOneof("kind") or "none").inc()
        except grpc.aio.AioRpcError as exc:
            raise HopError(exc.code(), f"lane to {self.address}: {exc.details()}") from None
        except asyncio.InvalidStateError:
            details = await self._call.details() or "ended"
            raise HopError(grpc.StatusCode.UNAVAILABLE, f"lane to {self.address}: {details}") from None

    async def send(self, row: worker_pb2.LaneRow, size: int) -> None:
        """``row`` in the lane's next message. A failure is the lane's one HopError instance:
        each caller raises its own, prefixed with where it happened (streams.py)."""
        await self.rows.send(row, size)

    def close(self) -> None:
        self.rows.fail(HopError(grpc.StatusCode.UNAVAILABLE, f"lane to {self.address}: closed"))
        self._call.cancel()


class Lanes:
    """The lanes to other workers, by address (one each, opened at first use)."""

    def __init__(self, stub_for: Any, max_bytes: int) -> None:
        self._stub_for = stub_for
        self.max_bytes = max_bytes
        self._lanes: dict[str, Lane] = {}

    def to(self, address: str) -> Lane:
        """The lane to ``address``: a new one when there is none or the last one broke."""
        lane = self._lanes.get(address)
        if lane is None or lane.rows.failed is not None:
            if lane is not None:
                lane.close()
            lane = self._lanes[address] = Lane(self._stub_for(address), address, self.max_bytes)
        return lane

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.close()
        self._lanes.clear()


async def receive(
    messages: AsyncIterator[worker_pb2.LaneMessage], hops: HopTable, ring: RingTable
) -> worker_pb2.LaneAck:
    """Another worker's lane: each row into its session's inbox here (``hops``: sessions
    whose next step's activation comes from that worker; ``ring``: sessions whose first hop
    runs here, waiting for their head hop's replies). Its loss fails the step of every
    session it brought rows to that is still waiting here."""
    fed: weakref.WeakSet[Inbox[Any, Any]] = weakref.WeakSet()
    try:
        async for message in messages:
            for row in message.rows:
                kind = row.WhichOneof("kind")
                table = ring if kind == "reply" else hops
                try:
                    slot = table.find(row.session_id, row.deployment, row.epoch, row.key)
                except NotTrusted as exc:
                    _KEY.inc()
                    log.warning("lane row dropped: %s", exc)
                    continue
                except NotHosted:
                    _GONE.inc()
                    continue
                if kind == "reply":
                    slot.inbox.put(row.reply)
                elif kind == "activation":
                    slot.inbox.put(worker_pb2.ForwardRequest(activation=row.activation))
                else:  # neither: nothing for the session
                    continue
                fed.add(slot.inbox)
    except asyncio.CancelledError:
        lost = HopError(grpc.StatusCode.UNAVAILABLE, "the lane from a hop of this session was lost")
        for inbox in list(fed):
            inbox.fail(lost)
        raise
    return worker_pb2.LaneAck()
