"""A probe's rate: the round trip comes off a slow transfer, at most half of a fast one."""

from __future__ import annotations

import pytest

from services.worker.core.probing import probe_mbps

KIB256 = 256 * 1024


def test_a_slow_link_reads_its_rate_with_the_round_trip_taken_off():
    # 256 KiB at 20 Mbit/s take 104.9 ms; the call also held a 2 ms round trip.
    assert probe_mbps(KIB256, 0.1049 + 0.002, 0.002) == pytest.approx(20.0, rel=1e-3)


def test_a_round_trip_as_long_as_the_call_cannot_make_the_rate_absurd():
    # Loopback under load: the Ping took longer than the probe call itself.
    assert probe_mbps(KIB256, 0.0010, 0.0012) == pytest.approx(KIB256 * 8 / 0.0005 / 1e6)
    assert probe_mbps(KIB256, 0.0010, 0.0012) < 5000  # it read 2,097,152 Mbit/s before


def test_an_empty_or_instant_probe_is_refused():
    with pytest.raises(ValueError, match="bytes and time"):
        probe_mbps(0, 0.1, 0.0)
    with pytest.raises(ValueError, match="bytes and time"):
        probe_mbps(KIB256, 0.0, 0.0)
