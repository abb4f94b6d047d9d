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


class _Timed(_Forward):
    """A forward that takes ``seconds`` (the segment's forward time the gather is bounded by)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def __call__(self, key, items: list[str]) -> list:
        await asyncio.sleep(self.seconds)
        return await super().__call__(key, items)


def _three_sessions(gather_s: float) -> list[list[str]]:
    """a, b and c decode 4 steps each, coming back 0, 5 and 10 ms after their step; the batches."""

    async def run():
        forward = _Timed(0.05)
        batcher = Batcher(forward, gather_s=gather_s)

        async def session(name: str, delay: float) -> None:
            for _ in range(4):
                await batcher.submit("seg", name, member=name)
                await asyncio.sleep(delay)  # its token goes round the ring / to its client

        await asyncio.gather(session("a", 0.0), session("b", 0.005), session("c", 0.01))
        return [sorted(b) for b in forward.batches]

    return asyncio.run(run())


def test_the_sessions_of_a_batch_run_together_again_though_they_come_back_one_by_one():
    """a starts alone (b and c are not members yet); from then on the three are one batch,
    until a is done. Without the gather the first to come back runs alone every time."""
    abc = ["a", "b", "c"]
    assert _three_sessions(5.0) == [["a"], abc, abc, abc, ["b", "c"]]
    apart = _three_sessions(0.0)
    assert len(apart) > 5 and abc not in apart, apart


def test_a_session_alone_never_waits_and_one_that_left_is_not_waited_for():
    async def run():
        forward = _Timed(0.01)
        batcher = Batcher(forward, gather_s=30.0)  # a wait would show as a test timeout
        for _ in range(3):
            assert await batcher.submit("seg", "a", member="a") == "seg:a"
        await asyncio.gather(batcher.submit("seg", "b", member="b"), batcher.submit("seg", "c", member="c"))
        batcher.leave("a")
        batcher.leave("c")
        async with asyncio.timeout(5):
            assert await batcher.submit("seg", "b", member="b") == "seg:b"

    asyncio.run(run())


def test_a_member_that_does_not_come_back_holds_a_batch_at_most_a_few_forwards():
    async def run():
        forward = _Timed(0.01)
        batcher = Batcher(forward, gather_s=30.0)
        await asyncio.gather(batcher.submit("seg", "a", member="a"), batcher.submit("seg", "b", member="b"))
        async with asyncio.timeout(5):  # bounded by 4 forwards (~0.04 s), not gather_s
            assert await batcher.submit("seg", "a", member="a") == "seg:a"

    asyncio.run(run())


def test_gather_must_not_be_negative():
    with pytest.raises(ValueError, match="gather_s"):
        Batcher(_Forward(), gather_s=-1)


def test_a_batch_takes_steps_up_to_its_cost_and_the_rest_run_next():
    """Prompts cost their tokens: a batch takes waiting steps in order while their cost fits
    (its first step always), the rest wait for the next batch."""

    async def run():
        forward = _Forward()
        batcher = Batcher(forward, max_rows=8, max_cost=10)
        forward.hold = True
        first = asyncio.create_task(batcher.submit("seg", "a", cost=1))
        await asyncio.sleep(0.01)
        costs = {"p6": 6, "p3": 3, "p4": 4, "d": 1, "huge": 50}
        rest = [asyncio.create_task(batcher.submit("seg", name, cost=c)) for name, c in costs.items()]
        await asyncio.sleep(0.01)
        forward.release.set()
        await asyncio.gather(first, *rest)
        return forward.batches

    assert asyncio.run(run()) == [["a"], ["p6", "p3"], ["p4", "d"], ["huge"]]


def test_generating_sessions_step_before_prompts_and_prompts_take_what_the_budget_leaves():
    """Decode steps (a member: a session generating) run first, whatever their arrival;
    prompts follow in arrival order within the cost bound (the first always)."""

    async def run():
        forward = _Forward()
        batcher = Batcher(forward, max_rows=8, max_cost=10, gather_s=0)
        forward.hold = True
        first = asyncio.create_task(batcher.submit("seg", "a", cost=1))
        await asyncio.sleep(0.01)
        steps = [("p6", None, 6), ("p5", None, 5), ("d1", "s1", 1), ("p2", None, 2), ("d2", "s2", 1)]
        rest = [asyncio.create_task(batcher.submit("seg", n, member=m, cost=c)) for n, m, c in steps]
        await asyncio.sleep(0.01)
        forward.release.set()
        await asyncio.gather(first, *rest)
        return forward.batches

    # d1, d2 (cost 2) jump the queue; p6 fits (8); p5 would not (13 > 10); p2 waits behind p5
    assert asyncio.run(run()) == [["a"], ["d1", "d2", "p6"], ["p5", "p2"]]


def test_a_full_batch_of_generating_sessions_leaves_a_waiting_prompt_one_row():
    async def run():
        forward = _Forward()
        batcher = Batcher(forward, max_rows=3, gather_s=0)
        forward.hold = True
        first = asyncio.create_task(batcher.submit("seg", "a"))
        await asyncio.sleep(0.01)
        steps = [("d1", "s1"), ("d2", "s2"), ("d3", "s3"), ("p", None)]
        rest = [asyncio.create_task(batcher.submit("seg", n, member=m)) for n, m in steps]
        await asyncio.sleep(0.01)
        forward.release.set()
        await asyncio.gather(first, *rest)
        return forward.batches

    assert asyncio.run(run()) == [["a"], ["d1", "d2", "p"], ["d3"]]


def test_each_batch_reports_how_long_it_waited_for_its_members():
    """The wait the worker's metrics show (resplit_worker_batch_gather_seconds): none for a
    session alone, about the bound (4 forwards) for a member that does not come back."""

    async def run():
        waits: list[float] = []
        forward = _Timed(0.01)
        batcher = Batcher(forward, gather_s=30.0, on_gather=waits.append)
        await batcher.submit("seg", "a", member="a")
        alone = list(waits)
        await asyncio.gather(batcher.submit("seg", "a", member="a"), batcher.submit("seg", "b", member="b"))
        waits.clear()
        await batcher.submit("seg", "a", member="a")  # b never comes back
        return alone, waits

    alone, missing = asyncio.run(run())
    assert alone == [pytest.approx(0, abs=0.005)]
    assert len(missing) == 1 and 0.02 <= missing[0] < 1.0, missing
