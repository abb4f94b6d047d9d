"""Streams to the next hop: one shared channel per address, one stream per session.

A downstream refusal becomes a :class:`HopError` carrying the status code, so
the hop above can pass it to its own caller unchanged, prefixed with where it
happened.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from resplit.rpc.channels import aio_channel
from resplit.v1 import worker_pb2, worker_pb2_grpc

#: How long closing a stream waits for a relayed token copy still on its way.
CLOSE_DRAIN_S = 1.0


class HopError(Exception):
    """A downstream hop refused; carries its status so we can pass it on."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Channels:
    """One channel per downstream address, shared by every session's stream."""

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


class Downstream:
    """This session's stream to the next hop."""

    def __init__(
        self, stub: worker_pb2_grpc.WorkerServiceStub, address: str, units: tuple[int, int], node_id: str = ""
    ) -> None:
        self.address = address
        self.units = units
        self.node_id = node_id
        self.call = stub.Forward()
        #: The route's head runs in this worker: its tokens may come from here (core/shortcut.py).
        self.local_head = False
        #: The last step whose token came from here; the copy the next hop relays is dropped.
        self.delivered_step = -1
        #: The newest epoch those dropped copies reported, passed on with the next token.
        self.relayed_epoch = 0
        self._reading: asyncio.Future[worker_pb2.ForwardResponse] | None = None

    async def write(self, message: worker_pb2.ForwardRequest) -> None:
        try:
            await self.call.write(message)
        except grpc.aio.AioRpcError as exc:
            raise self._hop_error(exc) from None
        except asyncio.InvalidStateError:
            raise await self._failed() from None

    async def read(self) -> worker_pb2.ForwardResponse:
        if self._reading is not None:  # a read read_or stopped waiting for
            reading, self._reading = self._reading, None
            return await reading
        return await self._receive()

    async def _receive(self) -> worker_pb2.ForwardResponse:
        try:
            message = await self.call.read()
        except grpc.aio.AioRpcError as exc:
            raise self._hop_error(exc) from None
        if message is grpc.aio.EOF:
            raise await self._failed()
        return message

    async def read_or(self, waiter: asyncio.Future) -> worker_pb2.ForwardResponse | None:
        """The next reply, or None when ``waiter`` is done first: the read then stays in
        flight and its reply is the next call's (or :meth:`read`'s) result."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._receive())
        reading = self._reading
        await asyncio.wait((reading, waiter), return_when=asyncio.FIRST_COMPLETED)
        if not reading.done():
            return None
        self._reading = None
        return reading.result()

    async def _failed(self) -> HopError:
        code = await self.call.code()
        details = await self.call.details()
        return HopError(
            code or grpc.StatusCode.UNAVAILABLE, f"next hop {self.address}: {details or 'stream ended'}"
        )

    def _hop_error(self, exc: grpc.aio.AioRpcError) -> HopError:
        details = exc.details() or ""
        prefix = "" if details.startswith("next hop") else f"next hop {self.address}: "
        return HopError(exc.code(), prefix + details)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.call.done_writing()
        reading, self._reading = self._reading, None
        if reading is not None:
            # The copy of a token taken from here is still on its way: let the next hop
            # finish relaying it (bounded) rather than fail its write by cancelling.
            await asyncio.wait([reading], timeout=CLOSE_DRAIN_S)
            reading.cancel()
            reading.add_done_callback(_retrieve)
        self.call.cancel()


def _retrieve(reading: asyncio.Future) -> None:
    """Read an abandoned read's outcome, so that asyncio does not log its error as lost."""
    if not reading.cancelled():
        reading.exception()
