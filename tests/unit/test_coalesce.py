"""The lane's writer: rows sent in one turn of the loop leave as one message (core/coalesce.py)."""

from __future__ import annotations

import asyncio

import pytest

from services.worker.core.coalesce import Coalescer


class Wire:
    """Records each message written; ``hold`` keeps the next write open until released."""

    def __init__(self) -> None:
        self.messages: list[list[str]] = []
        self.hold: asyncio.Event | None = None
        self.error: Exception | None = None

    async def write(self, rows: list[str]) -> None:
        if self.hold is not None:
            await self.hold.wait()
        if self.error is not None:
            raise self.error
        self.messages.append(rows)


def test_rows_sent_in_one_turn_leave_as_one_message():
    async def main():
        wire = Wire()
        lane = Coalescer(wire.write, max_bytes=1 << 20)
        await asyncio.gather(*(lane.send(f"row{i}", 100) for i in range(16)))
        return wire.messages, lane.messages, lane.rows

    messages, count, rows = asyncio.run(main())
    assert messages == [[f"row{i}" for i in range(16)]]
    assert (count, rows) == (1, 16)


def test_a_lone_row_leaves_without_waiting_for_company():
    async def main():
        wire = Wire()
        lane = Coalescer(wire.write, max_bytes=1 << 20)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await lane.send("alone", 10)
        return wire.messages, loop.time() - began

    messages, took = asyncio.run(main())
    assert messages == [["alone"]]
    assert took < 0.05  # no timer: the next turn of the loop


def test_rows_sent_while_a_write_is_held_gather_for_the_next_message():
    async def main():
        wire = Wire()
        wire.hold = asyncio.Event()
        lane = Coalescer(wire.write, max_bytes=1 << 20)
        first = asyncio.ensure_future(lane.send("a", 1))
        await asyncio.sleep(0.01)  # "a" is being written, held
        later = [asyncio.ensure_future(lane.send(x, 1)) for x in "bcd"]
        await asyncio.sleep(0.01)
        assert lane.waiting == 3 and not first.done()
        wire.hold.set()
        await asyncio.gather(first, *later)
        return wire.messages

    assert asyncio.run(main()) == [["a"], ["b", "c", "d"]]


def test_a_message_holds_at_most_max_bytes_of_rows_and_always_one():
    async def main():
        wire = Wire()
        lane = Coalescer(wire.write, max_bytes=250)
        await asyncio.gather(lane.send("big", 1000), *(lane.send(f"r{i}", 100) for i in range(5)))
        return wire.messages

    assert asyncio.run(main()) == [["big"], ["r0", "r1"], ["r2", "r3"], ["r4"]]


def test_a_failed_write_fails_its_rows_and_every_later_send():
    async def main():
        wire = Wire()
        wire.error = ConnectionError("peer gone")
        lane = Coalescer(wire.write, max_bytes=1 << 20)
        results = await asyncio.gather(*(lane.send(x, 1) for x in "ab"), return_exceptions=True)
        with pytest.raises(ConnectionError):
            await lane.send("c", 1)
        return results, wire.messages

    results, messages = asyncio.run(main())
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert messages == []


def test_a_sender_cancelled_while_waiting_does_not_break_the_lane():
    async def main():
        wire = Wire()
        wire.hold = asyncio.Event()
        lane = Coalescer(wire.write, max_bytes=1 << 20)
        first = asyncio.ensure_future(lane.send("a", 1))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(lane.send("b", 1))
        await asyncio.sleep(0.01)
        gone.cancel()
        wire.hold.set()
        await first
        await lane.send("c", 1)
        return wire.messages, lane.failed

    messages, failed = asyncio.run(main())
    assert failed is None
    # "b" was gathered before its sender left: it still goes (its receiver drops what it
    # no longer waits for); the lane goes on
    assert messages == [["a"], ["b"], ["c"]]
