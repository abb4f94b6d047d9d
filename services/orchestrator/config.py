"""Orchestrator settings."""

from __future__ import annotations

from pydantic import Field

from resplit.config import Port, ServiceSettings


class OrchestratorSettings(ServiceSettings):
    port: Port = 50052
    http_port: Port = 9102
    prepare_deadline_s: float = Field(300.0, gt=0, description="how long a worker may take to load a segment")
