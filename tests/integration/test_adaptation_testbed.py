"""The Alg. 1 loop reacting to real load and real links on emulated nodes (root).

Four nodes, each a cgroup of one core and a network namespace (n0 and n1
trusted), one worker in each; Redis and the control services in the root
namespace. A CPU hog inside the node holding the middle segment makes its
utilization exceed U_max and the loop migrates the segment away while a
session keeps generating the whole model's tokens; a link shaped below B_min
makes it move off that link; a load that follows the segment wherever it goes
(a flapping trigger) produces at most one change per T_cool. Not root: the
module fails and says why (CI runs as root).
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import torch
from support import emulated_stack, quiet_window, wait_for
from transformers import AutoModelForCausalLM

from resplit.launcher.processes import ServiceProcess
from resplit.models.tiny import build_tiny
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client
from resplit.sdk.exchange import GenerateExchange, Sampling
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from services.orchestrator.core.policy import default_policy

pytestmark = [pytest.mark.integration, pytest.mark.serial]  # see pyproject.toml
CYCLE = 0.5
NODES = ("n0", "n1", "n2", "n3")
WORKER_PORT, WORKER_HTTP = 50070, 9170
START = [(0, 3, "n0"), (3, 7, "n2"), (7, 10, "n0")]
HOG = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass"


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    model_dir = build_tiny("llama", tmp_path_factory.mktemp("adapt") / "llama", num_hidden_layers=8)
    with emulated_stack(NODES, cycle=CYCLE) as (testbed, orchestrator):
        yield testbed, orchestrator, model_dir


def _call(orchestrator: ServiceProcess, method: str, request):
    with sync_channel(orchestrator.address) as channel:
        return getattr(orchestrator_pb2_grpc.OrchestratorServiceStub(channel), method)(request, timeout=120)


def _deploy(orchestrator: ServiceProcess, name: str, model_dir, segments, t_cool_s: float) -> None:
    policy = default_policy()
    policy.interval_s = 0.5
    policy.thresholds.t_cool_s = t_cool_s
    policy.thresholds.l_max_ms = 1e9  # this module is about utilization and bandwidth
    spec = common_pb2.Deployment(name=name, model_dir=str(model_dir), policy=policy)
    request = orchestrator_pb2.DeployRequest(
        deployment=spec,
        segments=[
            common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=n) for a, b, n in segments
        ],
    )
    _call(orchestrator, "Deploy", request)


def _plan(orchestrator: ServiceProcess, name: str) -> common_pb2.Plan:
    return _call(orchestrator, "GetPlan", orchestrator_pb2.GetPlanRequest(deployment=name))


def _changes(orchestrator: ServiceProcess, name: str) -> list[common_pb2.DecisionEvent]:
    events = _call(orchestrator, "ListEvents", orchestrator_pb2.ListEventsRequest(deployment=name))
    return [e for e in events.events if e.outcome != common_pb2.DECISION_OUTCOME_KEEP]


def _middle(plan: common_pb2.Plan) -> str:
    return plan.segments[1].node_id


def test_cpu_hog_on_the_middle_node_migrates_it_while_a_session_generates(bed):
    testbed, orchestrator, model_dir = bed
    _deploy(orchestrator, "hogged", model_dir, START, t_cool_s=30)
    prompt = [11, 12, 13, 14, 15]
    whole = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    expected = whole.generate(
        torch.tensor([prompt]), max_new_tokens=60, do_sample=False, eos_token_id=None, pad_token_id=3
    )[0, len(prompt) :].tolist()
    quiet_window(orchestrator, 3 * CYCLE)
    assert _plan(orchestrator, "hogged").epoch == 1, "nothing may fire before the hog"

    with Client(orchestrator.address) as client:
        # Client-stepped, so the slow reader below paces the session itself.
        exchange = GenerateExchange(
            client.route("hogged"), prompt, Sampling(max_new_tokens=60), server_loop=False
        )
    tokens: list[int] = []
    errors: list[BaseException] = []

    def generate() -> None:  # a slow reader: the session spans the migration
        try:
            with Client(orchestrator.address) as session_client:
                for token in session_client._run(exchange):
                    tokens.append(token.token_id)
                    time.sleep(0.15)
        except BaseException as exc:  # reported below
            errors.append(exc)

    reader = threading.Thread(target=generate)
    reader.start()
    time.sleep(1.0)
    hog = testbed.nodes["n2"].python("-c", HOG.format(s=60))
    started = time.monotonic()
    try:
        plan = wait_for(lambda: (p := _plan(orchestrator, "hogged")).epoch > 1 and p, 30, 0.1, "a migration")
        took = time.monotonic() - started
    finally:
        hog.kill()
        hog.wait(10)
    reader.join(60)
    assert _middle(plan) != "n2"
    assert [(s.units.start, s.units.end) for s in plan.segments] == [(a, b) for a, b, _ in START]
    change = wait_for(lambda: _changes(orchestrator, "hogged"), 10, 0.1, what="the change's event")[0]
    assert change.outcome == common_pb2.DECISION_OUTCOME_MIGRATE
    assert any(t.name == "utilization" and t.subject == "n2" and t.value > 0.85 for t in change.triggers)
    assert not errors, errors
    assert tokens == expected and exchange.migrations >= 1 and exchange.replays == 0, exchange.recovered_from
    print(f"hog on n2 -> S2 moved to {_middle(plan)} {took:.1f} s later (monitor cycle {CYCLE} s, Δt 0.5 s)")


def test_a_link_throttled_below_b_min_moves_the_segment_off_it(bed):
    testbed, orchestrator, model_dir = bed
    _deploy(orchestrator, "throttled", model_dir, [(0, 3, "n0"), (3, 7, "n3"), (7, 10, "n0")], t_cool_s=30)
    quiet_window(orchestrator, 3 * CYCLE)
    assert _plan(orchestrator, "throttled").epoch == 1, "nothing may fire before the throttle"
    n3 = testbed.nodes["n3"]
    try:
        n3.shape(rate_mbit=20)  # below B_min = 50 Mbit/s
        started = time.monotonic()
        plan = wait_for(
            lambda: (p := _plan(orchestrator, "throttled")).epoch > 1 and p, 30, 0.1, "a migration off n3"
        )
        took = time.monotonic() - started
    finally:
        n3.shape()
    assert _middle(plan) != "n3"
    change = wait_for(lambda: _changes(orchestrator, "throttled"), 10, 0.1, what="the change's event")[0]
    bandwidth = [t for t in change.triggers if t.name == "bandwidth"]
    assert bandwidth and all(t.value < 50 and "n3" in t.subject for t in bandwidth), change.triggers
    print(f"n3 throttled to 20 Mbit/s -> S2 moved to {_middle(plan)} {took:.1f} s later")


def test_a_flapping_trigger_changes_the_plan_at_most_once_per_t_cool(bed):
    """The hog follows the middle segment wherever it goes: the trigger keeps firing,
    and the plan may change only once every T_cool."""
    testbed, orchestrator, model_dir = bed
    t_cool = 6.0
    _deploy(orchestrator, "flappy", model_dir, START, t_cool_s=t_cool)
    quiet_window(orchestrator, 3 * CYCLE)
    # Until the plan has changed twice (a loaded machine may take longer than 2 T_cool).
    started, deadline = time.monotonic(), time.monotonic() + 20 * t_cool
    hog, hogged = None, ""
    try:
        while len(_changes(orchestrator, "flappy")) < 2 and time.monotonic() < deadline:
            middle = _middle(_plan(orchestrator, "flappy"))
            if middle != hogged:
                if hog is not None:
                    hog.kill()
                    hog.wait(10)
                hog, hogged = testbed.nodes[middle].python("-c", HOG.format(s=60)), middle
            time.sleep(0.2)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait(10)
    changes = _changes(orchestrator, "flappy")
    times = [e.timestamp for e in changes]
    assert len(changes) >= 2, f"the loop should have moved the segment more than once: {len(changes)}"
    assert all(b - a >= t_cool for a, b in itertools.pairwise(times)), times
    events = _call(orchestrator, "ListEvents", orchestrator_pb2.ListEventsRequest(deployment="flappy"))
    assert any("cool-down" in e.reason for e in events.events), "the trigger fired while cooling down"
    took = time.monotonic() - started
    print(f"{len(changes)} changes in {took:.0f} s of a flapping trigger, {len(events.events)} events")
