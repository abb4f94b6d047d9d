"""``python -m services.worker`` / ``resplit-worker``."""

from __future__ import annotations

import os

# Before torch loads: OpenMP threads that spin-wait after each parallel region
# steal the core the next hop's worker needs when several workers share a
# host (a 10 % decode slowdown on 2 cores). Set OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from resplit.config import load_settings

from .config import WorkerSettings


def main() -> None:
    # Settings first: a bad flag fails in a fraction of a second, before torch loads.
    settings = load_settings(WorkerSettings, "resplit-worker")
    from resplit.rpc.server import run

    from .server import WorkerCore

    run(WorkerCore(settings), settings)


if __name__ == "__main__":
    main()
