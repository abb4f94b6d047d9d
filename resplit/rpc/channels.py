"""Client channels with the message limits raised on this end too.

gRPC's default 4 MiB receive cap fails a [1, 256, 4096] fp32 activation with
RESOURCE_EXHAUSTED; the limit has to be raised on both server and channel.

Every channel of the project is made here, with the process's transport
security (:mod:`resplit.rpc.security`): TLS / mutual TLS and the bearer token
when configured, plaintext only when the process runs insecure.
"""

from __future__ import annotations

import grpc

from .security import Security, current

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Options shared by servers and channels."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def aio_channel(
    address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, *, security: Security | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to ``address`` (host:port), secured by ``security`` (default: the process's)."""
    creds = (security or current()).channel_credentials()
    options = channel_options(max_message_bytes)
    if creds is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, creds, options=options)


def sync_channel(
    address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, *, security: Security | None = None
) -> grpc.Channel:
    """A blocking channel to ``address`` (host:port), secured by ``security`` (default: the process's)."""
    creds = (security or current()).channel_credentials()
    options = channel_options(max_message_bytes)
    if creds is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, creds, options=options)
