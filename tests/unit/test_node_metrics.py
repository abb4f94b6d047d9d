"""The node agent's measurements: cgroup discovery, CPU sampling, GPU absence, compute times."""

from __future__ import annotations

import time

from services.worker.core.metrics import (
    ComputeTimes,
    CpuSampler,
    Gpu,
    cgroup_cores,
    collect,
    memory_utilization,
    own_cgroup,
)

PROC_CGROUP = "4:memory:/x\n3:cpu:/resplit/n1\n2:cpuacct:/resplit/n1\n1:name=systemd:/\n"


def test_own_cgroup_reads_the_controller_line():
    assert own_cgroup("cpuacct", PROC_CGROUP) == "/resplit/n1"
    assert own_cgroup("cpu", "5:cpu,cpuacct:/a/b\n") == "/a/b"
    assert own_cgroup("cpuacct", "0::/\n") == "/"


def test_cgroup_cores_from_quota(tmp_path):
    (tmp_path / "cpu.cfs_quota_us").write_text("150000\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cores(tmp_path, 8.0) == 1.5
    (tmp_path / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cores(tmp_path, 8.0) == 8.0
    assert cgroup_cores(tmp_path / "missing", 2.0) == 2.0


def test_process_cpu_sampler_sees_its_own_busy_loop():
    sampler = CpuSampler("process")
    assert sampler.source == "process"
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    busy = sampler.sample()
    time.sleep(0.3)
    idle = sampler.sample()
    assert busy > idle
    assert busy > 0.2 / sampler.cores


def test_no_gpu_is_no_gpu_not_an_error():
    gpu = Gpu.open()
    report = collect("n1", CpuSampler("process"), gpu, ComputeTimes())
    if gpu.handle is None:
        assert report.has_gpu is False
        assert gpu.reason
    assert report.node_id == "n1"
    assert 0.0 <= report.cpu_utilization <= 1.0
    assert report.rss_bytes > 0


def test_compute_times_are_means_since_the_last_report_and_kept_while_idle():
    times = ComputeTimes()
    times.record("0-3", 2.0)
    times.record("0-3", 4.0)
    times.record("3-6", 1.0)
    report = collect("n1", CpuSampler("process"), Gpu(), times)
    assert dict(report.segment_compute_ms) == {"0-3": 3.0, "3-6": 1.0}
    times.record("3-6", 5.0)
    assert times.drain() == {"0-3": 3.0, "3-6": 5.0}  # 0-3 idle: its last mean stays


def test_memory_utilization_is_the_cgroups_own_when_it_has_a_limit(tmp_path):
    folder = tmp_path / "memory" / "bed" / "n0"
    folder.mkdir(parents=True)
    (folder / "memory.limit_in_bytes").write_text(str(1 << 30))
    (folder / "memory.usage_in_bytes").write_text(str(1 << 28))
    assert memory_utilization("4:memory:/bed/n0\n", tmp_path) == 0.25
    (folder / "memory.limit_in_bytes").write_text(str(1 << 62))  # unlimited: the host's figure
    host = memory_utilization("4:memory:/bed/n0\n", tmp_path)
    assert 0.0 < host <= 1.0 and host != 0.25
