"""The worker's compute thread keeps its intra-op threads; every other thread gets one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from services.worker.core.threads import StepThreads, dedicate_threads, runs_inline


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _on_new_thread() -> int:
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_the_compute_thread_keeps_its_threads_and_the_rest_get_one(restore_threads):
    with ThreadPoolExecutor(1) as compute:
        assert dedicate_threads(compute, 3) == 3
        torch.mm(torch.randn(256, 256), torch.randn(256, 256))  # a parallel kernel elsewhere changes nothing
        assert compute.submit(torch.get_num_threads).result() == 3
        assert torch.get_num_threads() == 1
        assert _on_new_thread() == 1


def test_zero_threads_is_refused(restore_threads):
    with ThreadPoolExecutor(1) as compute, pytest.raises(ValueError, match="at least 1"):
        dedicate_threads(compute, 0)


def test_decode_steps_use_the_decode_threads_and_prefill_all(restore_threads):
    with ThreadPoolExecutor(1) as compute:
        dedicate_threads(compute, 2)
        steps = StepThreads(2, 1)
        counts = (12, 1, 8, 9, 1)  # new tokens in all: prefill, decode, a batch of 8 decoding, 9, decode
        seen = [compute.submit(lambda n=n: (steps.use(n), torch.get_num_threads())).result() for n in counts]
        assert seen == [(2, 2), (1, 1), (1, 1), (2, 2), (1, 1)]
        assert torch.get_num_threads() == 1  # other threads untouched


def test_decode_threads_never_exceed_the_compute_threads_and_zero_is_refused():
    assert StepThreads(2, 8).for_step(1) == 2
    assert StepThreads(4, 1).for_step(0) == 4  # a malformed step's count: whatever it is refused for
    with pytest.raises(ValueError, match="at least 1"):
        StepThreads(2, 0)


def test_only_single_threaded_decode_steps_count_as_single_threaded():
    assert StepThreads(2, 1).single_threaded(1)
    assert StepThreads(2, 1).single_threaded(8)  # a batch of 8 decoding: still memory-bound
    assert not StepThreads(2, 1).single_threaded(9)  # a prefill uses every thread
    assert not StepThreads(2, 1).single_threaded(0)
    assert not StepThreads(2, 2).single_threaded(1)  # two threads: an OpenMP team, the compute thread's
    assert not StepThreads(1, 1).single_threaded(128)  # one thread for everything, but a prefill is long


def test_a_step_runs_inline_only_alone_and_single_threaded():
    steps = StepThreads(2, 1)
    assert runs_inline(steps, 1, sessions=1, in_flight=0)
    assert not runs_inline(steps, 1, sessions=2, in_flight=0)  # other sessions' messages must not wait
    assert not runs_inline(steps, 1, sessions=1, in_flight=1)  # steps stay one at a time
    assert not runs_inline(steps, 16, sessions=1, in_flight=0)  # a prefill goes to the OpenMP team
    assert not runs_inline(StepThreads(4, 4), 1, sessions=1, in_flight=0)


def test_an_inline_step_uses_the_loop_threads_single_thread(restore_threads):
    """What makes running inline safe: after dedicate_threads, the calling thread decodes with
    one intra-op thread, as the compute thread does for a single-threaded decode step."""
    with ThreadPoolExecutor(1) as compute:
        dedicate_threads(compute, 2)
        steps = StepThreads(2, 1)
        assert compute.submit(lambda: steps.use(1)).result() == torch.get_num_threads() == 1
