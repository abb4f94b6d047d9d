"""The control loop ends on stop() even when a cycle swallowed the cancel (seen: an
orchestrator whose loop kept cycling after its shutdown, until the launcher's SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

from services.orchestrator.loop import ControlLoop


def test_the_control_loop_ends_on_a_cancel_a_cycle_swallowed():
    async def main() -> int:
        loop = ControlLoop.__new__(ControlLoop)
        loop._woken = asyncio.Event()
        loop._due = {}
        loop.settings = SimpleNamespace(control_interval_floor_s=0.01)
        ticks = [0]

        async def tick() -> None:  # a cycle whose client library eats the cancel it is sent
            ticks[0] += 1
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

        loop.tick = tick
        task = asyncio.ensure_future(loop.run())
        await asyncio.sleep(0.02)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2.0)
        assert done, f"the loop outlived its cancel ({ticks[0]} ticks)"
        assert task.cancelled()
        return ticks[0]

    assert asyncio.run(main()) <= 2
