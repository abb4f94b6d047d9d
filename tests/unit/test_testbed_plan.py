"""Testbed parts that need no root: tc command lines, cgroup files, the non-root fallback."""

from __future__ import annotations

import pytest

from testbed import nodes as nodes_mod
from testbed.cgroups import Cgroup
from testbed.network import QUEUE_FLOOR_BYTES, Shape, tc_commands
from testbed.system import EmulationUnavailable


def test_rate_only_is_one_tbf_replace():
    (command,) = tc_commands("eth0", Shape(rate_mbit=50))
    assert command[:7] == ["tc", "qdisc", "replace", "dev", "eth0", "root", "handle"]
    assert "tbf" in command and "50mbit" in command
    burst = int(command[command.index("burst") + 1])
    assert burst >= 50e6 / 8 / 250  # at least one kernel tick's worth of bytes


def test_a_slow_link_queues_a_probe_instead_of_dropping_it():
    for rate, least in ((20, QUEUE_FLOOR_BYTES), (1000, 1000e6 / 8 * 0.05)):
        (command,) = tc_commands("eth0", Shape(rate_mbit=rate))
        assert int(command[command.index("limit") + 1]) >= least >= 256 * 1024


def test_delay_jitter_loss_and_rate_stack_netem_over_tbf():
    netem, tbf = tc_commands("eth0", Shape(rate_mbit=20, delay_ms=10, jitter_ms=2, loss_pct=0.5))
    assert netem[netem.index("netem") :] == ["netem", "delay", "10ms", "2ms", "loss", "0.5%"]
    assert tbf[5:9] == ["parent", "1:1", "handle", "2:"] and "20mbit" in tbf


def test_no_shape_deletes_the_root_qdisc():
    assert tc_commands("eth0", Shape()) == [["tc", "qdisc", "del", "dev", "eth0", "root"]]


def test_cgroup_writes_quota_and_memory_limit(tmp_path):
    for controller in ("cpu", "cpuacct", "memory"):
        (tmp_path / controller).mkdir()
    group = Cgroup("bed/n0", cores=1.5, memory_bytes=1 << 30, root=tmp_path).create()
    assert (tmp_path / "cpu/bed/n0/cpu.cfs_quota_us").read_text() == "150000"
    assert (tmp_path / "cpu/bed/n0/cpu.cfs_period_us").read_text() == "100000"
    assert (tmp_path / "memory/bed/n0/memory.limit_in_bytes").read_text() == str(1 << 30)
    (tmp_path / "cpuacct/bed/n0/cpuacct.usage").write_text("2500000000\n")
    assert group.usage_s() == 2.5


def test_without_root_it_refuses_or_falls_back_and_says_why(monkeypatch, capsys):
    monkeypatch.setattr("testbed.system.os.geteuid", lambda: 1000)
    with pytest.raises(EmulationUnavailable, match="need root"), nodes_mod.Testbed(fallback=False):
        pass
    with nodes_mod.Testbed(fallback=True) as bed:
        node = bed.add_node("n0")
        assert not bed.emulated and node.address == "127.0.0.1" and node.cgroup is None
        assert "per-process accounting" in bed.reason
        with pytest.raises(EmulationUnavailable, match="cannot shape"):
            node.shape(rate_mbit=10)
    assert "falling back" in capsys.readouterr().err


def test_the_delay_relay_holds_each_chunk_in_order_with_jitter_and_loss():
    import random

    from testbed.relay import OneWay, both_links, deliver_at

    way = both_links(OneWay(10.0, 1.0, 0.0), OneWay(0.0, 0.0, 0.0))
    assert way == OneWay(10.0, 1.0, 0.0)
    assert both_links(OneWay(loss_pct=50), OneWay(loss_pct=50)).loss_pct == pytest.approx(75)
    rng = random.Random(1)
    times, previous = [], 0.0
    for i in range(200):
        previous = deliver_at(previous, 100.0 + i * 0.0001, way, 0.02, rng)
        times.append(previous)
    assert times == sorted(times)  # a stream stays in order, jitter or not
    assert all(t - (100.0 + i * 0.0001) >= 0.009 - 1e-9 for i, t in enumerate(times))
    assert deliver_at(0.0, 5.0, OneWay(20.0), 0.04, rng) == pytest.approx(5.02)
    lost = deliver_at(0.0, 5.0, OneWay(20.0, 0.0, 100.0), 0.04, rng)
    assert lost == pytest.approx(5.06)  # held one round trip more


async def test_the_relay_applies_a_shape_change_to_a_connection_already_open():
    """A gRPC channel stays open across shape changes: its chunks must take the new delay."""
    import asyncio
    import random
    import time

    from testbed.relay import OneWay, _pump

    shape = {"way": OneWay()}
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(1):
            arrived.put_nowait(time.monotonic())
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, into_writer = await asyncio.open_connection("127.0.0.1", port)
    feed = asyncio.StreamReader()
    pump = asyncio.create_task(_pump(feed, into_writer, lambda: shape["way"], random.Random(0)))
    try:
        for delay_ms in (0.0, 40.0):
            shape["way"] = OneWay(delay_ms)
            sent = time.monotonic()
            feed.feed_data(b"x")
            took_ms = (await asyncio.wait_for(arrived.get(), 5) - sent) * 1000
            assert delay_ms <= took_ms < delay_ms + 30, (delay_ms, took_ms)
    finally:
        feed.feed_eof()
        await asyncio.wait_for(pump, 5)
        into_writer.close()
        server.close()
