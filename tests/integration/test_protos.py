"""Generated stubs match protos/ and cover the whole designed API."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import ROOT

from resplit.v1 import broadcaster_pb2, monitor_pb2, orchestrator_pb2, splitter_pb2, worker_pb2

EXPECTED_RPCS = {
    worker_pb2: (
        "WorkerService",
        {
            "Forward",
            "Lane",
            "LoadSegment",
            "CommitEpoch",
            "ReleaseSegment",
            "ExportSession",
            "GetStatus",
            "Ping",
            "ProbeBandwidth",
        },
    ),
    monitor_pb2: (
        "MonitorService",
        {"ListNodes", "GetEnvironment", "WatchEnvironment", "ReportMetrics", "ReportLatency"},
    ),
    splitter_pb2: ("SplitterService", {"Solve", "ProfileModel"}),
    orchestrator_pb2: (
        "OrchestratorService",
        {
            "Deploy",
            "Undeploy",
            "ListDeployments",
            "GetRoute",
            "WatchRoute",
            "GetPlan",
            "ApplyPlan",
            "ListEvents",
            "ReportFailure",
            "SwapLayers",
        },
    ),
    broadcaster_pb2: ("BroadcasterService", {"Rollout", "GetRollout", "Release"}),
}


def test_committed_stubs_match_a_fresh_generation():
    result = subprocess.run(
        [sys.executable, "tools/check_protos.py"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_drift_is_detected(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import check_protos
    finally:
        sys.path.pop(0)
    fake_root = tmp_path / "repo"
    (fake_root / "resplit" / "v1").mkdir(parents=True)
    for stub in (ROOT / "resplit" / "v1").iterdir():
        if stub.is_file():
            (fake_root / "resplit" / "v1" / stub.name).write_bytes(stub.read_bytes())
    (fake_root / "resplit" / "v1" / "worker_pb2.py").write_text("# hand-edited\n")
    (fake_root / "resplit" / "v1" / "stray_pb2.py").write_text("")
    monkeypatch.setattr(check_protos, "ROOT", fake_root)
    assert set(check_protos.drift()) == {"differs: worker_pb2.py", "extra: stray_pb2.py"}


@pytest.mark.parametrize("module", EXPECTED_RPCS, ids=lambda m: m.__name__)
def test_every_service_exposes_the_designed_rpcs(module):
    service, rpcs = EXPECTED_RPCS[module]
    methods = {m.name for m in module.DESCRIPTOR.services_by_name[service].methods}
    assert methods == rpcs
