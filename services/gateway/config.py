"""Gateway settings: the OpenAI-compatible API port, where the orchestrator is, the API key."""

from __future__ import annotations

from pydantic import Field

from resplit.config import Port, ServiceSettings

#: The environment variable holding the API key when --api-key-file is not given.
API_KEY_ENV = "RESPLIT_API_KEY"


class GatewaySettings(ServiceSettings):
    port: Port = Field(50055, description="gRPC port (grpc.health.v1 only)")
    http_port: Port = Field(9105, description="HTTP side port serving /healthz and /metrics")
    api_port: Port = Field(8000, description="port of the OpenAI-compatible API (/v1/...)")
    orchestrator_address: str = Field("127.0.0.1:50052", description="host:port of the orchestrator")
    monitor_address: str = Field("", description="host:port of the monitor, to report request latency to")
    api_key_file: str = Field(
        "",
        description=f"file holding the API key clients send as a bearer token (or env {API_KEY_ENV}); "
        "none configured: the API is open",
    )
    api_tls: bool = Field(
        True, description="serve the API over HTTPS with --tls-cert/--tls-key when they are set"
    )
    default_max_tokens: int = Field(256, ge=1, description="max_tokens of a request that gives none")
    session_timeout_s: float = Field(
        300.0, gt=0, description="a session keeps recovering from lost hops until this deadline"
    )
    step_timeout_s: float = Field(10.0, ge=0, description="a decode step unanswered this long is a lost hop")
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="largest request body accepted")
