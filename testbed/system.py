"""Running the host tools the testbed needs (ip, tc), with errors that say what failed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator


class EmulationUnavailable(RuntimeError):
    """The host cannot emulate nodes (not root, no cgroup v1, no ip/tc)."""


def require_root() -> None:
    """Raise with the reason when cgroups and namespaces cannot be made here."""
    if os.geteuid() != 0:
        raise EmulationUnavailable(
            "emulated nodes need root (cgroups, network namespaces, tc); running as uid "
            f"{os.geteuid()}: falling back to per-process accounting and unshaped loopback"
        )


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run one host command; raise with its stderr when it fails and ``check``."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) in the main thread while this lasts.

    Why: the default SIGTERM ends the process at once, and a testbed that ends that way
    leaves its node namespaces, veth links, relays, workers and Redis behind (seen when
    a `make bench-paper` was stopped with kill). As an exception it unwinds through the
    runner's ``finally`` blocks and the testbed's ``with``, which take all of them down.
    Outside the main thread (no signal handler can be set there) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_(signum: int, frame) -> None:
        sys.exit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
