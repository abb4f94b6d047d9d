"""``python -m services.worker`` / ``resplit-worker``."""

from __future__ import annotations

import os

# Before torch loads: OpenMP threads that spin-wait after each parallel region
# steal the core the next hop's worker needs when several workers share a
# host (a 10 % decode slowdown on 2 cores). Set OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from resplit.config import load_settings
from resplit.rpc.server import run

from .config import WorkerSettings
from .server import WorkerCore


def main() -> None:
    settings = load_settings(WorkerSettings, "resplit-worker")
    run(WorkerCore(settings), settings)


if __name__ == "__main__":
    main()
