"""Where a step's torch work runs: the compute thread, or inline on the event loop.

Steps run one at a time on the compute thread, which holds the process's one
OpenMP team (see core/threads.py) and gives a step the intra-op threads its
size calls for; a lone session's single-threaded decode step runs on the event
loop's thread instead (:func:`runs_inline`), saving the two thread handoffs.
Each step is timed where it runs (queueing excluded) for the node agent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import Counter

from .core.metrics import ComputeTimes
from .core.sessions import SessionTable
from .core.threads import StepThreads, dedicate_threads, runs_inline

STEPS = Counter(
    "resplit_worker_steps_total",
    "Sessions' segment steps run (a batched forward counts each of its rows), by the thread that ran them",
    ["thread"],
)
_ON_LOOP, _ON_COMPUTE = STEPS.labels("loop"), STEPS.labels("compute")


class Compute:
    """The worker's compute thread and the choice of where each step runs."""

    def __init__(
        self, threads: int, decode_threads: int, inline_decode: bool, sessions: SessionTable
    ) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="compute")
        threads = dedicate_threads(self._executor, threads)
        self.threads = threads
        self.step_threads = StepThreads(threads, decode_threads or threads)
        self.inline_decode = inline_decode
        self.sessions = sessions
        self.times = ComputeTimes()

    def queued(self) -> int:
        """Steps waiting for the compute thread (the agent's load signal)."""
        return self._executor._work_queue.qsize()

    async def __call__(
        self,
        fn: Callable[[], Any],
        segment: str = "all",
        tokens: int = 0,
        session_steps: int = 1,
        deployment: str = "",
    ) -> Any:
        """Run one step's torch work; ``segment`` ("start-end") labels its time,
        ``tokens`` is the step's new tokens in all, ``session_steps`` the sessions' steps it runs
        (a batched forward runs several); ``deployment`` also counts it as that deployment's load."""
        owner = f"{deployment}/{segment}" if deployment else ""
        times, steps = self.times, self.step_threads
        inline = self.inline_decode and runs_inline(
            steps, tokens, sessions=self.sessions.clients(), in_flight=times.in_flight
        )

        def timed():
            if not inline:
                steps.use(tokens)
            start = time.perf_counter()
            try:
                return fn()
            finally:
                times.record(segment, (time.perf_counter() - start) * 1000, owner)

        (_ON_LOOP if inline else _ON_COMPUTE).inc(session_steps)
        times.in_flight += 1
        try:
            if inline:
                return timed()
            return await asyncio.get_running_loop().run_in_executor(self._executor, timed)
        finally:
            times.in_flight -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
