"""Streams to other hops: one shared channel per address, one stream per session.

A hop holds at most two streams of its own for a session: the Forward stream
to the next hop (activations go down it; the next hop only confirms the
session and, when it refuses or is lost, ends the stream with a status) and,
on the head hop, the Return stream that closes the ring to the first hop.
Either one's failure becomes a :class:`HopError` carrying the status code,
so the hop above passes it to its own caller unchanged, prefixed with where
it happened.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc

from resplit.core.limits import SESSION_METADATA_KEY
from resplit.rpc.channels import aio_channel
from resplit.v1 import worker_pb2, worker_pb2_grpc

from .core.inbox import Inbox
from .core.ring import Slot
from .statuses import HopError

#: How long a head hop's closed Return stream may take to deliver what it holds.
RETURN_DRAIN_S = 2.0


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
    ) -> None:
        self.address = address
        self.units = units
        self.node_id = node_id
        # The session in the metadata: a full next hop refuses it before its handler runs.
        self.call = stub.Forward(metadata=((SESSION_METADATA_KEY, session_id),) if session_id else None)
        self._watch: asyncio.Task[None] | None = None

    async def open(self, request: worker_pb2.ForwardRequest) -> None:
        """Send the session's open message and wait for the next hop to confirm it."""
        await self.write(request)
        reply = await self._read()
        if not reply.HasField("opened"):
            raise HopError(grpc.StatusCode.INTERNAL, f"next hop {self.address} did not confirm the session")

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

    In-process (``slot``) when the first hop runs in this worker; else a Return
    stream whose first message attaches it to the first hop's slot."""

    def __init__(self, identity: worker_pb2.ReturnMessage, address: str, slot: Slot | None = None) -> None:
        self.identity = identity
        self.address = address
        self.slot = slot
        self.call: Any = None
        #: The attach message's write, awaited before the first reply's.
        self._pending: asyncio.Future[None] | None = None

    def connect(self, stub: worker_pb2_grpc.WorkerServiceStub) -> None:
        """Open the Return stream (a remote first hop); nothing waits for it here: the
        first write finds out whether the first hop took it."""
        self.call = stub.Return()
        self._pending = asyncio.ensure_future(self.call.write(self.identity))

    @property
    def local(self) -> bool:
        """The first hop runs in this worker: replies are handed over, not sent."""
        return self.slot is not None

    async def send(self, reply: worker_pb2.ForwardResponse) -> None:
        if self.slot is not None:
            self.slot.inbox.put(reply)
            return
        message = worker_pb2.ReturnMessage(reply=reply)
        try:
            if self._pending is not None:
                pending, self._pending = self._pending, None
                await pending
            await self.call.write(message)
        except grpc.aio.AioRpcError as exc:
            raise _hop_error(exc, f"first hop {self.address} (ring)") from None
        except asyncio.InvalidStateError:
            code, details = await self.call.code(), await self.call.details()
            raise HopError(
                code or grpc.StatusCode.UNAVAILABLE, f"first hop {self.address} (ring): {details or 'ended'}"
            ) from None

    async def close(self) -> None:
        """End the stream once what it holds is delivered (bounded), never cutting a reply short."""
        call, self.call = self.call, None
        if call is None:
            return
        with contextlib.suppress(Exception):
            if self._pending is not None:
                await self._pending
            await call.done_writing()
            await asyncio.wait_for(call, RETURN_DRAIN_S)
        call.cancel()
