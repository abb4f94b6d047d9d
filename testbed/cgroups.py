"""A node's own cgroup (v1): CPU quota = the cores it is given, a memory limit,
and cpuacct as the node's own CPU accounting.

Why: several emulated nodes share one host; without their own cgroups every
node would read the host's load (and could use all of its cores)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "cpuacct", "memory")
PERIOD_US = 100_000


@dataclass
class Cgroup:
    """``/sys/fs/cgroup/<controller>/<path>`` for cpu, cpuacct and memory."""

    path: str
    cores: float
    memory_bytes: int = 0
    root: Path = ROOT
    dirs: list[Path] = field(default_factory=list)

    def create(self) -> Cgroup:
        for controller in CONTROLLERS:
            base = self.root / controller
            if not base.is_dir():
                raise RuntimeError(f"cgroup v1 controller {controller!r} is not mounted at {base}")
            folder = base / self.path
            folder.mkdir(parents=True, exist_ok=True)
            self.dirs.append(folder)
        cpu = self.root / "cpu" / self.path
        (cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (cpu / "cpu.cfs_quota_us").write_text(str(int(self.cores * PERIOD_US)))
        if self.memory_bytes:
            (self.root / "memory" / self.path / "memory.limit_in_bytes").write_text(str(self.memory_bytes))
        return self

    def add(self, pid: int) -> None:
        """Move process ``pid`` (with its threads) into this cgroup."""
        for folder in self.dirs:
            (folder / "cgroup.procs").write_text(str(pid))

    def usage_s(self) -> float:
        """CPU seconds the cgroup's processes have used (cpuacct)."""
        return int((self.root / "cpuacct" / self.path / "cpuacct.usage").read_text()) / 1e9

    def pids(self) -> list[int]:
        folder = self.root / "cpuacct" / self.path
        try:
            return [int(p) for p in (folder / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self, timeout_s: float = 5.0) -> None:
        """Remove the folders (deepest first); the processes must be gone."""
        deadline = time.monotonic() + timeout_s
        for folder in reversed(self.dirs):
            while folder.exists():
                try:
                    folder.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.dirs.clear()


def remove_tree(path: str, root: Path = ROOT) -> None:
    """Remove an (empty of processes) cgroup subtree in every controller."""
    for controller in CONTROLLERS:
        base = root / controller / path
        if not base.exists():
            continue
        for folder in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()
