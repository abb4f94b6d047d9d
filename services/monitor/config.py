"""Monitor settings."""

from __future__ import annotations

from resplit.config import Port, ServiceSettings


class MonitorSettings(ServiceSettings):
    port: Port = 50051
    http_port: Port = 9101
