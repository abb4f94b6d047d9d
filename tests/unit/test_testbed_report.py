"""The testbed's open-loop arrivals and its capacity figure: one arrival schedule shared by
all clients, and TTFT counted from each request's scheduled arrival, so a step the clients
could not keep up with does not pass as served within the SLA."""

from __future__ import annotations

import threading
from pathlib import Path

import yaml

from resplit.scenarios.testbed import load
from testbed.report import Summary
from testbed.run import Arrivals, Request, RunResult

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def _scenario(tmp_path, steps, step_s):
    data = yaml.safe_load((SCENARIOS / "testbed-smoke.yaml").read_text())
    data["model"]["dir"] = str(SCENARIOS / "models" / "llama-3-8b")
    data["duration_s"] = len(steps) * step_s
    data["workload"].update(steps=steps, step_s=step_s)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return load(path)


def _request(sent_s, ttft_ms, late_ms=0.0):
    return Request(0, 0, sent_s, 8, generated=4, ttft_ms=ttft_ms, tpot_ms=5.0, late_ms=late_ms)


def test_a_step_answered_fast_but_sent_late_is_past_capacity(tmp_path):
    scenario = _scenario(tmp_path, [1, 2, 4], 10.0)
    requests = [_request(t, 40.0) for t in range(0, 10)]  # step 1: on time, fast
    requests += [_request(10 + t / 2, 45.0, late_ms=5.0) for t in range(20)]  # step 2: 5 ms late
    requests += [_request(20 + t / 4, 50.0, late_ms=900.0) for t in range(40)]  # step 3: queued
    summary = Summary.of(RunResult(scenario, tmp_path, requests))
    step3 = summary.steps[2]
    assert step3["ttft_p95_ms"] == 50.0  # from the send it looks served within the SLA ...
    assert step3["arrival_ttft_p95_ms"] == 950.0  # ... not from when its user asked
    assert summary.capacity_rps == 2
    assert summary.capacity_tps == 20 * 4 / 10.0


def test_capacity_is_the_top_step_when_every_step_holds(tmp_path):
    scenario = _scenario(tmp_path, [1, 2], 10.0)
    requests = [_request(t / 2, 40.0) for t in range(40)]
    summary = Summary.of(RunResult(scenario, tmp_path, requests))
    assert [s["requests"] for s in summary.steps] == [20, 20]
    assert summary.capacity_rps == 2


def test_arrivals_are_one_schedule_whichever_client_takes_them(tmp_path):
    workload = _scenario(tmp_path, [2, 20], 50.0).workload
    arrivals = Arrivals(workload, seed=3)
    taken: list[float] = []
    lock = threading.Lock()

    def client():
        while True:
            at = arrivals.take()
            if at >= 100.0:
                return
            with lock:
                taken.append(at)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(taken)) == len(taken)  # each arrival taken once
    first = [t for t in taken if t < 50.0]
    second = [t for t in taken if t >= 50.0]
    assert 60 <= len(first) <= 140  # Poisson at 2 req/s over 50 s: 100 expected
    assert 850 <= len(second) <= 1150  # and at 20 req/s: 1,000
    again = Arrivals(workload, seed=3)
    assert [again.take() for _ in range(len(taken))] == sorted(taken)  # seeded: the same run


def test_constant_arrivals_are_evenly_spaced(tmp_path):
    workload = _scenario(tmp_path, [4], 10.0).workload.model_copy(update={"arrival": "constant"})
    arrivals = Arrivals(workload, seed=0)
    assert [round(arrivals.take(), 6) for _ in range(4)] == [0.25, 0.5, 0.75, 1.0]
