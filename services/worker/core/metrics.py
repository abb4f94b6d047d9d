"""What a node agent measures, apart from how it is sent.

Why the cgroup: several emulated nodes share one host, and host-wide psutil
figures would show every node's load on every node. A worker placed in a
cgroup (the testbed does that) measures its node's CPU from that cgroup's
cpuacct counter, normalised by the cores the cgroup's quota gives it. A
worker in the root cgroup falls back to its own process's CPU time (psutil),
and says which source it uses.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from resplit.core.smoothing import utilization
from resplit.v1 import common_pb2

log = logging.getLogger(__name__)
CGROUP_ROOT = Path("/sys/fs/cgroup")


def own_cgroup(controller: str, proc_cgroup: str | None = None) -> str:
    """This process's cgroup v1 path for ``controller`` ('/' when at the root or unknown)."""
    text = proc_cgroup if proc_cgroup is not None else _read("/proc/self/cgroup")
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and controller in parts[1].split(","):
            return parts[2] or "/"
    return "/"


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cgroup_cores(cpu_dir: Path, fallback: float) -> float:
    """Cores a cgroup's CFS quota gives it (``fallback`` without a quota)."""
    try:
        quota = int((cpu_dir / "cpu.cfs_quota_us").read_text())
        period = int((cpu_dir / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return fallback
    return quota / period if quota > 0 and period > 0 else fallback


class CpuSampler:
    """CPU utilization in [0, 1] between two calls."""

    def __init__(self, source: str = "auto", root: Path = CGROUP_ROOT) -> None:
        host_cores = float(os.cpu_count() or 1)
        acct = own_cgroup("cpuacct")
        self.usage_file = root / "cpuacct" / acct.lstrip("/") / "cpuacct.usage"
        in_cgroup = acct != "/" and self.usage_file.exists()
        if source == "cgroup" and not in_cgroup:
            raise ValueError(f"cpu source 'cgroup' asked for, but this process's cpuacct cgroup is {acct!r}")
        self.source = "cgroup" if source == "cgroup" or (source == "auto" and in_cgroup) else "process"
        if self.source == "cgroup":
            self.cores = cgroup_cores(root / "cpu" / own_cgroup("cpu").lstrip("/"), host_cores)
            self.reason = f"cgroup {acct} (cpuacct), {self.cores:g} cores"
        else:
            self.cores = host_cores
            self.reason = "this process's CPU time (no own cgroup: per-process accounting, not the node's)"
        self._process = psutil.Process()
        self._last = (self._busy_s(), time.monotonic())

    def _busy_s(self) -> float:
        if self.source == "cgroup":
            return int(self.usage_file.read_text()) / 1e9
        times = self._process.cpu_times()
        return times.user + times.system

    def sample(self) -> float:
        busy, now = self._busy_s(), time.monotonic()
        last_busy, last_t = self._last
        self._last = (busy, now)
        return utilization(busy - last_busy, now - last_t, self.cores)

    def own(self) -> float:
        """This process's CPU alone over the node's cores since the last call: the
        worker's own load (a cgroup's figure also holds other tenants')."""
        times = self._process.cpu_times()
        busy, now = times.user + times.system, time.monotonic()
        last_busy, last_t = getattr(self, "_own_last", (busy, now))
        self._own_last = (busy, now)
        return utilization(busy - last_busy, now - last_t, self.cores) if now > last_t else 0.0


def memory_utilization(proc_cgroup: str | None = None, root: Path = CGROUP_ROOT) -> float:
    """Memory in use over the memory this node has: its memory cgroup's usage and
    limit when it has a limit below the host's RAM, else the host's figure."""
    total = psutil.virtual_memory().total
    folder = root / "memory" / own_cgroup("memory", proc_cgroup).lstrip("/")
    try:
        limit = int((folder / "memory.limit_in_bytes").read_text())
        usage = int((folder / "memory.usage_in_bytes").read_text())
    except (OSError, ValueError):
        return min(psutil.virtual_memory().percent / 100.0, 1.0)
    if 0 < limit < total:
        return min(max(usage / limit, 0.0), 1.0)
    return min(psutil.virtual_memory().percent / 100.0, 1.0)


@dataclass
class Gpu:
    """NVML view of GPU 0; no GPU (or no driver) means has_gpu False, never an error."""

    handle: object = None
    reason: str = ""

    @classmethod
    def open(cls) -> Gpu:
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() == 0:
                return cls(reason="NVML reports no GPU")
            return cls(handle=pynvml.nvmlDeviceGetHandleByIndex(0))
        except Exception as exc:  # pynvml.NVMLError and its LibraryNotFound subclass
            return cls(reason=f"no GPU: {exc}")

    def fill(self, report: common_pb2.NodeMetrics) -> None:
        if self.handle is None:
            report.has_gpu = False
            return
        import pynvml

        try:
            util = pynvml.nvmlDeviceGetUtilizationRates(self.handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(self.handle)
        except pynvml.NVMLError:
            report.has_gpu = False
            return
        report.has_gpu = True
        report.gpu_utilization = min(max(util.gpu / 100.0, 0.0), 1.0)
        report.gpu_memory_used_bytes = int(mem.used)


@dataclass
class ComputeTimes:
    """Compute time per hosted segment, thread-safe (the data plane records from
    its event loop, the agent drains). A report carries the mean over the steps
    since the previous report, or the last known mean when the segment was idle,
    so E(t) keeps a measured cost for every segment that has ever run."""

    _sums: dict[str, list[float]] = field(default_factory=dict)
    _last: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    #: Busy ms per "deployment/start-end" since the last drain_busy, and when that was.
    _busy: dict[str, float] = field(default_factory=dict)
    _busy_since: float = field(default_factory=time.monotonic)

    def record(self, key: str, ms: float, owner: str = "") -> None:
        with self._lock:
            entry = self._sums.setdefault(key, [0.0, 0.0])
            entry[0] += ms
            entry[1] += 1
            if owner:
                self._busy[owner] = self._busy.get(owner, 0.0) + ms

    def drain_busy(self) -> dict[str, float]:
        """Share of the wall time since the last call each owner's steps ran (0..1 each)."""
        with self._lock:
            now = time.monotonic()
            wall_ms = max((now - self._busy_since) * 1000, 1e-6)
            shares = {key: min(ms / wall_ms, 1.0) for key, ms in self._busy.items()}
            self._busy.clear()
            self._busy_since = now
            return shares

    def drain(self) -> dict[str, float]:
        with self._lock:
            for key, (total, count) in self._sums.items():
                if count:
                    self._last[key] = total / count
            self._sums.clear()
            return dict(self._last)


def segment_load(busy: dict[str, float], own_utilization: float) -> dict[str, float]:
    """Split this worker's own utilization (its process's, or an emulated device's busy
    time) over its segments by their busy time: each deployment's own load on the node,
    which the orchestrator subtracts before it compares nodes (the load moves with the plan)."""
    total = sum(busy.values())
    if total <= 0:
        return {}
    return {key: own_utilization * share / total for key, share in busy.items()}


def collect(
    node_id: str,
    cpu: CpuSampler,
    gpu: Gpu,
    compute: ComputeTimes,
    queue_depth: Callable[[], int] = lambda: 0,
) -> common_pb2.NodeMetrics:
    """One NodeMetrics report (CP(n, t), paper eq. (1))."""
    process = psutil.Process()
    report = common_pb2.NodeMetrics(
        node_id=node_id,
        timestamp=time.time(),
        cpu_utilization=cpu.sample(),
        memory_utilization=memory_utilization(),
        rss_bytes=process.memory_info().rss,
        requests_in_flight=max(compute.in_flight, 0),
        queue_depth=max(queue_depth(), 0),
    )
    gpu.fill(report)
    for key, ms in compute.drain().items():
        report.segment_compute_ms[key] = ms
    return report
