"""Passive link bandwidth: only transfers big enough to be link-bound count."""

from __future__ import annotations

import pytest

from services.worker.core.passive import PassiveLinks


def test_rates_are_bytes_over_time_per_peer_and_drain_resets():
    links = PassiveLinks(min_bytes=1000)
    links.record("b", 1_000_000, 0.1)
    links.record("b", 1_000_000, 0.3)  # 2 MB in 0.4 s = 40 Mbit/s
    links.record("c", 500_000, 0.04)  # 100 Mbit/s
    assert links.drain() == {"b": pytest.approx(40.0), "c": pytest.approx(100.0)}
    assert links.drain() == {}


def test_small_or_instant_transfers_do_not_count():
    links = PassiveLinks(min_bytes=1000)
    links.record("b", 999, 0.1)
    links.record("b", 5000, 0.0)
    links.record("", 5000, 0.1)
    assert links.drain() == {}
