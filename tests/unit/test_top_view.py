"""`resplit top`'s rendering of one E(t) snapshot."""

from __future__ import annotations

from rich.console import Console

from resplit.cli.top import render
from resplit.v1 import common_pb2


def test_render_shows_states_utilization_links_and_latency():
    env = common_pb2.Environment(timestamp=1000.0)
    env.nodes.add(node_id="edge-1", state=common_pb2.NODE_STATE_UP, trusted=True)
    env.nodes.add(node_id="cloud-1", state=common_pb2.NODE_STATE_DOWN)
    report = env.metrics.add(
        node_id="edge-1", cpu_utilization=0.9, memory_utilization=0.25, rss_bytes=300 << 20
    )
    report.segment_compute_ms["0-3"] = 4.25
    env.links.add(src="edge-1", dst="cloud-1", bandwidth_mbps=48.7, rtt_ms=12.5, timestamp=999.0)
    env.latency_ewma_ms["chat"] = 123.4
    console = Console(record=True, width=200)
    console.print(render(env))
    text = console.export_text()
    for needle in (
        "edge-1",
        "cloud-1",
        "UP",
        "DOWN",
        "90.0%",
        "no GPU",
        "300",
        "0-3: 4.2",
        "48.7",
        "12.50",
        "chat",
    ):
        assert needle in text, (needle, text)
    assert "123.4" in text
