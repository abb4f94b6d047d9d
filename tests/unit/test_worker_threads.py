"""The worker's compute thread keeps its intra-op threads; every other thread gets one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from services.worker.core.threads import StepThreads, dedicate_threads


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
