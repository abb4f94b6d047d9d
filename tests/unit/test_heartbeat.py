"""The worker's registration schedule, with in-memory stand-ins for the registry."""

from __future__ import annotations

import asyncio

import pytest

from services.worker.core.heartbeat import Heartbeat


class Registry:
    """An in-memory registry that can forget nodes and go offline."""

    def __init__(self) -> None:
        self.known = False
        self.online = True
        self.registrations = 0
        self.beats = 0

    async def register(self) -> None:
        if not self.online:
            raise ConnectionError("registry offline")
        self.known = True
        self.registrations += 1

    async def beat(self) -> bool:
        if not self.online:
            raise ConnectionError("registry offline")
        self.beats += 1
        return self.known


async def test_registers_first_then_only_beats():
    registry = Registry()
    hb = Heartbeat(registry.register, registry.beat, interval_s=0.01)
    for _ in range(3):
        await hb.tick()
    assert (registry.registrations, registry.beats, hb.registered) == (1, 2, True)


async def test_registers_again_when_the_registry_forgot_the_node():
    registry = Registry()
    hb = Heartbeat(registry.register, registry.beat, interval_s=0.01)
    await hb.tick()
    registry.known = False  # e.g. Redis restarted empty
    await hb.tick()
    assert registry.registrations == 2 and hb.registrations == 2


async def test_run_backs_off_while_offline_and_recovers():
    registry = Registry()
    registry.online = False
    hb = Heartbeat(registry.register, registry.beat, interval_s=0.01, max_backoff_s=0.05)
    task = asyncio.create_task(hb.run())
    await asyncio.sleep(0.15)
    assert not hb.registered and "offline" in hb.last_error
    registry.online = True
    for _ in range(100):
        if hb.registered:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hb.registered and hb.last_error == ""


def test_retries_start_small_and_never_wait_longer_than_an_interval():
    """A registry back after an outage gets the node again within one interval, however
    long the outage: the control loop's grace for re-registering relies on it."""
    hb = Heartbeat(lambda: None, lambda: None, interval_s=1.0, max_backoff_s=5.0)
    delays = hb.retry_delays()
    assert [next(delays) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    short = Heartbeat(lambda: None, lambda: None, interval_s=0.05).retry_delays()
    assert [next(short) for _ in range(3)] == [0.05, 0.05, 0.05]


def test_a_cancel_that_a_timeout_swallowed_still_ends_the_loop():
    """Python 3.11's wait_for can turn a cancel into TimeoutError as its timeout fires; the
    loop catches Exception and would tick on past its cancel() (a worker's stop then
    waited for it until SIGKILL). Here a beat consumes the cancel and raises TimeoutError,
    as that race does: the loop must end cancelled all the same."""

    async def run() -> bool:
        async def register() -> None:
            pass

        async def beat() -> bool:
            task = asyncio.current_task()
            assert task is not None
            if task.cancelling():
                return True
            task.cancel()
            try:
                await asyncio.sleep(0)  # the cancel is delivered here and consumed...
            except asyncio.CancelledError:
                raise TimeoutError("a wait_for timed out as it was cancelled") from None  # ...in disguise
            return True

        loop = asyncio.create_task(Heartbeat(register, beat, interval_s=0.01).run())
        try:
            async with asyncio.timeout(2):
                await loop
        except asyncio.CancelledError:
            return loop.cancelled()
        return False

    assert asyncio.run(run())
