"""Streams to other hops: one shared channel per address, one stream per session.

A hop holds at most one stream of its own for a session: the Forward stream
to the next hop, which opens the session there (the next hop confirms it,
with the key for its lane rows) and, when the next hop refuses or is lost,
ends with a status. The session's activations, and the head hop's replies
that close the ring to the first hop, go on the lanes between the workers
(lanes.py). Every failure becomes a :class:`HopError` carrying the status
code, so the hop above passes it to its own caller unchanged, prefixed with
where it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from resplit.core.limits import SESSION_METADATA_KEY
from resplit.rpc.channels import aio_channel
from resplit.v1 import tensor_pb2, worker_pb2, worker_pb2_grpc

from .core.inbox import Inbox
from .core.ring import Slot
from .lanes import Lanes
from .statuses import HopError

#: What a lane row carries beside its tensor bytes (ids, key), counted against a message's size.
ROW_OVERHEAD_BYTES = 256


class Channels:
    """One channel per address of another worker, shared by every session's streams."""

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, address: str) -> worker_pb2_grpc.WorkerServiceStub:
        if address not in self._channels:
            self._channels[address] = aio_channel(address, self.max_message_bytes)
        return worker_pb2_grpc.WorkerServiceStub(self._channels[address])

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def _hop_error(exc: grpc.aio.AioRpcError, where: str) -> HopError:
    details = exc.details() or ""
    prefix = "" if details.startswith("next hop") else f"{where}: "
    return HopError(exc.code(), prefix + details)


class Downstream:
    """This session's Forward stream to the next hop."""

    def __init__(
        self,
        stub: worker_pb2_grpc.WorkerServiceStub,
        address: str,
        units: tuple[int, int],
        node_id: str = "",
        session_id: str = "",
        *,
        lanes: Lanes,
        slot: tuple[str, str, int],
    ) -> None:
        self.address = address
        self.units = units
        self.node_id = node_id
        self.lanes = lanes
        #: The session as the next hop knows it (id, deployment, epoch), and the key the next
        #: hop drew for its lane rows (set by :meth:`open`).
        self.slot = slot
        self.lane_key = ""
        # The session in the metadata: a full next hop refuses it before its handler runs.
        self.call = stub.Forward(metadata=((SESSION_METADATA_KEY, session_id),) if session_id else None)
        self._watch: asyncio.Task[None] | None = None

    async def open(self, request: worker_pb2.ForwardRequest) -> None:
        """Send the session's open message and wait for the next hop to confirm it."""
        await self.write(request)
        reply = await self._read()
        if not reply.HasField("opened") or not reply.opened.lane_key:
            raise HopError(grpc.StatusCode.INTERNAL, f"next hop {self.address} did not confirm the session")
        self.lane_key = reply.opened.lane_key

    async def send(self, chunk: tensor_pb2.TensorChunk) -> None:
        """A step's activation chunk to the next hop, on the lane to its worker."""
        session_id, deployment, epoch = self.slot
        row = worker_pb2.LaneRow(
            session_id=session_id, deployment=deployment, epoch=epoch, key=self.lane_key, activation=chunk
        )
        try:
            await self.lanes.to(self.address).send(row, len(chunk.data) + ROW_OVERHEAD_BYTES)
        except HopError as exc:
            raise HopError(exc.code, f"next hop {self.address}: {exc.details}") from None

    def watch(self, inbox: Inbox[Any, Any]) -> None:
        """From now on the next hop only ends the stream: its end goes to ``inbox`` as a
        failure, at once, whatever this hop is waiting for."""
        self._watch = asyncio.create_task(self._watched(inbox))

    async def _watched(self, inbox: Inbox[Any, Any]) -> None:
        try:
            reply = await self._read()
        except HopError as exc:
            inbox.fail(exc)
            return
        kind = reply.WhichOneof("kind")
        inbox.fail(HopError(grpc.StatusCode.INTERNAL, f"next hop {self.address} sent a {kind} reply"))

    async def write(self, message: worker_pb2.ForwardRequest) -> None:
        try:
            await self.call.write(message)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INTERNAL:
                # A write to a stream the next hop already ended: grpc.aio reports its own
                # INTERNAL ("Internal error from Core") and the hop's status is lost. The hop
                # went away or refused: UNAVAILABLE, which the client recovers from, as the SDK does.
                raise HopError(
                    grpc.StatusCode.UNAVAILABLE, f"next hop {self.address}: stream ended: {exc.details()}"
                ) from None
            raise _hop_error(exc, f"next hop {self.address}") from None
        except asyncio.InvalidStateError:
            raise await self._failed() from None

    async def _read(self) -> worker_pb2.ForwardResponse:
        try:
            message = await self.call.read()
        except grpc.aio.AioRpcError as exc:
            raise _hop_error(exc, f"next hop {self.address}") from None
        if message is grpc.aio.EOF:
            raise await self._failed()
        return message

    async def _failed(self) -> HopError:
        code = await self.call.code()
        details = await self.call.details()
        return HopError(
            code or grpc.StatusCode.UNAVAILABLE, f"next hop {self.address}: {details or 'stream ended'}"
        )

    async def close(self) -> None:
        if self._watch is not None:  # our own close is no failure of the next hop
            self._watch.cancel()
        with contextlib.suppress(Exception):
            await self.call.done_writing()
        self.call.cancel()


class ReturnLink:
    """The head hop's end of the ring: its replies for one session, to the first hop.

    In-process (``slot``) when the first hop runs in this worker; else rows on
    the lane to the first hop's worker, each carrying the session's ring key."""

    def __init__(self, identity: worker_pb2.LaneRow, address: str, slot: Slot | None, lanes: Lanes) -> None:
        self.identity = identity
        self.address = address
        self.slot = slot
        self.lanes = lanes

    @property
    def local(self) -> bool:
        """The first hop runs in this worker: replies are handed over, not sent."""
        return self.slot is not None

    async def send(self, reply: worker_pb2.ForwardResponse) -> None:
        if self.slot is not None:
            self.slot.inbox.put(reply)
            return
        row = worker_pb2.LaneRow()
        row.CopyFrom(self.identity)
        row.reply.CopyFrom(reply)
        try:
            await self.lanes.to(self.address).send(row, row.ByteSize())
        except HopError as exc:
            raise HopError(exc.code, f"first hop {self.address} (ring): {exc.details}") from None
