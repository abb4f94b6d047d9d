"""``python -m services.worker`` / ``resplit-worker``."""

from __future__ import annotations

import os

# Before torch loads (libgomp reads these once). Between the kernels of a step,
# OpenMP threads should spin rather than sleep: waking a sleeping thread for every
# kernel made decode 1.3x slower in a worker (OMP_WAIT_POLICY=PASSIVE). But not for
# long after a step: libgomp's default spin (300,000 rounds, milliseconds) keeps
# both cores busy while the next hop's worker on the same host needs them. 30,000
# rounds covered the gaps within a step and gave the best split/whole ratio of the
# spin counts tried (3,000 to 300,000) in bench/pipeline_overhead.py on 2 cores.
# Setting either variable yourself turns this default off.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "ACTIVE"
    os.environ["GOMP_SPINCOUNT"] = "30000"

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
