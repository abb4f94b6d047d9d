"""Readiness shared by grpc.health.v1 and the HTTP /healthz endpoint.

A health check that always says SERVING is worse than none. Each service owns
one :class:`Readiness`: it starts NOT_SERVING, the service sets it SERVING only
once its dependencies answer (for example Redis), and sets it back when they
stop answering. Both the gRPC health servicer and /healthz read the same flag.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2

OVERALL = ""
#: Always SERVING while the process runs (a liveness probe's name): unlike readiness,
#: it does not drop when a dependency such as Redis stops answering.
LIVENESS = "liveness"


class Readiness:
    """The serving state of one service, mirrored into grpc.health.v1."""

    def __init__(self, service_names: list[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self._names = [OVERALL, *service_names]
        self._serving = False
        self.reason = "starting"

    @property
    def serving(self) -> bool:
        return self._serving

    async def alive(self) -> None:
        """Mark the process alive (:data:`LIVENESS`); called once, at start."""
        await self.servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)

    async def set(self, serving: bool, reason: str = "") -> None:
        """Publish the state to every registered service name."""
        self._serving = serving
        self.reason = reason or ("ready" if serving else "not ready")
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._names:
            await self.servicer.set(name, status)

    async def shutting_down(self) -> None:
        """NOT_SERVING for everyone, so load balancers stop sending work."""
        self._serving = False
        self.reason = "shutting down"
        await self.servicer.enter_graceful_shutdown()
