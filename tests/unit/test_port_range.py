"""free_port chooses from $RESPLIT_PORT_RANGE when it is set (side-by-side launchers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from resplit.launcher.processes import PORT_RANGE_ENV, LaunchError, free_port, port_range


def test_ports_come_from_the_given_range(monkeypatch):
    monkeypatch.setenv(PORT_RANGE_ENV, "23000-23050")
    assert port_range() == (23000, 23050)
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20 and all(23000 <= p < 23050 for p in ports)


def test_without_the_variable_the_range_ends_below_the_ephemeral_ports(monkeypatch):
    monkeypatch.delenv(PORT_RANGE_ENV, raising=False)
    low, high = port_range()
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert 1024 <= low < high == ephemeral_low


@pytest.mark.parametrize("value", ["20000", "a-b", "30000-20000", "80-90000"])
def test_a_bad_range_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv(PORT_RANGE_ENV, value)
    with pytest.raises(LaunchError, match=PORT_RANGE_ENV):
        port_range()


def test_each_test_process_has_its_own_slice():
    """Under make test's two processes, conftest gave this one a slice of its own."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not name:
        pytest.skip("not run under pytest-xdist: there is no slice to check (make test runs it there)")
    low, high = port_range()
    count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    assert (high - low) * count <= 12000 + count and high > low
