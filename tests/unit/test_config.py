"""Settings parsing and its one-line error messages (no processes)."""

from __future__ import annotations

import pytest

from resplit.config import ServiceSettings, parse_settings
from services.worker.config import WorkerSettings


def test_flags_override_defaults_and_types_are_enforced():
    settings = parse_settings(WorkerSettings, ["--port", "7000", "--trusted", "--memory-bytes", "1024"])
    assert (settings.port, settings.trusted, settings.memory_bytes) == (7000, True, 1024)
    assert settings.http_port == 9160


def test_environment_is_read_with_the_resplit_prefix(monkeypatch):
    monkeypatch.setenv("RESPLIT_REDIS_URL", "redis://10.0.0.1:7000/2")
    monkeypatch.setenv("RESPLIT_TRUSTED", "true")
    settings = parse_settings(WorkerSettings, [])
    assert settings.redis_url == "redis://10.0.0.1:7000/2" and settings.trusted


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--port", "0"], "--port (env RESPLIT_PORT): Input should be greater than or equal to 1 (got '0')"),
        (["--redis-url", "localhost:6379"], "--redis-url (env RESPLIT_REDIS_URL)"),
        (["--log-level", "verbose"], "--log-level"),
        (["--unknown", "x"], "unrecognized arguments"),
    ],
)
def test_bad_values_become_one_clear_line(argv, fragment):
    with pytest.raises(ValueError) as info:
        parse_settings(ServiceSettings, argv)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_heartbeat_interval_must_be_below_ttl():
    with pytest.raises(ValueError, match="must be below heartbeat-ttl-s"):
        parse_settings(WorkerSettings, ["--heartbeat-interval-s", "5", "--heartbeat-ttl-s", "5"])


@pytest.mark.parametrize(
    ("host", "advertise", "expected"),
    [("127.0.0.1", "", "127.0.0.1:1"), ("0.0.0.0", "", "127.0.0.1:1"), ("0.0.0.0", "edge-1", "edge-1:1")],
)
def test_address_is_what_others_dial(host, advertise, expected):
    settings = parse_settings(ServiceSettings, ["--host", host, "--port", "1", "--advertise-host", advertise])
    assert settings.address == expected


def test_node_id_defaults_to_host_and_port():
    settings = parse_settings(WorkerSettings, ["--port", "5000"])
    assert settings.resolved_node_id.endswith("-5000")
    with pytest.raises(ValueError, match="--node-id"):
        parse_settings(WorkerSettings, ["--node-id", "no spaces allowed"])
