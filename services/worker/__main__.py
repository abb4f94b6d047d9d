"""``python -m services.worker`` / ``resplit-worker``."""

from __future__ import annotations

import os

# Before torch loads (libgomp reads these once). Between the kernels of a step,
# OpenMP threads should spin rather than sleep: waking a sleeping thread for every
# kernel made decode 1.3x slower in a worker (OMP_WAIT_POLICY=PASSIVE). But not for
# long after a step: a spinning thread holds a core the next hop's worker on the same
# host needs, or any other process there. With the native decode kernels
# (resplit/kernels) a step's kernels are a few ctypes calls apart, tens of
# microseconds, and 3,000 rounds (~0.1 ms spun after a step on the 2-core VM, against
# ~0.8 ms at 30,000, the earlier default set for torch's kernels) cover them: on that
# VM under other processes' load, 3,000 decoded a 3-way split 1.5-4x faster than
# 30,000 and 1.5x faster than 10,000 (bench/split_ab.py, same rounds, fp32 and int8;
# docs/BENCHMARKS.md), and on the VM alone the same (split time 0.92-1.01x).
# Setting either variable yourself turns this default off.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "ACTIVE"
    os.environ["GOMP_SPINCOUNT"] = "3000"

from resplit.config import load_settings

from .config import WorkerSettings


def main() -> None:
    # Settings first: a bad flag fails in a fraction of a second, before torch loads.
    settings = load_settings(WorkerSettings, "resplit-worker")
    from resplit.rpc.server import run

    from .server import WorkerService

    run(WorkerService, settings)


if __name__ == "__main__":
    main()
