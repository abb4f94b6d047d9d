"""Network namespaces joined by a bridge, with tc shaping per node.

Topology (checked on the development machines; docs/TESTBED.md): one bridge
in the root namespace holding ``.1`` of a private /24; one namespace per
node, linked to the bridge by a veth pair whose inner end is ``eth0`` with
``.2``, ``.3``, ... Only these addresses (and loopback) are ever used.

Shaping is on a node's egress (``eth0`` inside its namespace): ``tbf`` for
the rate, ``netem`` for delay, jitter and loss (netem at the root with tbf
under it when both are asked for). ``shape`` uses ``tc qdisc replace``, so a
rate changes while traffic flows. Some kernels (the 2-core development VMs)
lack the netem qdisc: there delay, jitter and loss come from a transparent
userspace relay in every node's namespace instead (``relay.py``: an iptables
REDIRECT of inbound TCP; ``delay_via="relay"`` asks for it where netem exists
too). The mode is decided when the bed is created, so the relays are on every
connection from its first byte. Without netem and without iptables, asking for them raises
:class:`EmulationUnavailable` saying so; rates still work.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .system import EmulationUnavailable, sh


def _free_subnet() -> ipaddress.IPv4Network:
    """A private /24 that no interface or route on the host uses."""
    used = sh("ip", "-4", "route", "show", "table", "all").stdout + sh("ip", "-4", "addr").stdout
    seed = os.getpid()
    for i in range(200):
        candidate = ipaddress.IPv4Network(f"10.{200 + (seed + i) % 50}.{(seed // 50 + i * 7) % 250 + 1}.0/24")
        prefix = str(candidate.network_address).rsplit(".", 1)[0] + "."
        if prefix not in used:
            return candidate
    raise RuntimeError("no free private /24 found for the testbed bridge")


_instances = itertools.count()


def _tag() -> str:
    """Short and unique per process and instance: interface names hold 15 characters."""
    return f"{os.getpid() % 100000}{next(_instances) % 100}"


@dataclass
class Shape:
    """What a node's egress link looks like (0 = not limited)."""

    rate_mbit: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0


#: The relay's port inside each node's namespace (its own port space).
RELAY_PORT = 15999


def relay_rule(action: str = "-A") -> list[str]:
    """The iptables rule that hands every inbound TCP connection to the node's relay."""
    match = ["PREROUTING", "-i", "eth0", "-p", "tcp"]
    return ["iptables", "-t", "nat", action, *match, "-j", "REDIRECT", "--to-ports", str(RELAY_PORT)]


#: The least a shaped link queues before tbf drops (see tc_commands).
QUEUE_FLOOR_BYTES = 1 << 20


def tc_commands(dev: str, shape: Shape) -> list[list[str]]:
    """The tc commands that give ``dev`` this shape (pure, so it is testable)."""
    base = ["tc", "qdisc", "replace", "dev", dev]
    if shape.rate_mbit <= 0 and shape.delay_ms <= 0 and shape.loss_pct <= 0:
        return [["tc", "qdisc", "del", "dev", dev, "root"]]
    rate_bits = shape.rate_mbit * 1e6
    # Burst: enough for the kernel timer (rate / 250 Hz), at least one MTU-sized frame.
    burst = max(int(rate_bits / 8 / 250), 3200)
    # Queue: 50 ms at the rate, but never less than QUEUE_FLOOR_BYTES. With 50 ms alone, a
    # 20 Mbit/s link queued 125 kB, less than one 256 KiB link probe or a prefill's
    # activation: tbf dropped up to 449 packets per probe, and TCP's recovery made the
    # link read 14.5 instead of 20 Mbit/s. A link of that rate in the field sits behind
    # a router buffer, and rate emulation should not add losses of its own.
    limit = max(int(rate_bits / 8 * 0.05), QUEUE_FLOOR_BYTES)
    tbf = ["tbf", "rate", f"{shape.rate_mbit}mbit", "burst", str(burst), "limit", str(limit)]
    if shape.delay_ms <= 0 and shape.loss_pct <= 0:
        return [[*base, "root", "handle", "1:", *tbf]]
    netem = ["netem", "delay", f"{shape.delay_ms}ms"]
    if shape.jitter_ms > 0:
        netem.append(f"{shape.jitter_ms}ms")
    if shape.loss_pct > 0:
        netem += ["loss", f"{shape.loss_pct}%"]
    commands = [[*base, "root", "handle", "1:", *netem]]
    if shape.rate_mbit > 0:
        commands.append([*base, "parent", "1:1", "handle", "2:", *tbf])
    return commands


