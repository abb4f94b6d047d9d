"""``python -m services.orchestrator`` / ``resplit-orchestrator``."""

from __future__ import annotations

from resplit.config import load_settings
from resplit.rpc.server import run

from .config import OrchestratorSettings
from .server import OrchestratorService


def main() -> None:
    settings = load_settings(OrchestratorSettings, "resplit-orchestrator")
    run(OrchestratorService, settings)


if __name__ == "__main__":
    main()
