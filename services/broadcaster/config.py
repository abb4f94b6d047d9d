"""Broadcaster settings."""

from __future__ import annotations

from pydantic import Field

from resplit.config import Port, ServiceSettings


class BroadcasterSettings(ServiceSettings):
    port: Port = 50054
    http_port: Port = 9104
    prepare_deadline_s: float = Field(
        300.0, gt=0, description="default time a worker may take to load a segment (prepare)"
    )
    drain_deadline_s: float = Field(
        30.0, ge=0, description="default time old-epoch sessions get to move before release"
    )
