"""Prometheus metrics of the gateway (served on the /metrics side port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "resplit_gateway_requests_total", "API requests by endpoint and HTTP status", ["endpoint", "status"]
)
TOKENS = Counter("resplit_gateway_tokens_total", "Tokens by kind (prompt, completion)", ["kind"])
STREAMS = Gauge("resplit_gateway_open_streams", "Streaming answers in progress")
FIRST_TOKEN_SECONDS = Histogram(
    "resplit_gateway_first_token_seconds",
    "Time from a generation request to its first token",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DISCONNECTS = Counter("resplit_gateway_disconnects_total", "Clients gone before their answer ended")

for _kind in ("prompt", "completion"):
    TOKENS.labels(kind=_kind)
