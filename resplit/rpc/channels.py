"""Client channels with the message limits raised on this end too.

gRPC's default 4 MiB receive cap fails a [1, 256, 4096] fp32 activation with
RESOURCE_EXHAUSTED; the limit has to be raised on both server and channel.
"""

from __future__ import annotations

import grpc

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    """Options shared by servers and channels."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


def aio_channel(address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.aio.Channel:
    """An insecure asyncio channel to ``address`` (host:port)."""
    return grpc.aio.insecure_channel(address, options=channel_options(max_message_bytes))


def sync_channel(address: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> grpc.Channel:
    """An insecure blocking channel to ``address`` (host:port)."""
    return grpc.insecure_channel(address, options=channel_options(max_message_bytes))
