"""`resplit up` gives workers that share a host a share of its cores for decode."""

from __future__ import annotations

from resplit.launcher.stack import host_cores, shared_host_worker_args


def test_co_located_workers_decode_with_their_share_of_the_cores():
    assert shared_host_worker_args(3, 2, [], {}) == ["--decode-threads", "1"]
    assert shared_host_worker_args(3, 16, [], {}) == ["--decode-threads", "5"]
    assert shared_host_worker_args(2, 8, ["--max-tokens", "64"], {}) == ["--decode-threads", "4"]


def test_a_lone_worker_or_a_choice_already_made_is_left_alone():
    assert shared_host_worker_args(1, 2, [], {}) == []
    assert shared_host_worker_args(3, 2, ["--decode-threads", "2"], {}) == []
    assert shared_host_worker_args(3, 2, ["--decode-threads=2"], {}) == []
    assert shared_host_worker_args(3, 2, [], {"RESPLIT_DECODE_THREADS": "2"}) == []


def test_host_cores_counts_what_this_process_may_run_on():
    assert host_cores() >= 1
