"""Monitor settings."""

from __future__ import annotations

from pydantic import Field

from resplit.config import Port, ServiceSettings


class MonitorSettings(ServiceSettings):
    port: Port = 50051
    http_port: Port = 9101
    cycle_s: float = Field(1.0, gt=0, le=3600, description="monitoring cycle: E(t) is assembled and stored")
    retention_s: float = Field(3600.0, gt=0, description="how long reported metrics and latency are kept")
    environment_keep: int = Field(600, ge=1, le=1_000_000, description="E(t) snapshots kept in Redis")
    stale_after_s: float = Field(
        15.0, ge=0, description="a node whose last metrics are older is DOWN (0: heartbeat only)"
    )
    link_max_age_s: float = Field(300.0, ge=0, description="older link estimates leave E(t) (0: keep)")
    latency_window_s: float = Field(10.0, gt=0, description="window of the end-to-end latency EWMA")
