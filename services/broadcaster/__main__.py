"""``python -m services.broadcaster`` / ``resplit-broadcaster``."""

from __future__ import annotations

from resplit.config import load_settings
from resplit.rpc.server import run

from .config import BroadcasterSettings
from .server import BroadcasterService


def main() -> None:
    settings = load_settings(BroadcasterSettings, "resplit-broadcaster")
    run(BroadcasterService, settings)


if __name__ == "__main__":
    main()
