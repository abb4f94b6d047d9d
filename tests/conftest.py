"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import RedisServer, ServiceProcess


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of this test's own, on a free port (never the shared 6379)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    """A Redis shared by one test module (for tests that do not restart it)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def services() -> Iterator[list[ServiceProcess]]:
    """Collects service processes a test starts and kills leftovers afterwards."""
    started: list[ServiceProcess] = []
    yield started
    for service in started:
        service.kill()
