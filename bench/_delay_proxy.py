"""TCP proxies that hold every byte for a fixed one-way delay, in each direction.

Why: a link with a round trip, on a kernel without the netem qdisc (the 2-core
development VMs), for benchmarks that need one. Each proxy listens on a
loopback port and forwards to a target; bytes keep their order and are
released ``delay`` after they arrived, so a request and its answer cross the
proxy in one round trip of ``2 * delay`` plus what they took anyway.

Usage (run by bench scripts): python _delay_proxy.py DELAY_MS LISTEN_PORT=HOST:PORT [...]
It prints ``ready`` once every proxy listens and runs until killed.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvloop


async def _carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy reader to writer, each chunk released ``delay_s`` after it was read."""
    loop = asyncio.get_running_loop()
    held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def release() -> None:
        while (item := await held.get())[1]:
            due, data = item
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    releasing = asyncio.create_task(release())
    try:
        while data := await reader.read(1 << 16):
            held.put_nowait((loop.time() + delay_s, data))
    except ConnectionError:
        pass
    held.put_nowait((0.0, b""))
    await releasing


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _serve(port: int, target: str, delay_s: float) -> asyncio.Server:
    host, target_port = target.rsplit(":", 1)

    async def connected(client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection(host, int(target_port))
        _no_delay(client_writer)
        _no_delay(server_writer)
        await asyncio.gather(
            _carry(client_reader, server_writer, delay_s),
            _carry(server_reader, client_writer, delay_s),
            return_exceptions=True,
        )

    return await asyncio.start_server(connected, "127.0.0.1", port)


async def _main(delay_ms: float, mappings: list[str]) -> None:
    servers = []
    for mapping in mappings:
        port, target = mapping.split("=", 1)
        servers.append(await _serve(int(port), target, delay_ms / 1e3))
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    uvloop.run(_main(float(sys.argv[1]), sys.argv[2:]))
