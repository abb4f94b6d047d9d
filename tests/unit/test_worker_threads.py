"""The worker's compute thread keeps its intra-op threads; every other thread gets one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from services.worker.core.threads import dedicate_threads


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
