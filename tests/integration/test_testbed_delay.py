"""RTT without netem: the testbed's userspace delay relay (testbed/relay.py) gives a
link its configured round trip. Two emulated nodes (root: namespaces, iptables),
the relay forced (``delay_via="relay"``, so this holds whether or not the kernel
has netem); a TCP echo server in one node, ping-pongs from the other node and from
the host (the client's hop). Not root, or no iptables: the test fails and says why."""

from __future__ import annotations

import socket
import statistics
import subprocess
import time

import pytest

from testbed.network import Network
from testbed.nodes import Testbed

pytestmark = [pytest.mark.integration, pytest.mark.serial]  # see pyproject.toml
RTT_MS = 20.0
PORT = 47001
ECHO = """
import socket
s = socket.create_server(("0.0.0.0", {port}))
while True:
    c, _ = s.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (d := c.recv(4096)):
        c.sendall(d)
"""
PING = """
import socket, statistics, time
c = socket.create_connection(("{host}", {port}), timeout=10)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for _ in range(25):
    t = time.perf_counter(); c.sendall(b"x" * 64); got = 0
    while got < 64:
        got += len(c.recv(4096))
    rtts.append((time.perf_counter() - t) * 1000)
print(statistics.median(rtts[5:]))
"""


def _host_rtt_ms(host: str) -> float:
    with socket.create_connection((host, PORT), timeout=10) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtts = []
        for _ in range(25):
            start = time.perf_counter()
            c.sendall(b"x" * 64)
            got = 0
            while got < 64:
                got += len(c.recv(4096))
            rtts.append((time.perf_counter() - start) * 1000)
    return statistics.median(rtts[5:])


def test_the_relay_gives_a_link_its_configured_rtt_without_netem():
    with Testbed(fallback=False, network=Network(delay_via="relay")) as bed:
        edge, cloud = bed.add_node("edge"), bed.add_node("cloud")
        cloud.python("-c", ECHO.format(port=PORT))
        edge.python("-c", ECHO.format(port=PORT))
        cloud.shape(delay_ms=RTT_MS / 2)  # the cloud's access link: RTT 20 ms
        assert bed.network.delay_mode == "relay"
        deadline = time.monotonic() + 15
        while True:  # the echo servers start in their namespaces
            try:
                socket.create_connection((cloud.address, PORT), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        ping = edge.python(
            "-c", PING.format(host=cloud.address, port=PORT), stdout=subprocess.PIPE, text=True
        )
        out, _ = ping.communicate(timeout=30)
        node_to_node = float(out)
        host_to_cloud = _host_rtt_ms(cloud.address)  # the client's hop
        host_to_edge = _host_rtt_ms(edge.address)  # an unshaped link stays fast
        print(
            f"RTT edge->cloud {node_to_node:.1f} ms, host->cloud {host_to_cloud:.1f}, "
            f"host->edge {host_to_edge:.1f}"
        )
        for measured in (node_to_node, host_to_cloud):
            assert RTT_MS * 0.85 <= measured <= RTT_MS * 1.15, measured
        assert host_to_edge < RTT_MS * 0.25
        cloud.shape(delay_ms=RTT_MS)  # changed while the relays run: 40 ms
        assert 40 * 0.85 <= _host_rtt_ms(cloud.address) <= 40 * 1.15
