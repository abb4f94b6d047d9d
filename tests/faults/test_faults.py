"""Faults injected while 8 sessions generate: every session finishes with the
tokens of a fault-free run, and the stall each fault costs is measured.

Real processes (Redis of the project's own, the four control services with the
Alg. 1 loop, four workers), a real tiny Llama. Workers heartbeat every second
with a 3 s TTL; the loop runs every 0.5 s; the SDK treats a step unanswered
for 3 s as a lost hop and reports it (ReportFailure: a node whose check fails is
re-planned around at once); test_defaults.py runs faults under a user's defaults.
The stall printed per fault is the longest gap between two tokens of any session,
against the median gap.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request

import pytest
import redis
from support import LocalStack, make_plan, quiet_window, wait_for
from traffic import (
    Traffic,
    check,
    deploy,
    nodes_of,
    plan_of,
    routable,
    sessions_and_expected,
    undeploy_all,
)

from resplit.launcher.processes import ServiceProcess
from resplit.models.tiny import build_tiny
from resplit.rpc.channels import sync_channel
from resplit.state import keys
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc, worker_pb2, worker_pb2_grpc

pytestmark = pytest.mark.integration

START = [(0, 3, "worker-0"), (3, 7, "worker-2"), (7, 10, "worker-0")]
ON_3 = [(0, 3, "worker-0"), (3, 7, "worker-3"), (7, 10, "worker-0")]
TTL = ["--heartbeat-ttl-s", "3", "--heartbeat-interval-s", "1"]
# Declared memory, so that losing worker-2 leaves no placement of S1 | S2 | S3 that fits
# (constraint (4)): tiny Llama, 8 blocks: embedding 81,920 B, block 147,968 B + 256 B/token
# of KV (160 tokens in the loop's workload: 188,928 B), head 82,176 B. worker-0 holds S1 and
# S3 (919,808 B) and is nearly full; worker-1 fits 3 blocks, worker-3 two; worker-2: the host's.
MEMORY = {0: 1_000_000, 1: 600_000, 3: 400_000}


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    model_dir = build_tiny("llama", tmp_path_factory.mktemp("faults") / "llama", num_hidden_layers=8)
    local = LocalStack(
        workers=4,
        adaptive=True,
        worker_args=["--torch-threads", "1", *TTL],
        per_worker={i: ["--memory-bytes", str(b)] for i, b in MEMORY.items()},
        orchestrator_args=["--control-interval-floor-s", "0.2", "--drain-deadline-s", "2"],
    )
    try:
        local.start()
        prompts, expected = sessions_and_expected(model_dir)
        yield local, model_dir, prompts, expected
    finally:
        local.stop()


@pytest.fixture(autouse=True)
def alone(bed):
    """Each test's deployment is undeployed after it (see traffic.undeploy_all)."""
    yield
    undeploy_all(bed[0].orchestrator.address)


def _restart(proc: ServiceProcess) -> None:
    proc.kill()
    proc.start().wait_health("SERVING", timeout=60)


def test_sigkilled_middle_worker_sessions_replay_onto_a_resplit_plan(bed):
    """Worker-2 (S2) is killed. No placement of the same three segments fits the
    others' memory, so the loop must move the boundaries (split revision): the new
    plan is logged as a re-split fired by node_down, and the sessions replay onto it."""
    stack, model_dir, prompts, expected = bed
    orch = stack.orchestrator.address
    deploy(orch, "f-kill", model_dir, START)
    quiet_window(stack.orchestrator, 1.5)  # loop cycles: nothing fires while every node is up
    assert plan_of(orch, "f-kill").epoch == 1 and not _events(orch, "f-kill")
    traffic = Traffic(orch, "f-kill", prompts).start()
    traffic.at_gate()
    stack.worker_procs[2].kill()
    traffic.release()
    traffic.join()
    try:
        check(traffic, expected, "SIGKILL of the worker holding S2")
        plan = plan_of(orch, "f-kill")
        assert plan.epoch > 1 and "worker-2" not in nodes_of(plan)
        boundaries = [(s.units.start, s.units.end) for s in plan.segments]
        assert boundaries != [(a, b) for a, b, _ in START]
        change = next(e for e in _events(orch, "f-kill") if e.outcome != common_pb2.DECISION_OUTCOME_KEEP)
        assert change.outcome == common_pb2.DECISION_OUTCOME_RESPLIT, change.reason
        assert any(t.name == "node_down" and t.subject == "worker-2" for t in change.triggers)
    finally:
        stack.worker_procs[2].start().wait_health("SERVING", timeout=60)


def test_a_worker_that_lost_its_segment_gets_the_plan_rolled_out_again(bed):
    """Worker-3 answers but no longer hosts S2 (as a worker restarted before anyone saw it
    down): the sessions meet NOT_FOUND, report it, the orchestrator finds the segment
    missing and rolls the same plan out again as a new epoch; every session finishes with
    the right tokens (the 10-minute soak's 88 NOT_FOUND failures)."""
    stack, model_dir, prompts, expected = bed
    orch = stack.orchestrator.address
    deploy(orch, "f-lost", model_dir, ON_3)
    epoch = plan_of(orch, "f-lost").epoch
    with sync_channel(stack.worker_procs[3].address) as channel:
        worker_pb2_grpc.WorkerServiceStub(channel).ReleaseSegment(
            worker_pb2.ReleaseSegmentRequest(
                deployment="f-lost", epoch=epoch, units=common_pb2.UnitRange(start=3, end=7)
            ),
            timeout=10,
        )
    traffic = Traffic(orch, "f-lost", prompts).start()
    traffic.release()  # no gate: the fault is already there
    traffic.join()
    check(traffic, expected, "a worker of the plan without its segment")
    plan = plan_of(orch, "f-lost")
    assert plan.epoch > epoch
    assert [(s.units.start, s.units.end, s.node_id) for s in plan.segments] == ON_3
    assert any(e.reason.startswith("repair: worker-3") for e in _events(orch, "f-lost"))


