"""Splitter settings."""

from __future__ import annotations

from pydantic import Field

from resplit.config import Port, ServiceSettings


class SplitterSettings(ServiceSettings):
    port: Port = 50053
    http_port: Port = 9103
    solve_time_limit_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="wall-clock limit for the exact solver's MILP stage; past it the best plan found is "
        "returned and its detail says it is not proven optimal (0 = no limit)",
    )
