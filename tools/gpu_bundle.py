"""`make gpu-bundle`: what a GPU host without internet needs to run resplit's GPU checks.

Why: edge GPU hosts are often air-gapped and come with their own CUDA build of torch
(a lent GPU machine here too: Python 3.12, torch, no network). The bundle is a folder to
copy there beside a checkout of this repository:

* ``wheels/``: the exact locked version (requirements.lock) of every package resplit and
  its GPU checks import, built for the host's Python (``--python``, manylinux x86_64),
  and resplit's own wheel; not torch, nor what only torch needs (the host's CUDA build
  brings those: the walk does not descend into ``--host-provides``);
* ``redis/``: this machine's ``redis-server`` and the shared libraries it loads beyond
  glibc's, with a wrapper that finds them;
* ``install.sh``: the wheels into ``site/`` (``pip --target``, no index, no network),
  leaving the host's own packages as they are; ``env.sh``: PYTHONPATH and PATH for them;
* ``gpu-checks.sh``: with the host's python, from the checkout: the suites that run on
  the GPU where torch sees one (split correctness against the whole model on the same
  device, the tensor codec), then ``tools/bench_gpu.py``, whose table goes to ``$OUT``
  (or ``results/``) with GPU, driver and versions.

Which packages: the closure of ``resplit``'s requirements and the test runner's
(``--also``), markers evaluated for the target Python, from this environment's installed
metadata (so ``make setup`` first); versions from the lock. Printed at the end: each
wheel's size and the total (a lent GPU machine takes 64 MiB with the checkout).

Usage: python tools/gpu_bundle.py [--out gpu-bundle] [--python 3.12] [--also pytest ...]
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from lock import LOCK, ROOT, locked  # tools/ is this script's folder
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: What the GPU checks run besides resplit: the test runner and its plugins (pyproject's
#: pytest settings load them), and what tools/bench_gpu.py prints with.
TEST_ROOTS = ("pytest", "pytest-asyncio", "pytest-timeout", "pytest-xdist", "rich")
#: Brought by the host's CUDA build of torch; not walked into either.
HOST_PROVIDES = ("torch", "triton", "nvidia-*")
#: glibc's own libraries: every host has them, and a copy must not replace them.
GLIBC = re.compile(r"^(linux-vdso|ld-linux|libc|libm|libpthread|libdl|librt|libresolv)[.-]")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def pins() -> dict[str, str]:
    """Normalized name -> version, as ``make lock`` wrote them (tools/lock.py)."""
    return {canonicalize_name(name): version for name, version in locked(LOCK).items()}


def _provided(name: str, host: Iterable[str]) -> bool:
    return any(name == h or (h.endswith("*") and name.startswith(h[:-1])) for h in host)


def closure(roots: Iterable[str], python: str, host: Iterable[str] = HOST_PROVIDES) -> set[str]:
    """Normalized names of ``roots`` and everything they require on Python ``python``
    ("3.12", taken as 3.12.0, or a full "3.12.3": their markers evaluated for it, no extras),
    by this environment's installed metadata; packages the host provides are neither
    included nor walked into."""
    host = tuple(host)
    minor = ".".join(python.split(".")[:2])
    full = python if python.count(".") == 2 else f"{minor}.0"
    env = {"python_version": minor, "python_full_version": full, "extra": ""}
    seen: set[str] = set()
    todo = [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or _provided(name, host):
            continue
        seen.add(name)
        try:
            required = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f"{name} is needed on Python {full} but not installed here: its requirements are "
                "unknown (give the host's full version, e.g. --python 3.12.3, or install it)"
            ) from None
        for text in required:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(env):
                todo.append(canonicalize_name(requirement.name))
    return seen


def libraries(ldd_output: str) -> list[Path]:
    """The shared libraries an ``ldd`` listing resolves, glibc's own left out."""
    found = []
    for line in ldd_output.splitlines():
        parts = line.split("=>")
        if len(parts) != 2:
            continue
        name, target = parts[0].strip(), parts[1].split("(")[0].strip()
        if target and not GLIBC.match(name):
            found.append(Path(target))
    return found


