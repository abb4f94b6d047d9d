"""`resplit up` gives workers short of cores on a shared host one decode thread each."""

from __future__ import annotations

from resplit.launcher.stack import host_cores, shared_host_worker_args


def test_workers_short_of_cores_decode_with_one_thread_each():
    assert shared_host_worker_args(3, 2, [], {}) == ["--decode-threads", "1"]
    assert shared_host_worker_args(3, 5, [], {}) == ["--decode-threads", "1"]
    assert shared_host_worker_args(2, 3, ["--max-tokens", "64"], {}) == ["--decode-threads", "1"]


def test_workers_with_two_cores_each_or_more_decode_with_all_of_them():
    # A third of 16 cores decoded 1.4x slower than all 16: not memory-bound there.
    assert shared_host_worker_args(3, 6, [], {}) == []
    assert shared_host_worker_args(3, 16, [], {}) == []
    assert shared_host_worker_args(2, 8, ["--max-tokens", "64"], {}) == []


def test_a_lone_worker_or_a_choice_already_made_is_left_alone():
    assert shared_host_worker_args(1, 2, [], {}) == []
    assert shared_host_worker_args(3, 2, ["--decode-threads", "2"], {}) == []
    assert shared_host_worker_args(3, 2, ["--decode-threads=2"], {}) == []
    assert shared_host_worker_args(3, 2, [], {"RESPLIT_DECODE_THREADS": "2"}) == []


def test_host_cores_counts_what_this_process_may_run_on():
    assert host_cores() >= 1
