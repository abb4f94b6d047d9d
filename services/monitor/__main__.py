"""``python -m services.monitor`` / ``resplit-monitor``."""

from __future__ import annotations

from resplit.config import load_settings
from resplit.rpc.server import run

from .config import MonitorSettings
from .server import MonitorService


def main() -> None:
    settings = load_settings(MonitorSettings, "resplit-monitor")
    run(MonitorService, settings)


if __name__ == "__main__":
    main()
