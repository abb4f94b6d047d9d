"""`resplit up` gives workers short of cores on a shared host one decode thread each
when they run torch's kernels; on the native kernels every worker decodes with all."""

from __future__ import annotations

from resplit.launcher.stack import host_cores, shared_host_worker_args

TORCH = {"RESPLIT_NATIVE_KERNELS": "0"}


def test_workers_short_of_cores_on_torch_kernels_decode_with_one_thread_each():
    assert shared_host_worker_args(3, 2, [], TORCH) == ["--decode-threads", "1"]
    assert shared_host_worker_args(3, 5, [], TORCH) == ["--decode-threads", "1"]
    assert shared_host_worker_args(2, 3, ["--max-tokens", "64"], TORCH) == ["--decode-threads", "1"]


def test_workers_on_the_native_kernels_decode_with_all_cores_even_when_short_of_them():
    # one session through 3 workers on 2 cores: 1.2-1.5x the tokens/s of one thread each
    assert shared_host_worker_args(3, 2, [], {}) == []
    assert shared_host_worker_args(3, 2, [], {"RESPLIT_NATIVE_KERNELS": "1"}) == []


def test_workers_with_two_cores_each_or_more_decode_with_all_of_them():
    # A third of 16 cores decoded 1.4x slower than all 16: not memory-bound there.
    assert shared_host_worker_args(3, 6, [], TORCH) == []
    assert shared_host_worker_args(3, 16, [], TORCH) == []
    assert shared_host_worker_args(2, 8, ["--max-tokens", "64"], TORCH) == []


def test_a_lone_worker_or_a_choice_already_made_is_left_alone():
    assert shared_host_worker_args(1, 2, [], TORCH) == []
    assert shared_host_worker_args(3, 2, ["--decode-threads", "2"], TORCH) == []
    assert shared_host_worker_args(3, 2, ["--decode-threads=2"], TORCH) == []
    assert shared_host_worker_args(3, 2, [], {"RESPLIT_DECODE_THREADS": "2", **TORCH}) == []


def test_host_cores_counts_what_this_process_may_run_on():
    assert host_cores() >= 1
