"""What a user types: `resplit demo`, and deploy / generate / embed from the CLI."""

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
    assert "stack stopped (8 processes)" in out
    assert not (tmp_path / "demo" / "stack.json").exists()


def test_cli_deploy_generate_embed(tmp_path, tiny_models):
    state = str(tmp_path / "stack")
    up = _cli("up", "--workers", "2", "--state-dir", state)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        deployed = _cli(
            "deploy",
            str(tiny_models["llama"]),
            "--name",
            "cli-llama",
            "--state-dir",
            state,
            "--split",
            "0:3@worker-0,3:6@worker-0",
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "epoch 1" in deployed.stdout and "[0, 3)" in deployed.stdout
        generated = _cli(
            "generate", "The edge", "--deployment", "cli-llama", "--max-new-tokens", "5", "--state-dir", state
        )
        assert generated.returncode == 0, generated.stdout + generated.stderr
        assert re.search(
            r"\d+ tokens · first token [0-9.]+ ms · decode median [0-9.]+ ms/token", generated.stdout
        )
        deployed = _cli(
            "deploy",
            str(tiny_models["bert"]),
            "--name",
            "cli-bert",
            "--state-dir",
            state,
            "--split",
            "0:6@worker-0",
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        embedded = _cli(
            "embed", "hello edge", "hello cloud", "--deployment", "cli-bert", "--state-dir", state
        )
        assert embedded.returncode == 0, embedded.stdout + embedded.stderr
        assert embedded.stdout.count("1.0000") == 2  # both embeddings are normalized
        refused = _cli(
            "deploy",
            str(tiny_models["llama"]),
            "--name",
            "bad",
            "--state-dir",
            state,
            "--split",
            "0:6@worker-1",
        )
        assert refused.returncode == 1
        assert "FAILED_PRECONDITION" in refused.stderr and "not trusted" in refused.stderr
        missing = _cli("generate", "x", "--deployment", "nope", "--state-dir", state)
        assert missing.returncode == 1
        assert "deployment 'nope' is not deployed" in missing.stderr and "Traceback" not in missing.stderr
    finally:
        assert _cli("down", "--state-dir", state).returncode == 0