def download(names: Iterable[str], versions: dict[str, str], python: str, wheels: Path) -> None:
    """The locked version of each of ``names`` as a wheel for CPython ``python`` on x86_64 Linux."""
    missing = sorted(n for n in names if n not in versions)
    if missing:
        raise SystemExit(f"not in {LOCK.name}: {', '.join(missing)} (run `make setup` with the lock)")
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    tag = "".join(python.split(".")[:2])
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--python-version", python, "--implementation", "cp", "--abi", f"cp{tag}", "--abi", "abi3",
         "--abi", "none", *platforms, "--dest", str(wheels),
         *(f"{n}=={versions[n]}" for n in sorted(names))],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(wheels), str(ROOT)],
        check=True,
    )  # fmt: skip


def copy_redis(out: Path) -> None:
    """``redis-server`` and its libraries under ``out``, and a wrapper that loads them."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("no redis-server on PATH (make setup installs one)")
    (out / "bin").mkdir(parents=True, exist_ok=True)
    (out / "lib").mkdir(exist_ok=True)
    shutil.copy2(binary, out / "bin" / "redis-server.real")
    listing = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    for library in libraries(listing):
        shutil.copy2(library, out / "lib" / library.name)
    wrapper = out / "bin" / "redis-server"
    wrapper.write_text(
        '#!/bin/sh\nhere="$(cd "$(dirname "$0")" && pwd)"\n'
        'LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \\\n'
        '    exec "$here/redis-server.real" "$@"\n'
    )
    wrapper.chmod(0o755)


SCRIPTS = {
    "install.sh": """#!/bin/sh
# The bundle's wheels into site/ beside this script: no index, no network; the host's
# own packages (its torch) stay as they are.
set -e
here="$(cd "$(dirname "$0")" && pwd)"
"${PYTHON:-python3}" -m pip install --quiet --no-index --no-deps --target "$here/site" "$here"/wheels/*.whl
echo "installed into $here/site; now: . $here/env.sh"
""",
    "env.sh": """# Source this: the bundle's packages and redis-server ahead of the host's.
here="$(cd "$(dirname "${BASH_SOURCE:-$0}")" && pwd)"
export PYTHONPATH="$here/site${PYTHONPATH:+:$PYTHONPATH}" PATH="$here/redis/bin:$PATH"
""",
    "gpu-checks.sh": """#!/bin/bash
# `make bench-gpu` with the host's python: run from the repository's root, after install.sh.
set -e
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
# The suites that run on the GPU where torch sees one (tests/support.py WORKER_DEVICE).
"${PYTHON:-python3}" -m pytest -q -p no:cacheprovider \
    tests/integration/test_split_correctness.py tests/unit/test_tensors.py
"${PYTHON:-python3}" tools/bench_gpu.py --out "${OUT:-results}"
""",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "gpu-bundle")
    parser.add_argument("--python", default="3.12", help="the GPU host's Python: 3.12, or 3.12.3")
    parser.add_argument("--also", nargs="*", default=list(TEST_ROOTS), help="packages besides resplit's own")
    parser.add_argument(
        "--host-provides",
        nargs="*",
        default=list(HOST_PROVIDES),
        help="packages the host has (a trailing * matches a prefix), e.g. also numpy transformers "
        "tokenizers to fit a smaller carry; the host's versions are then used, not the lock's",
    )
    args = parser.parse_args()
    names = closure(["resplit", *args.also], args.python, args.host_provides) - {"resplit"}
    if args.out.exists():
        shutil.rmtree(args.out)
    wheels = args.out / "wheels"
    wheels.mkdir(parents=True)
    download(names, pins(), args.python, wheels)
    copy_redis(args.out / "redis")
    for name, text in SCRIPTS.items():
        (args.out / name).write_text(text)
        (args.out / name).chmod(0o755)
    sizes = sorted(((p.stat().st_size, p.name) for p in args.out.rglob("*") if p.is_file()), reverse=True)
    for size, name in sizes[:12]:
        print(f"{size / 2**20:8.1f} MiB  {name}")
    total = sum(size for size, _ in sizes) / 2**20
    print(f"{len(list(wheels.glob('*.whl')))} wheels; {total:.1f} MiB in {args.out}")


if __name__ == "__main__":
    main()
