"""Emulated nodes: each a cgroup plus a network namespace, running real processes.

``Testbed`` is a context manager; leaving it kills every process it started
and removes the namespaces, the bridge and the cgroups, also on failure.
Without root, ``Testbed(fallback=True)`` gives nodes that share loopback and
the host's CPU accounting, and says so in ``reason``; with ``fallback=False``
it raises :class:`EmulationUnavailable` instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .cgroups import Cgroup, remove_tree
from .network import Network, Shape
from .system import EmulationUnavailable, require_root

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Node:
    """One emulated node: where it is reachable, its cgroup, its processes."""

    name: str
    address: str
    cgroup: Cgroup | None
    testbed: Testbed
    procs: list[subprocess.Popen] = field(default_factory=list)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start ``argv`` inside this node's namespace and cgroup."""
        prefix = self.testbed.network.exec_prefix(self.name) if self.testbed.emulated else []
        cgroup = self.cgroup

        def enter() -> None:  # runs in the child before exec: the process starts in the cgroup
            if cgroup is not None:
                cgroup.add(os.getpid())

        kwargs.setdefault("cwd", ROOT)
        proc = subprocess.Popen([*prefix, *argv], preexec_fn=enter, **kwargs)
        self.procs.append(proc)
        return proc

    def python(self, *args: str, **kwargs) -> subprocess.Popen:
        return self.popen([sys.executable, *args], **kwargs)

    def shape(self, rate_mbit: float = 0, delay_ms: float = 0, jitter_ms: float = 0, loss_pct: float = 0):
        """Shape this node's egress (rate in Mbit/s); callable while traffic flows."""
        if not self.testbed.emulated:
            raise EmulationUnavailable(f"cannot shape {self.name}: {self.testbed.reason}")
        self.testbed.network.shape(self.name, Shape(rate_mbit, delay_ms, jitter_ms, loss_pct))

    def cut(self) -> None:
        """Disconnect this node from every other (its veth goes down); ``restore`` undoes it."""
        if not self.testbed.emulated:
            raise EmulationUnavailable(f"cannot cut {self.name}'s link: {self.testbed.reason}")
        self.testbed.network.cut(self.name)

    def restore(self) -> None:
        if self.testbed.emulated:
            self.testbed.network.restore(self.name)


@dataclass
class Testbed:
    """Several nodes on this host, cleaned up on exit."""

    __test__ = False  # not a pytest test class, whatever its name says

    fallback: bool = False
    network: Network = field(default_factory=Network)
    nodes: dict[str, Node] = field(default_factory=dict)
    emulated: bool = True
    reason: str = "cgroup v1 + network namespaces + tc"

    @property
    def cgroup_root(self) -> str:
        return f"resplit-testbed-{self.network.tag}"

    def __enter__(self) -> Testbed:
        try:
            require_root()
        except EmulationUnavailable as exc:
            if not self.fallback:
                raise
            self.emulated, self.reason = False, str(exc)
            print(f"testbed: {self.reason}", file=sys.stderr)
            return self
        try:
            self.network.create()
        except Exception:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def host_address(self) -> str:
        """The address nodes reach the root namespace at (Redis, control services)."""
        return self.network.bridge_address if self.emulated else "127.0.0.1"

    def add_node(self, name: str, cores: float = 1.0, memory_bytes: int = 0) -> Node:
        if not self.emulated:
            node = Node(name, "127.0.0.1", None, self)
        else:
            cgroup = Cgroup(f"{self.cgroup_root}/{name}", cores, memory_bytes).create()
            node = Node(name, self.network.add_node(name), cgroup, self)
        self.nodes[name] = node
        return node

    def close(self) -> None:
        """Kill every process, then remove namespaces, bridge and cgroups."""
        for node in self.nodes.values():
            for proc in node.procs:
                if proc.poll() is None:
                    proc.kill()
            for proc in node.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            if node.cgroup is not None:  # anything a node process spawned on its own
                for pid in node.cgroup.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if self.emulated:
            self.network.close()
            for node in self.nodes.values():
                if node.cgroup is not None:
                    with contextlib.suppress(OSError):
                        node.cgroup.remove()
            remove_tree(self.cgroup_root)
        self.nodes.clear()
