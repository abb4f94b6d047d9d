"""One OpenMP team per worker process: the compute thread's.

torch keeps its intra-op thread count per calling thread (OpenMP's nthreads is a
per-thread setting, read by each thread the first time it runs a parallel
kernel). If the event loop, the loader or a migration ever ran a parallel kernel
with the default count, libgomp would manage a second team, and once it manages
more threads than there are cores it stops letting idle threads spin: every
kernel of every later step then waits for a sleeping thread to wake (decode 1.2x
slower in a measurement on 2 cores). So the compute thread gets the worker's
threads and every other thread, present or future, gets one.
"""

from __future__ import annotations

from concurrent.futures import Executor

import torch


def _claim(threads: int) -> int:
    torch.set_num_threads(threads)
    return torch.get_num_threads()  # fixes this thread's count before the default changes


def dedicate_threads(compute: Executor, threads: int) -> int:
    """Give the thread behind ``compute`` (a one-thread executor) ``threads`` intra-op
    threads and every other thread one. Returns the compute thread's count."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    claimed = compute.submit(_claim, threads).result()
    torch.set_num_threads(1)
    return claimed


#: Steps with at most this many new tokens in all (rows x tokens) are memory-bound on a
#: CPU: each weight is read once and used this many times at most, well below the
#: arithmetic intensity at which fp32 kernels become compute-bound.
MEMORY_BOUND_TOKENS = 8


class StepThreads:
    """How many of the compute thread's intra-op threads a step uses: ``decode`` of them
    for a step of few new tokens (a decode step: one per sequence, in a small batch),
    all of them otherwise (a prefill).

    Such a step is a chain of matrix-vector products bound by memory bandwidth, which
    one or two cores may already saturate; a prefill is compute-bound and wants every
    core. Where several workers share a host's cores (``resplit up``, a testbed), each
    decoding with all of them makes the threads of the worker that just finished a step
    stand in the way of the next hop's: fewer decode threads avoid that without slowing
    prefill down. Only the compute thread calls :meth:`use`.
    """

    def __init__(self, threads: int, decode: int) -> None:
        if threads < 1 or decode < 1:
            raise ValueError(f"threads must be at least 1, got {threads} and {decode} for decode")
        self.threads, self.decode = threads, min(decode, threads)
        self._current = threads

    def for_step(self, tokens: int) -> int:
        """Threads for a step of ``tokens`` new tokens in all (rows x tokens per row)."""
        return self.decode if 0 < tokens <= MEMORY_BOUND_TOKENS else self.threads

    def single_threaded(self, tokens: int) -> bool:
        """Whether a step of ``tokens`` is a decode step run on one intra-op thread: one
        that starts no OpenMP team, so any thread with one intra-op thread (every thread
        but the compute thread, see :func:`dedicate_threads`) runs it just as well."""
        return 0 < tokens <= MEMORY_BOUND_TOKENS and self.decode == 1

    def use(self, tokens: int) -> int:
        """Set this (the compute) thread's count for a step of ``tokens``; returns it."""
        wanted = self.for_step(tokens)
        if wanted != self._current:
            torch.set_num_threads(wanted)
            self._current = wanted
        return wanted


def runs_inline(steps: StepThreads, tokens: int, *, sessions: int, in_flight: int) -> bool:
    """Whether a step runs on the event loop's thread instead of the compute thread.

    Handing a step to the compute thread and its result back costs two thread
    wake-ups, paid on every hop of every token: on a host of few cores with
    co-located workers, a noticeable share of a split's overhead (see
    bench/pipeline_overhead.py). A step may skip them when it is single-threaded
    (:meth:`StepThreads.single_threaded`: no second OpenMP team), when nothing runs
    on the compute thread (steps stay one at a time), and when this worker serves
    one session (``sessions``: distinct session ids). The loop is blocked for the
    step, a decode step of one segment; with other sessions about, their messages
    must not wait behind it, so their steps and this one go to the compute thread.
    """
    return sessions <= 1 and in_flight == 0 and steps.single_threaded(tokens)
