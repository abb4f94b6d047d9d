"""The import-linter contracts hold, and they do catch a violation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support import ROOT

LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_contracts_are_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 kept, 0 broken" in result.stdout


def test_a_core_module_importing_grpc_and_a_cross_service_import_break_the_contracts(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    for item in ("pyproject.toml", "resplit", "services", "testbed"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, copy / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, copy / item)
    (copy / "services" / "splitter" / "core" / "leak.py").write_text("import grpc  # noqa\n")
    (copy / "services" / "monitor" / "core" / "peek.py").write_text("import services.worker.server  # noqa\n")
    (copy / "testbed" / "peek.py").write_text("import services.worker.config  # noqa\n")
    (copy / "resplit" / "peek.py").write_text("import testbed.run  # noqa\n")
    (copy / "resplit" / "launcher" / "peek.py").write_text("import rich  # noqa\n")
    (copy / "services" / "worker" / "core" / "peek.py").write_text(
        "import services.worker.transport  # noqa\n"
    )
    result = _lint(copy)
    assert result.returncode != 0
    assert "Services do not import each other BROKEN" in result.stdout
    assert "Core logic never imports grpc or redis BROKEN" in result.stdout
    assert "The testbed runs services as processes, never imports them BROKEN" in result.stdout
    assert "The shared package never imports the testbed BROKEN" in result.stdout
    assert "The launcher and the scenarios are libraries under the CLI BROKEN" in result.stdout
    assert "The worker's modules import only downward BROKEN" in result.stdout
