"""Server interceptor: per-RPC Prometheus metrics and no unlogged crashes.

Counts every handled RPC by method and status code and times it. An exception
that escapes a handler is answered with a message instead of gRPC's bare
"Unexpected <class ...>": UNAVAILABLE when it says Redis could not be reached
(a transient condition: the shared state is restarting or the network is down;
the caller should retry, and the SDK's sessions count UNAVAILABLE as recoverable), and
INTERNAL, logged with its traceback, for anything else (a bug).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

RPC_HANDLED = Counter(
    "resplit_grpc_server_handled_total", "RPCs completed, by method and status code", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "resplit_grpc_server_handling_seconds",
    "RPC handling time",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def _code_of(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return grpc.StatusCode.OK.name
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class _Tally:
    """Records one RPC's outcome exactly once."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.start = time.perf_counter()

    def done(self, code: str) -> None:
        RPC_HANDLED.labels(self.method, code).inc()
        RPC_SECONDS.labels(self.method).observe(time.perf_counter() - self.start)


#: Escaped errors that mean "try again", not "bug".
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


def _code_for(exc: BaseException) -> grpc.StatusCode:
    return grpc.StatusCode.UNAVAILABLE if isinstance(exc, _UNREACHABLE) else grpc.StatusCode.INTERNAL


async def _unhandled(
    context: grpc.aio.ServicerContext, method: str, exc: BaseException, code: grpc.StatusCode
) -> None:
    """Log ``exc`` and abort the RPC with ``code`` (context.abort raises AbortError)."""
    detail = f"{type(exc).__name__}: {exc}"
    if code == grpc.StatusCode.UNAVAILABLE:
        log.warning("%s: Redis unreachable: %s", method, detail)
        message = f"{method}: the shared state (Redis) is unreachable, retry: {detail}"
    else:
        log.exception("unhandled error in %s", method, exc_info=exc)
        message = f"internal error in {method}: {detail}"
    await context.abort(code, message)


def _wrap_unary(method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        tally = _Tally(method)
        try:
            result = await behavior(request_or_iterator, context)
        except grpc.aio.AbortError:
            tally.done(_code_of(context))
            raise
        except Exception as exc:
            code = _code_for(exc)
            tally.done(code.name)
            await _unhandled(context, method, exc, code)
        tally.done(_code_of(context))
        return result

    return handler


async def streamed(
    behavior: Callable[..., Any], request_or_iterator: Any, context: grpc.aio.ServicerContext
) -> AsyncIterator[Any]:
    """A streaming behaviour's replies, whether it yields them (an async generator, as an
    interceptor's wrapper is) or writes them to ``context`` itself (a servicer method)."""
    if inspect.isasyncgenfunction(behavior):
        async for item in behavior(request_or_iterator, context):
            yield item
    else:
        await behavior(request_or_iterator, context)


def _wrap_streaming(method: str, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        tally = _Tally(method)
        try:
            async for item in streamed(behavior, request_or_iterator, context):
                yield item
        except grpc.aio.AbortError:
            tally.done(_code_of(context))
            raise
        except Exception as exc:
            code = _code_for(exc)
            tally.done(code.name)
            await _unhandled(context, method, exc, code)
        tally.done(_code_of(context))

    return handler


#: What a server interceptor is given to find a method's handler.
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


def rewrapped(
    handler: grpc.RpcMethodHandler,
    wrap_unary: Callable[[Callable[..., Any]], Callable[..., Any]],
    wrap_streaming: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour wrapped: ``wrap_unary`` for a unary response,
    ``wrap_streaming`` for a streamed one (an async generator)."""
    common = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap_unary(handler.unary_unary), **common)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap_unary(handler.stream_unary), **common)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap_streaming(handler.unary_stream), **common)
    return grpc.stream_stream_rpc_method_handler(wrap_streaming(handler.stream_stream), **common)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every method handler with metrics and error mapping."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        return rewrapped(
            handler,
            lambda behavior: _wrap_unary(method, behavior),
            lambda behavior: _wrap_streaming(method, behavior),
        )
