"""Splitter settings."""

from __future__ import annotations

from resplit.config import Port, ServiceSettings


class SplitterSettings(ServiceSettings):
    port: Port = 50053
    http_port: Port = 9103
