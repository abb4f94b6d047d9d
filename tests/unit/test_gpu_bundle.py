"""`make gpu-bundle`'s choice of packages and libraries, and `make bench-gpu` without CUDA
(tools/gpu_bundle.py, tools/bench_gpu.py). The download itself needs a package index and
is not run here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import gpu_bundle  # noqa: E402 (tools/ is not a package: imported from its folder)

LDD = """\
\tlinux-vdso.so.1 (0x00007f6fd12fe000)
\tlibatomic.so.1 => /lib/x86_64-linux-gnu/libatomic.so.1 (0x00007f6fd12e3000)
\tlibjemalloc.so.2 => /lib/x86_64-linux-gnu/libjemalloc.so.2 (0x00007f6fd0c00000)
\tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f6fd0f20000)
\tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f6fd0a87000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f6fd08a5000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f6fd1300000)
"""


def test_the_bundle_holds_resplit_and_the_test_runner_but_not_torch_nor_dev_tools():
    names = gpu_bundle.closure(["resplit", *gpu_bundle.TEST_ROOTS], "3.12")
    assert {"grpcio", "transformers", "safetensors", "redis", "pytest", "pytest-asyncio", "uvloop"} <= names
    assert "torch" not in names and not any(n.startswith("nvidia-") for n in names)
    assert not {"ruff", "import-linter", "matplotlib", "sentence-transformers", "hypothesis"} & names
    locked = gpu_bundle.pins()
    assert not sorted(n for n in names - {"resplit"} if n not in locked)  # every wheel has a locked version


def test_a_package_the_host_provides_is_left_out_with_what_only_it_needs():
    full = gpu_bundle.closure(["resplit"], "3.12")
    lean = gpu_bundle.closure(["resplit"], "3.12", host=("torch", "nvidia-*", "transformers", "tokenizers"))
    assert {"transformers", "tokenizers", "hf-xet"} <= full - lean  # hf-xet: through transformers only
    assert {"pyyaml", "numpy", "safetensors"} <= lean  # resplit's own requirements stay


def test_redis_takes_its_libraries_but_not_glibcs():
    found = [p.name for p in gpu_bundle.libraries(LDD)]
    assert found == ["libatomic.so.1", "libjemalloc.so.2", "libssl.so.3"]


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="a CUDA device is here: bench_gpu would run its benchmarks"
)
def test_bench_gpu_without_cuda_says_so_and_writes_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "tools/bench_gpu.py", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "no CUDA device here" in done.stderr
    assert not list(tmp_path.iterdir())
