"""The worker's iteration-level batching (services/worker/core/batch.py) with a fake forward."""

from __future__ import annotations

import asyncio

import pytest

from services.worker.core.batch import Batcher


class _Forward:
    """Records each batch; while ``hold`` is set a batch takes until the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.hold = False
        self.release: asyncio.Event = asyncio.Event()

    async def __call__(self, key, items: list[str]) -> list:
        self.batches.append(list(items))
        if self.hold:
            await self.release.wait()
        return [ValueError(f"bad row {i}") if i.startswith("bad") else f"{key}:{i}" for i in items]


def test_a_lone_step_runs_at_once_and_steps_that_arrive_meanwhile_run_as_the_next_batch():
    async def run():
        forward = _Forward()
        batcher = Batcher(forward, max_rows=3)
        assert await batcher.submit("seg", "a") == "seg:a"  # alone: no waiting for company
        forward.batches.clear()
        forward.hold = True

        first = asyncio.create_task(batcher.submit("seg", "b"))
        await asyncio.sleep(0)
        later = [asyncio.create_task(batcher.submit("seg", x)) for x in ("c", "d", "bad-e", "f")]
        other = asyncio.create_task(batcher.submit("other", "g"))  # another segment: its own batches
        await asyncio.sleep(0.01)
        assert batcher.waiting() == 4
        forward.release.set()
        assert await first == "seg:b"
        assert await other == "other:g"
        results = await asyncio.gather(*later, return_exceptions=True)
        assert results[:2] == ["seg:c", "seg:d"] and results[3] == "seg:f"
        assert isinstance(results[2], ValueError)  # a bad row fails its own step only
        # b ran alone; g on its own key; then c, d, bad-e (max_rows 3), then f
        assert sorted(forward.batches) == sorted([["b"], ["g"], ["c", "d", "bad-e"], ["f"]])
        assert forward.batches.index(["c", "d", "bad-e"]) < forward.batches.index(["f"])
        assert batcher.waiting() == 0

    asyncio.run(run())


def test_a_cancelled_step_leaves_its_segment_serving():
    async def run():
        forward = _Forward()
        batcher = Batcher(forward)
        forward.hold = True
        leader = asyncio.create_task(batcher.submit("seg", "a"))
        await asyncio.sleep(0.01)
        waiting = asyncio.create_task(batcher.submit("seg", "b"))
        await asyncio.sleep(0.01)
        leader.cancel()  # its session went away mid-step
        with pytest.raises(asyncio.CancelledError):
            await leader
        forward.release.set()
        assert await waiting == "seg:b"
        assert await batcher.submit("seg", "c") == "seg:c"

    asyncio.run(run())


def test_max_rows_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Batcher(_Forward(), max_rows=0)


def test_a_step_whose_session_went_away_while_waiting_is_not_run():
    async def run():
        forward = _Forward()
        batcher = Batcher(forward)
        forward.hold = True
        leader = asyncio.create_task(batcher.submit("seg", "a"))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(batcher.submit("seg", "b"))
        stays = asyncio.create_task(batcher.submit("seg", "c"))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0)
        forward.release.set()
        assert (await leader, await stays) == ("seg:a", "seg:c")
        assert forward.batches == [["a"], ["c"]]

    asyncio.run(run())
