"""A transparent userspace delay relay: RTT, jitter and loss without netem.

Why: the testbed's kernels may lack the netem qdisc, and without it a link has
its rate (tbf) but no round trip, which flatters every placement that crosses it.
This relay runs inside a node's network namespace; an iptables rule there
(``nat PREROUTING -i eth0 -p tcp -j REDIRECT``) hands it every TCP connection
that comes *into* the node, it connects on to the original destination (read
with ``SO_ORIGINAL_DST``; its own connection is local, so not redirected again)
and passes the bytes both ways, each chunk held back:

* a node's shape is its access link's, both ways (as its rate is shaped both
  ways): a byte between two nodes crosses both access links, so each direction
  is held back by the sum of the two nodes' one-way delays (``delay_ms``, half
  the access link's RTT): a link of RTT 20 ms to an unshaped node reads 20 ms;
* jitter: each chunk gets ``delay ± U(0, jitter)``, never earlier than the
  chunk before it (a TCP stream stays in order);
* loss, as its effect on a TCP stream: a chunk is "lost" with ``loss_pct`` and
  arrives one round trip later (a fast retransmit), and everything behind it waits.

Every connection between two nodes, and from the host (the client, Redis, the
control services) to a node, has exactly one relay on its path: the accepting
node's. The shapes of all nodes are one JSON file (address -> shape), re-read
when it changes, so a link's delay changes while traffic flows.

Run: ``python -m testbed.relay --port 15999 --config shapes.json --address 10.x.y.z``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SO_ORIGINAL_DST = 80
CHUNK = 64 * 1024


@dataclass(frozen=True)
class OneWay:
    """One direction's delay, jitter and loss (ms, ms, percent)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0


def both_links(a: OneWay, b: OneWay) -> OneWay:
    """One direction across two access links: delays and jitters add, losses compound."""
    kept = (1 - a.loss_pct / 100) * (1 - b.loss_pct / 100)
    return OneWay(a.delay_ms + b.delay_ms, a.jitter_ms + b.jitter_ms, (1 - kept) * 100)


def deliver_at(previous: float, now: float, way: OneWay, rtt_s: float, rng: random.Random) -> float:
    """When a chunk read at ``now`` goes out: after its delay (± jitter), a round trip
    more when it is lost, and never before the chunk ahead of it (pure: tested)."""
    delay = way.delay_ms + (rng.uniform(-way.jitter_ms, way.jitter_ms) if way.jitter_ms > 0 else 0.0)
    at = now + max(delay, 0.0) / 1000
    if way.loss_pct > 0 and rng.random() * 100 < way.loss_pct:
        at += max(rtt_s, 0.001)
    return max(at, previous)


class Shapes:
    """address -> OneWay, from the shared JSON file (re-read when it changes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._shapes: dict[str, OneWay] = {}

    def get(self, address: str) -> OneWay:
        with contextlib.suppress(OSError, ValueError):
            mtime = os.stat(self.path).st_mtime
            if mtime != self._mtime:
                raw = json.loads(self.path.read_text())
                self._shapes = {a: OneWay(**s) for a, s in raw.items()}
                self._mtime = mtime
        return self._shapes.get(address, OneWay())


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    way: Callable[[], OneWay],
    rng: random.Random,
) -> None:
    """Copy ``reader`` to ``writer``, each chunk at its deliver_at time.

    ``way`` is asked again for each chunk: a connection outlives shape changes (a gRPC
    channel stays open for a run), and a delay read once at its accept never changed
    for it; the monitor's probes then kept their unshaped RTT."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            at, data = await queue.get()
            if not data:
                break
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.create_task(send())
    last = 0.0
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            now_way = way()
            last = deliver_at(last, time.monotonic(), now_way, 2 * now_way.delay_ms / 1000, rng)
            queue.put_nowait((last, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((last, b""))
    with contextlib.suppress(ConnectionError, OSError):
        await sender


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where a REDIRECTed connection was going (struct sockaddr_in)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


class Relay:
    def __init__(self, own_address: str, shapes: Shapes, seed: int = 0) -> None:
        self.own_address = own_address
        self.shapes = shapes
        self.rng = random.Random(seed)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        peer = writer.get_extra_info("peername")[0]
        try:
            host, port = original_destination(sock)
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        for s in (sock, up_writer.get_extra_info("socket")):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def way() -> OneWay:
            return both_links(self.shapes.get(peer), self.shapes.get(self.own_address))

        try:
            await asyncio.gather(
                _pump(reader, up_writer, way, self.rng),
                _pump(up_reader, writer, way, self.rng),
            )
        finally:
            for w in (writer, up_writer):
                w.close()


async def serve(port: int, own_address: str, config: Path) -> None:
    relay = Relay(own_address, Shapes(config))
    server = await asyncio.start_server(relay.handle, "0.0.0.0", port, reuse_address=True)
    print("relay ready", flush=True)  # the testbed waits for this line
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--address", required=True, help="this node's address (its own egress shape)")
    parser.add_argument("--config", type=Path, required=True, help="JSON: address -> shape")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.address, args.config))


if __name__ == "__main__":
    main()
