"""Server interceptor: the caps on RPCs in flight (resplit/core/limits.py) over gRPC.

Each RPC takes a slot for as long as it runs (a stream until it ends) under its
client's identity, read from the call: the peer certificate's common name under
mutual TLS, else the peer's address. Over a cap, the call ends at once with
RESOURCE_EXHAUSTED, the hint in its message and in trailing metadata
``retry-after-ms``; the handler never runs. Health checks and reflection are never
capped: a probe must tell a busy service from a dead one; nor are the workers'
lanes (see EXEMPT).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge

from ..core.limits import RETRY_METADATA_KEY, Admission, Caps, Refusal, client_identity
from .interceptors import rewrapped, streamed

RPCS_IN_FLIGHT = Gauge("resplit_grpc_server_in_flight", "RPCs (streams included) running now, all clients")
RPCS_REFUSED = Counter(
    "resplit_grpc_server_refused_total",
    "RPCs refused RESOURCE_EXHAUSTED by --max-rpcs / --max-rpcs-per-client",
)

#: Methods never capped. A worker's lanes too: at most one from each other worker, each
#: carrying the steps of sessions already admitted, so refusing one would fail them all.
EXEMPT = ("/grpc.health.v1.Health/", "/grpc.reflection.", "/resplit.v1.WorkerService/Lane")


def identity_of(context: grpc.aio.ServicerContext) -> str:
    """The calling client's identity (see :func:`resplit.core.limits.client_identity`)."""
    try:
        names = [n.decode("utf-8", "replace") for n in context.auth_context().get("x509_common_name", [])]
    except (AttributeError, RuntimeError):
        names = []
    return client_identity(names, context.peer() or "")


#: How long a refused stream waits for its first request before the refusal is sent anyway.
FIRST_REQUEST_WAIT_S = 1.0
#: After it, how long for the request its caller wrote right behind it: the SDK opens a
#: session with two, the open message and the first step, and then reads. Two are taken,
#: no more: waiting on for a third that never comes held every refused stream open for
#: the whole wait (at 4x capacity, refusal p99 ~275 ms against 21-29 ms with two).
FOLLOWING_REQUEST_WAIT_S = 0.25
OPENING_REQUESTS = 2


async def take_opening(requests: Any) -> None:
    """Take the requests a streamed call's caller wrote at once (a parse each, no more),
    waiting a moment at most: its first, then the next if it follows within
    FOLLOWING_REQUEST_WAIT_S (OPENING_REQUESTS in all).

    Why: a status sent while the caller still writes is lost to the caller. Its write fails,
    grpc.aio then sets the call's status to INTERNAL ("Internal error from Core") over the
    refusal and its retry hint, and the SDK, seeing a stream break, treats it as a lost hop:
    it reports the route's nodes and replays. Taking only the first message left the SDK's
    second (its first step) in that race: at 4x the stack's capacity (bench/overload.py)
    refused sessions came back as lost hops by the hundred, their recoveries loaded the
    orchestrator and the workers, and served throughput fell to 0.16-0.31 of the maximum.
    A unary request has arrived already; there is nothing to take.
    """
    if not hasattr(requests, "__aiter__"):
        return
    iterator = requests.__aiter__()
    wait_s = FIRST_REQUEST_WAIT_S
    for _ in range(OPENING_REQUESTS):
        try:
            await asyncio.wait_for(iterator.__anext__(), wait_s)
        except (StopAsyncIteration, TimeoutError, grpc.RpcError):
            return
        wait_s = FOLLOWING_REQUEST_WAIT_S


async def _refuse(context: grpc.aio.ServicerContext, refusal: Refusal, requests: Any) -> None:
    RPCS_REFUSED.inc()
    await take_opening(requests)
    await context.abort(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        refusal.message,
        trailing_metadata=((RETRY_METADATA_KEY, str(refusal.retry_after_ms)),),
    )


class LimitInterceptor(grpc.aio.ServerInterceptor):
    """Admits each RPC under the service's caps, or refuses it at once."""

    def __init__(self, caps: Caps, service: str) -> None:
        self.admission = Admission(caps, service)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(EXEMPT):
            return handler
        return rewrapped(handler, self._unary, self._streaming)

    async def _enter(self, requests: Any, context: grpc.aio.ServicerContext) -> str:
        """Take a slot for this call (its client's identity), or end it RESOURCE_EXHAUSTED."""
        client = identity_of(context)
        refusal = self.admission.admit(client)
        if refusal is not None:
            await _refuse(context, refusal, requests)  # raises AbortError
        RPCS_IN_FLIGHT.inc()
        return client

    def _leave(self, client: str) -> None:
        self.admission.release(client)
        RPCS_IN_FLIGHT.dec()

    def _unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            client = await self._enter(request_or_iterator, context)
            try:
                return await behavior(request_or_iterator, context)
            finally:
                self._leave(client)

        return handler

    def _streaming(self, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            client = await self._enter(request_or_iterator, context)
            try:
                async for item in streamed(behavior, request_or_iterator, context):
                    yield item
            finally:
                self._leave(client)

        return handler
