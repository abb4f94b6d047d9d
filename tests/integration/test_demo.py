"""What a user types first: `resplit demo` (the CLI session is in test_launcher.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

pytestmark = pytest.mark.integration
RESPLIT = str(Path(sys.executable).parent / "resplit")


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [RESPLIT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_demo_runs_a_real_split_model_end_to_end(tmp_path):
    result = _cli("demo", "--state-dir", str(tmp_path / "demo"))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    ranked = re.search(r"│ 1\s+│ ([0-9.]+)\s+│ (.+?)\s+│", out)
    assert ranked and ranked.group(2).startswith("Privacy-critical layers"), out
    diff = float(re.search(r"whole\s+model: ([0-9.e+-]+)", out).group(1))
    assert diff <= 1e-5
    assert re.search(r"decode median [0-9.]+ ms/token over 3 hops", out)
    # the adaptation loop: S2's node loaded, the plan moves, the time to first token recovers
    # (to within 1.5x of before the load, and below the loaded TTFT where a request caught it)
    assert re.search(r"decision: (MIGRATE|RESPLIT) epoch 1 -> [2-9]", out), out
    before, under, after = re.search(
        r"TTFT median before the load ([0-9.]+) ms, under load on the old plan ([0-9.]+|n/a) ms, "
        r"after the change ([0-9.]+) ms",
        out,
    ).groups()
    assert float(after) < 1.5 * float(before), out
    assert under == "n/a" or float(after) < float(under), out
    assert "stack stopped (11 processes)" in out
    assert not (tmp_path / "demo" / "stack.json").exists()
    # Nothing a user would have to wonder about: no Python warning (a library's deprecation
    # included) in what the demo prints or in any service's log (redis.log is Redis's own).
    logs = [log for log in (tmp_path / "demo" / "logs").glob("*.log") if log.name != "redis.log"]
    assert len(logs) == 10, logs
    for text in (out, result.stderr, *(log.read_text() for log in logs)):
        assert "Warning:" not in text, text
