"""Broadcaster settings."""

from __future__ import annotations

from resplit.config import Port, ServiceSettings


class BroadcasterSettings(ServiceSettings):
    port: Port = 50054
    http_port: Port = 9104
