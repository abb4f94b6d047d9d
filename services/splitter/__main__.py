"""``python -m services.splitter`` / ``resplit-splitter``."""

from __future__ import annotations

from resplit.config import load_settings
from resplit.rpc.server import run

from .config import SplitterSettings
from .server import SplitterService


def main() -> None:
    settings = load_settings(SplitterSettings, "resplit-splitter")
    run(SplitterService, settings)


if __name__ == "__main__":
    main()