@dataclass
class Network:
    """A bridge plus one namespace per node; ``close`` removes everything it made."""

    tag: str = field(default_factory=_tag)
    subnet: ipaddress.IPv4Network | None = None
    namespaces: dict[str, str] = field(default_factory=dict)  # node -> netns name
    addresses: dict[str, str] = field(default_factory=dict)  # node -> address
    shapes: dict[str, Shape] = field(default_factory=dict)
    veths: list[str] = field(default_factory=list)  # root-namespace ends, for cleanup after a half-made node
    host_ends: dict[str, str] = field(default_factory=dict)  # node -> its veth's root-namespace end
    bridge: str = ""
    #: How delay, jitter and loss are made: "auto" (netem where the kernel has it, else
    #: the relay), "netem" or "relay". ``delay_mode`` says what "auto" found.
    delay_via: str = "auto"
    delay_mode: str = ""
    relays: dict[str, subprocess.Popen] = field(default_factory=dict)
    relay_dir: Path | None = None

    @property
    def bridge_address(self) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def create(self) -> Network:
        self.subnet = self.subnet or _free_subnet()
        self.bridge = f"rsb{self.tag}"
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        self.delay_mode = self._delay_mode()
        if self.delay_mode == "relay":
            self.relay_dir = Path(tempfile.mkdtemp(prefix="resplit-relay-"))
            self._write_relay_shapes()
        return self

    def _delay_mode(self) -> str:
        """How this bed makes delays, decided before any node exists.

        The relays must be on every connection's path from its first byte: the REDIRECT
        rule only catches new connections, so a relay started at the first delayed
        shape left every connection opened before it (a worker's gRPC channels, the
        monitor agent's probe channels) undelayed for good. "" means neither netem nor
        iptables is here; shaping a delay then raises and says so."""
        if self.delay_via == "relay":
            return "relay"
        probe = ["tc", "qdisc", "add", "dev", self.bridge, "root", "netem", "delay", "1ms"]
        if sh(*probe, check=False).returncode == 0:
            sh("tc", "qdisc", "del", "dev", self.bridge, "root", check=False)
            return "netem"
        if self.delay_via == "auto" and shutil.which("iptables") is not None:
            return "relay"
        return ""

    def add_node(self, name: str) -> str:
        """A namespace for ``name`` with its veth to the bridge; returns its address."""
        assert self.subnet is not None
        index = len(self.namespaces)
        netns, host_end, inner = f"rs{self.tag}-{index}", f"rsv{self.tag}x{index}", f"rsi{self.tag}x{index}"
        address = str(self.subnet.network_address + 2 + index)
        sh("ip", "netns", "add", netns)
        self.namespaces[name] = netns
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", inner)
        self.veths.append(host_end)
        self.host_ends[name] = host_end
        sh("ip", "link", "set", inner, "netns", netns)
        sh("ip", "link", "set", host_end, "master", self.bridge)
        sh("ip", "link", "set", host_end, "up")
        ns = ["ip", "netns", "exec", netns]
        sh(*ns, "ip", "link", "set", inner, "name", "eth0")
        sh(*ns, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        sh(*ns, "ip", "link", "set", "eth0", "up")
        sh(*ns, "ip", "link", "set", "lo", "up")
        # Probes are short transfers after idle gaps: no slow-start restart, so a
        # probe measures the link's rate rather than TCP's ramp (per-namespace sysctl).
        sh(*ns, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/tcp_slow_start_after_idle", check=False)
        self.addresses[name] = address
        if self.delay_mode == "relay":  # relays apply the peers' delays on every node
            self._start_relay(name)
        return address

    def shape(self, name: str, shape: Shape) -> None:
        """Give node ``name``'s egress this shape (replaces the previous one in place)."""
        if self.delay_mode == "relay":  # rate by tbf, delay/jitter/loss by the relays
            self._shape_with_tc(name, Shape(shape.rate_mbit))
            self.shapes[name] = shape
            self._write_relay_shapes()
            return
        try:
            self._shape_with_tc(name, shape)
        except EmulationUnavailable as exc:
            if self.delay_via != "auto":
                raise
            raise EmulationUnavailable(  # auto found neither netem nor iptables
                "no netem qdisc on this kernel and no iptables for the userspace delay relay, "
                f"so delay, jitter and loss cannot be emulated here (rate shaping with tbf works): {exc}"
            ) from None

    def _start_relay(self, name: str) -> None:
        assert self.relay_dir is not None
        sh("ip", "netns", "exec", self.namespaces[name], *relay_rule())
        argv = [sys.executable, "-m", "testbed.relay", "--port", str(RELAY_PORT)]
        argv += ["--address", self.addresses[name], "--config", str(self.relay_dir / "shapes.json")]
        root = Path(__file__).resolve().parent.parent
        proc = subprocess.Popen([*self.exec_prefix(name), *argv], cwd=root, stdout=subprocess.PIPE, text=True)
        self.relays[name] = proc
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "relay ready":  # it died: say so, not a silent no-delay
            raise RuntimeError(f"the delay relay of {name} did not start (exit {proc.poll()})")

    def _write_relay_shapes(self) -> None:
        """Every node's one-way shape by its address, replaced atomically (relays re-read it)."""
        assert self.relay_dir is not None
        shapes = {
            self.addresses[n]: {k: v for k, v in asdict(s).items() if k != "rate_mbit"}
            for n, s in self.shapes.items()
        }
        temporary = self.relay_dir / "shapes.json.tmp"
        temporary.write_text(json.dumps(shapes))
        os.replace(temporary, self.relay_dir / "shapes.json")

    def _shape_with_tc(self, name: str, shape: Shape) -> None:
        netns = self.namespaces[name]
        previous = self.shapes.get(name)
        structure_changed = previous is not None and (previous.delay_ms > 0 or previous.loss_pct > 0) != (
            shape.delay_ms > 0 or shape.loss_pct > 0
        )
        if structure_changed:
            sh("ip", "netns", "exec", netns, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)
        for command in tc_commands("eth0", shape):
            try:
                sh("ip", "netns", "exec", netns, *command, check=command[2] != "del")
            except RuntimeError as exc:
                if "netem" in command and "unknown" in str(exc):
                    self.shapes.pop(name, None)
                    raise EmulationUnavailable(
                        "this kernel has no netem qdisc, so delay, jitter and loss cannot be emulated "
                        f"here (rate shaping with tbf works): {exc}"
                    ) from None
                raise
        self.shapes[name] = shape

    def cut(self, name: str) -> None:
        """Take node ``name``'s link down: nothing gets in or out until ``restore``."""
        sh("ip", "link", "set", self.host_ends[name], "down")

    def restore(self, name: str) -> None:
        sh("ip", "link", "set", self.host_ends[name], "up")

    def exec_prefix(self, name: str) -> list[str]:
        """argv prefix that runs a command in node ``name``'s namespace (nsenter keeps
        /sys/fs/cgroup visible, which ``ip netns exec`` would hide by remounting /sys)."""
        return ["nsenter", f"--net=/var/run/netns/{self.namespaces[name]}"]

    def close(self) -> None:
        for proc in self.relays.values():
            proc.kill()
        for proc in self.relays.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.relays.clear()
        if self.relay_dir is not None:
            shutil.rmtree(self.relay_dir, ignore_errors=True)
            self.relay_dir = None
        for netns in self.namespaces.values():
            with contextlib.suppress(RuntimeError):
                sh("ip", "netns", "del", netns)
        self.namespaces.clear()
        for veth in self.veths:  # normally gone with its namespace; not if the node was half made
            sh("ip", "link", "del", veth, check=False)
        self.veths.clear()
        if self.bridge:
            with contextlib.suppress(RuntimeError):
                sh("ip", "link", "del", self.bridge)
            self.bridge = ""
