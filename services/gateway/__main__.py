"""``python -m services.gateway`` / ``resplit-gateway``."""

from __future__ import annotations

from resplit.config import load_settings
from resplit.rpc.server import run

from .config import GatewaySettings
from .server import GatewayService


def main() -> None:
    settings = load_settings(GatewaySettings, "resplit-gateway")
    run(GatewayService, settings)


if __name__ == "__main__":
    main()
