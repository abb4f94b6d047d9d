"""Orchestrator settings."""

from __future__ import annotations

from resplit.config import Port, ServiceSettings


class OrchestratorSettings(ServiceSettings):
    port: Port = 50052
    http_port: Port = 9102
