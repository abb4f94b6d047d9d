"""Running the host tools the testbed needs (ip, tc), with errors that say what failed."""

from __future__ import annotations

import os
import subprocess


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
