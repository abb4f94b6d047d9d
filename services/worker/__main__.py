"""``python -m services.worker`` / ``resplit-worker``."""

from __future__ import annotations

from resplit.config import load_settings
from resplit.rpc.server import run

from .config import WorkerSettings
from .server import WorkerCore


def main() -> None:
    settings = load_settings(WorkerSettings, "resplit-worker")
    run(WorkerCore(settings), settings)


if __name__ == "__main__":
    main()
