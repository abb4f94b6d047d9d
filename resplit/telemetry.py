"""Logging set-up and process-wide metrics shared by every service."""

from __future__ import annotations

import logging
import sys

from prometheus_client import Gauge, Info

SERVICE_INFO = Info("resplit_service", "Which resplit service this process is")
SERVICE_UP = Gauge("resplit_service_serving", "1 while the service reports SERVING, else 0")


def setup_logging(service: str, level: str) -> None:
    """One line per record on stderr, tagged with the service name."""
    logging.basicConfig(
        level=getattr(logging, level),
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
