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
