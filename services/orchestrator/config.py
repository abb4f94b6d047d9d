"""Orchestrator settings: where the other control services are, and the loop."""

from __future__ import annotations

from pydantic import Field

from resplit.config import Port, ServiceSettings


class OrchestratorSettings(ServiceSettings):
    port: Port = 50052
    http_port: Port = 9102
    prepare_deadline_s: float = Field(300.0, gt=0, description="how long a worker may take to load a segment")
    monitor_address: str = Field("127.0.0.1:50051", description="host:port of the monitor (E(t))")
    splitter_address: str = Field("127.0.0.1:50053", description="host:port of the splitter (Solve)")
    broadcaster_address: str = Field("127.0.0.1:50054", description="host:port of the broadcaster (rollouts)")
    adaptive: bool = Field(
        True, description="run the Alg. 1 control loop (--no-adaptive serves plans as deployed)"
    )
