"""``resplit testbed run`` end to end on a short scenario (root: namespaces, cgroups, tc).

Two emulated nodes (Llama-3-8B's config.json only), a backhaul change and a
load burst; the run must write every result file, and every request must
come back with its tokens. Not root: the module fails and says why.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
RESPLIT = str(Path(sys.executable).parent / "resplit")

SCENARIO = {
    "name": "ci-smoke",
    "seed": 3,
    "duration_s": 6,
    "model": {"dir": str(ROOT / "scenarios" / "models" / "llama-3-8b")},
    "nodes": [
        {"id": "edge", "device": "A100-40GB", "trusted": True},
        {"id": "cloud", "device": "H100-SXM"},
    ],
    "links": [
        {"between": ["edge", "cloud"], "bandwidth_mbps": 100, "changes": [{"at_s": 3, "bandwidth_mbps": 40}]}
    ],
    "load": [{"node": "cloud", "start_s": 2, "end_s": 5, "utilization": 0.8}],
    "workload": {
        "arrival": "poisson",
        "rate_per_s": 2,
        "steps": [1, 3],  # stepped arrivals: the capacity measurement of bench/paper.py
        "step_s": 3,
        "clients": 2,
        "prompt_tokens": 16,
        "generate_tokens": 4,
    },
    "control": {
        "adaptive": False,
        "initial": [
            {"units": [0, 1], "node": "edge"},
            {"units": [1, 33], "node": "cloud"},
            {"units": [33, 34], "node": "edge"},
        ],
    },
}


def test_a_short_scenario_runs_end_to_end_and_writes_its_results(tmp_path):
    path = tmp_path / "ci.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    out = tmp_path / "results"
    idle = os.getloadavg()[0] < (os.cpu_count() or 1)
    started = time.monotonic()
    run = subprocess.run(
        [RESPLIT, "testbed", "run", str(path), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for name in (
        "requests.csv",
        "summary.md",
        "summary.json",
        "timeline.png",
        "utilization.csv",
        "changes.csv",
    ):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "requests.csv").open()))
    assert rows, "no request was sent"
    assert all(not r["error"] and int(r["generated"]) == 4 for r in rows), rows
    assert all(float(r["ttft_ms"]) > 0 for r in rows)
    assert "TTFT P50 / P95" in (out / "summary.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert [x["rate"] for x in summary["steps"]] == [1, 3]
    assert sum(x["requests"] for x in summary["steps"]) == len(rows)
    assert summary["capacity_rps"] in (0, 1, 3)  # whichever step first breaks the SLA, if any
    print(f"{len(rows)} requests; the whole run took {took:.0f} s (machine idle before: {idle})")
    if idle:  # startup is ~6 processes importing torch; on a shared, loaded machine it takes longer
        assert took <= 60
