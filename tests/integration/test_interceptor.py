"""The server interceptor over a real socket: what an escaped error becomes on the wire.

A handler that lets an exception escape must not answer gRPC's bare "Unexpected
<class ...>": Redis being unreachable is UNAVAILABLE (retry), anything else is
INTERNAL with the method and the error in the message; a handler's own abort
passes through unchanged, and every outcome is counted under its real code.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from resplit.rpc.interceptors import RPC_HANDLED, MetricsInterceptor

SERVICE = "resplit.test.Faulty"


def _raise(exc: BaseException):
    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise exc

    return unary


async def _not_found(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


async def _one_then_lost(request: bytes, context: grpc.aio.ServicerContext):
    yield b"first"
    raise RedisConnectionError("Connection closed by server.")


HANDLERS = {
    "Bug": grpc.unary_unary_rpc_method_handler(_raise(RuntimeError("boom"))),
    "Refused": grpc.unary_unary_rpc_method_handler(
        _raise(RedisConnectionError("Error 111 connecting to 127.0.0.1:6399. Connection refused."))
    ),
    "Slow": grpc.unary_unary_rpc_method_handler(_raise(RedisTimeoutError("Timeout reading from socket"))),
    "NotFound": grpc.unary_unary_rpc_method_handler(_not_found),
    "Stream": grpc.unary_stream_rpc_method_handler(_one_then_lost),
}


@pytest.fixture
async def channel():
    server = grpc.aio.server(interceptors=[MetricsInterceptor()])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, HANDLERS)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


def _count(method: str, code: str) -> float:
    return RPC_HANDLED.labels(f"/{SERVICE}/{method}", code)._value.get()


async def _call(channel: grpc.aio.Channel, method: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary(f"/{SERVICE}/{method}")(b"x", timeout=5)
    return info.value


@pytest.mark.parametrize(
    ("method", "code", "words"),
    [
        ("Bug", grpc.StatusCode.INTERNAL, ["internal error in", "/Bug", "RuntimeError: boom"]),
        ("Refused", grpc.StatusCode.UNAVAILABLE, ["Redis", "unreachable", "retry", "Connection refused"]),
        ("Slow", grpc.StatusCode.UNAVAILABLE, ["Redis", "TimeoutError", "Timeout reading"]),
        ("NotFound", grpc.StatusCode.NOT_FOUND, ["no such thing"]),
    ],
)
async def test_an_escaped_error_is_answered_with_its_code_and_counted(channel, method, code, words):
    before = _count(method, code.name)
    error = await _call(channel, method)
    assert error.code() == code, error.details()
    for word in words:
        assert word in error.details(), error.details()
    assert "Unexpected" not in error.details()
    # Counted once the handler has finished, which for an abort can be just after the
    # status reached the client (a fresh-clone run read the count first).
    for _ in range(100):
        if _count(method, code.name) != before:
            break
        await asyncio.sleep(0.02)
    assert _count(method, code.name) == before + 1


async def test_a_stream_that_loses_redis_keeps_what_it_sent_and_ends_unavailable(channel):
    call = channel.unary_stream(f"/{SERVICE}/Stream")(b"x", timeout=5)
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for item in call:
            received.append(item)
    assert received == [b"first"]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Connection closed by server" in info.value.details()
