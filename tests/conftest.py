"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

# Services refuse to start without TLS unless told --insecure. Tests run them
# plaintext on loopback, explicitly, and every process they spawn inherits this;
# tests/integration/test_security.py covers the TLS path.
os.environ["RESPLIT_INSECURE"] = "1"
# pytest-xdist's processes start with COLUMNS=80, and rich fixes a console's width from it
# when the console is made (the CLI's, at import): the CLI tests' tables would be cut to
# 80 columns there and not in a plain run. Without it, a test's own COLUMNS applies.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

import pytest
from support import LocalStack

from resplit.launcher.processes import RedisServer, ServiceProcess, port_range
from resplit.models.tiny import FAMILIES, build_tiny


def _own_ports() -> None:
    """Each of make test's processes hands out ports from its own slice of the range.

    Why: each process knows only the ports it handed out; a port one chose and had not
    bound yet (or freed while its service restarted on it) was taken by the other, and a
    worker failed to start with "Address already in use".
    """
    name, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (name.startswith("gw") and count.isdigit()):
        return
    low, high = port_range()
    width = (high - low) // int(count)
    index = int(name[2:])
    os.environ["RESPLIT_PORT_RANGE"] = f"{low + index * width}-{low + (index + 1) * width}"


_own_ports()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of this test's own, on a free port (never the shared 6379)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
async def store(redis_server):
    """A StateStore on this test's own Redis."""
    from resplit.state import StateStore

    s = StateStore(redis_server.url)
    yield s
    await s.close()


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


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, object]:
    """A tiny random model of every family, saved to disk once per test run.

    The Llama one is saved sharded (model.safetensors.index.json) so both
    checkpoint layouts are exercised.
    """
    root = tmp_path_factory.mktemp("models")
    return {
        family: build_tiny(family, root / family, max_shard_size="100KB" if family == "llama" else None)
        for family in FAMILIES
    }


@pytest.fixture(scope="session")
def stack() -> Iterator[LocalStack]:
    """Redis, the broadcaster, the orchestrator and four workers (worker-0 and worker-1
    trusted), shared by every module that asks for it: deployment names must be unique
    across modules, and a test that kills a worker starts it again.

    worker-3 prefills with two intra-op threads and decodes with one, as `resplit up`
    sets workers sharing two cores: every 4-segment split of test_split_correctness
    runs a segment there and is compared with the whole model. Worker-0 and worker-2
    run prompts longer than 5 tokens in chunks of 5 (--prefill-chunk-tokens), so every
    split with a prompt through them is compared with the whole model's one forward."""
    chunked = ["--prefill-chunk-tokens", "5"]
    local = LocalStack(
        per_worker={0: chunked, 2: chunked, 3: ["--torch-threads", "2", "--decode-threads", "1"]}
    )
    try:
        yield local.start()
    finally:
        local.stop()


#: Modules that run long for the tests they hold, collected first: `make test` hands
#: modules to its two processes in collection order, and the solver's property tests (pure
#: CPU, 40 s together) came last, so one process ran them while the other had nothing left;
#: the chaos soak, the longest of all, starts at once beside the rest. (Collected first in
#: a run of 2026-12-05 08:15 UTC, the soak ran beside the fault suite, whose SIGSTOP test
#: then hung: the fault tests left their deployments deployed; each now undeploys after
#: itself, docs/OPERATIONS.md.)
FIRST = (
    "tests/faults/test_soak.py",
    "tests/unit/test_splitter_properties.py",
    "tests/unit/test_splitter_privacy.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.nodeid.split("::", 1)[0]
        return FIRST.index(module) if module in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
