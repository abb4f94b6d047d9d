"""Faults under exactly the defaults a user gets: a stack from `resplit up --workers 4`
(heartbeat TTL 6 s, every deployment's Delta t 5 s, mutual TLS), a deployment from
`resplit deploy --split`, and 8 sessions on an `AsyncClient` with no option set.

A session that loses a hop reports its route's nodes to the orchestrator, which
checks each one and re-plans at once when one is really gone (ReportFailure); the
session keeps recovering until its own deadline. The stall each fault costs is printed
(the longest gap between two tokens of any session; docs/OPERATIONS.md, Faults).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from support import quiet_window
from traffic import Traffic, check, nodes_of, sessions_and_expected

from resplit.launcher.stack import Stack, stack_file
from resplit.models.tiny import build_tiny
from resplit.rpc.channels import sync_channel
from resplit.rpc.security import Security
from resplit.sdk.base import ClientBase
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RESPLIT = str(Path(sys.executable).parent / "resplit")
Verdict = orchestrator_pb2.FailureVerdict


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    env.pop("RESPLIT_INSECURE", None)  # a user's stack: mutual TLS, as `resplit up` makes it
    return subprocess.run(
        [RESPLIT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


class UserStack:
    def __init__(self, state: Path, model_dir: Path) -> None:
        self.state, self.model_dir = state, model_dir
        self.stack = Stack.model_validate_json(stack_file(state).read_text())
        assert self.stack.tls is not None, "resplit up runs with TLS by default"
        self.security: Security = self.stack.tls.security()
        self.orchestrator = self.stack.by_name("orchestrator").address

    def pid(self, name: str) -> int:
        return self.stack.by_name(name).pid

    def deploy(self, name: str, split: str) -> None:
        state = str(self.state)
        result = _cli("deploy", str(self.model_dir), "--name", name, "--split", split, "--state-dir", state)
        assert result.returncode == 0, result.stdout + result.stderr

    def stub(self, channel) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(channel)

    def plan(self, name: str) -> common_pb2.Plan:
        with sync_channel(self.orchestrator, security=self.security) as channel:
            return self.stub(channel).GetPlan(orchestrator_pb2.GetPlanRequest(deployment=name), timeout=10)

    def nodes(self) -> dict[str, str]:
        """node id -> UP / DOWN, as `resplit status` shows them."""
        result = _cli("status", "--json", "--state-dir", str(self.state))
        return {n["node_id"]: n["state"] for n in json.loads(result.stdout)["nodes"]}

    def report(self, node_ids: list[str]) -> orchestrator_pb2.ReportFailureResponse:
        request = orchestrator_pb2.ReportFailureRequest(node_ids=node_ids, reporter="test", reason="a test")
        with sync_channel(self.orchestrator, security=self.security) as channel:
            return self.stub(channel).ReportFailure(request, timeout=10)

    def events(self, name: str) -> list[common_pb2.DecisionEvent]:
        with sync_channel(self.orchestrator, security=self.security) as channel:
            request = orchestrator_pb2.ListEventsRequest(deployment=name)
            reply = self.stub(channel).ListEvents(request, timeout=10)
        return list(reply.events)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    root = tmp_path_factory.mktemp("defaults")
    model_dir = build_tiny("llama", root / "llama", num_hidden_layers=8)
    up = _cli("up", "--workers", "4", "--state-dir", str(root / "stack"))
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        prompts, expected = sessions_and_expected(model_dir)
        yield UserStack(root / "stack", model_dir), prompts, expected
    finally:
        down = _cli("down", "--state-dir", str(root / "stack"))
        assert down.returncode == 0, down.stdout + down.stderr


def _traffic(user: UserStack, name: str, prompts) -> Traffic:
    """8 sessions on a client with every option at its default."""
    return Traffic(user.orchestrator, name, prompts, client_options={}, security=user.security).start()


def test_the_client_defaults_are_what_these_tests_run():
    client = ClientBase()
    assert (client.recoveries, client.step_timeout_s, client.timeout_s) == (None, 10.0, 300.0)


def test_a_false_report_of_healthy_workers_changes_nothing(user):
    stack, _, _ = user
    stack.deploy("d-false", "0:3@worker-0,3:7@worker-2,7:10@worker-0")
    before = stack.plan("d-false")
    reply = stack.report(["worker-2", "worker-0", "worker-2", "no-such-node"])
    states = [(v.node_id, v.state) for v in reply.verdicts]
    assert states == [
        ("worker-2", Verdict.STATE_UP),
        ("worker-0", Verdict.STATE_UP),
        ("no-such-node", Verdict.STATE_UNKNOWN_NODE),
    ]
    assert stack.report(["worker-2"]).verdicts[0].detail == "recently alive"  # not checked again at once
    # Past a whole Delta t (5 s) and a heartbeat TTL (6 s), with the loop seen running.
    quiet_window(stack.stack.by_name("orchestrator"), 6, min_cycles=1)
    assert stack.nodes()["worker-2"] == "UP"
    after = stack.plan("d-false")
    assert after.epoch == before.epoch and nodes_of(after) == nodes_of(before)
    assert [e for e in stack.events("d-false") if e.outcome != common_pb2.DECISION_OUTCOME_KEEP] == []


@pytest.mark.parametrize("count", [0, 17])
def test_a_report_naming_no_node_or_too_many_is_refused(user, count):
    stack, _, _ = user
    with pytest.raises(grpc.RpcError) as info:
        stack.report([f"worker-{i}" for i in range(count)])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "name 1 to 16 nodes" in info.value.details()


def test_sigkill_under_the_defaults_loses_no_session(user):
    """The issue's run: S1 and S3 on worker-0, S2 on worker-1, worker-1 SIGKILLed while
    8 sessions generate. Before ReportFailure, all of them failed within ~9 s."""
    stack, prompts, expected = user
    stack.deploy("d-kill", "0:3@worker-0,3:7@worker-1,7:10@worker-0")
    traffic = _traffic(stack, "d-kill", prompts)
    traffic.at_gate()
    os.kill(stack.pid("worker-1"), signal.SIGKILL)
    traffic.release()
    traffic.join()
    check(traffic, expected, "SIGKILL of the worker holding S2, resplit up's defaults")
    plan = stack.plan("d-kill")
    assert plan.epoch > 1 and "worker-1" not in nodes_of(plan)
    assert stack.nodes()["worker-1"] == "DOWN"


def test_sigstop_under_the_defaults_loses_no_session(user):
    """A hung worker: silent past the step timeout, checked (its Ping times out), routed around."""
    stack, prompts, expected = user
    stack.deploy("d-stop", "0:3@worker-0,3:7@worker-3,7:10@worker-0")
    traffic = _traffic(stack, "d-stop", prompts)
    traffic.at_gate()
    pid = stack.pid("worker-3")
    os.kill(pid, signal.SIGSTOP)
    traffic.release()
    try:
        traffic.join()
    finally:
        os.kill(pid, signal.SIGCONT)
    check(traffic, expected, "SIGSTOP of the worker holding S2, resplit up's defaults")
    assert "worker-3" not in nodes_of(stack.plan("d-stop"))