def _events(orch: str, name: str) -> list[common_pb2.DecisionEvent]:
    with sync_channel(orch) as channel:
        reply = orchestrator_pb2_grpc.OrchestratorServiceStub(channel).ListEvents(
            orchestrator_pb2.ListEventsRequest(deployment=name), timeout=10
        )
    return list(reply.events)


# Its guard covers Traffic.join's 180 s.
@pytest.mark.timeout(300)
def test_sigstopped_straggler_is_replaced_and_welcomed_back_without_thrash(bed):
    stack, model_dir, prompts, expected = bed
    orch = stack.orchestrator.address
    deploy(orch, "f-stop", model_dir, ON_3)
    traffic = Traffic(orch, "f-stop", prompts).start()
    traffic.at_gate()
    straggler = stack.worker_procs[3].proc
    os.kill(straggler.pid, signal.SIGSTOP)
    traffic.release()
    try:
        traffic.join()
    finally:
        os.kill(straggler.pid, signal.SIGCONT)
    check(traffic, expected, "SIGSTOP of the worker holding S2 (straggler)")
    plan = plan_of(orch, "f-stop")
    assert "worker-3" not in nodes_of(plan)
    wait_for(lambda: stack.worker_procs[3].health() == "SERVING", 20, 0.1, what="worker-3 back")
    quiet_window(stack.orchestrator, 3)  # several loop cycles with the straggler back
    assert plan_of(orch, "f-stop").epoch == plan.epoch, "the plan moved again when the straggler returned"


def test_redis_restarted_empty_keeps_serving_and_state_is_rebuilt(bed):
    stack, model_dir, prompts, expected = bed
    orch = stack.orchestrator.address
    deploy(orch, "f-redis", model_dir, START)
    before = plan_of(orch, "f-redis")
    traffic = Traffic(orch, "f-redis", prompts).start()
    traffic.at_gate()
    # Worker-2 (S2) registers again last: it is stopped across the restart and some loop
    # cycles after it, so the registry misses it while the others are back. It has not
    # failed, so the loop must wait for it (the registry's grace) instead of re-planning.
    late = stack.worker_procs[2].proc
    os.kill(late.pid, signal.SIGSTOP)
    try:
        stack.redis.stop()
        time.sleep(1.0)
        stack.redis.start()  # same port, empty
        time.sleep(2.0)
    finally:
        os.kill(late.pid, signal.SIGCONT)
    traffic.release()
    traffic.join()
    check(traffic, expected, "Redis killed and restarted empty")
    # The orchestrator writes back the plan it last knew; workers register again.
    wait_for(
        lambda: plan_of(orch, "f-redis").epoch >= before.epoch,
        20,
        0.2,
        what="the plan restored",
    )
    assert plan_of(orch, "f-redis").epoch == before.epoch
    # GetPlan may answer from the orchestrator's memory before its restore reaches Redis;
    # the broadcaster reads Redis, so wait until the deployment is written back there.
    # Every worker registers again (the rollout below moves S2 to worker-3, off the route).
    alive = [keys.node_alive(f"worker-{i}") for i in range(len(stack.worker_procs))]
    with redis.Redis.from_url(stack.redis.url) as store:
        wait_for(lambda: store.exists(keys.deployment("f-redis")), 20, 0.2, what="the deployment restored")
        wait_for(lambda: store.exists(*alive) == len(alive), 20, 0.2, what="every worker registered again")
    wait_for(lambda: routable(orch, "f-redis"), 20, 0.2, what="the route served again")
    moved = stack.rollout(make_plan("f-redis", [(0, 3, 0), (3, 7, 3), (7, 10, 0)]))
    assert moved.committed.epoch > before.epoch  # no epoch goes backwards
    traffic = Traffic(orch, "f-redis", prompts[:2], gate_at=0).start().join()
    check(traffic, expected[:2], "after the Redis restart")


def _cycles(proc: ServiceProcess) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("resplit_control_cycle_seconds_count"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_control_services_killed_and_restarted_do_not_touch_sessions(bed):
    """The orchestrator, monitor, splitter and broadcaster, each SIGKILLed and started
    again in turn while the sessions generate; the loop resumes afterwards."""
    stack, model_dir, prompts, expected = bed
    orch = stack.orchestrator.address
    deploy(orch, "f-control", model_dir, START)
    traffic = Traffic(orch, "f-control", prompts, new_tokens=60).start()
    traffic.at_gate()
    traffic.release()
    for service in ("orchestrator", "monitor", "splitter", "broadcaster"):
        _restart(getattr(stack, service))
    traffic.join()
    check(traffic, expected, "orchestrator, monitor, splitter, broadcaster SIGKILLed + restarted")
    wait_for(lambda: _cycles(stack.orchestrator) > 0, 20, 0.2, what="the control loop running")
