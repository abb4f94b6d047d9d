"""The Alg. 1 loop choosing split revision when placement migration cannot work.

Real processes, real model. Workers declare how much memory they offer: the
trusted worker-0 is nearly full with S1 and S3, trusted worker-1 and
untrusted worker-3 are small, and worker-2 holds the four-block S2. When
worker-2 dies, no placement of the same three segments fits anywhere
(constraint (4)), so the loop must move the boundaries: a re-split, logged as
such, after which the deployment generates the whole model's tokens again.
"""

from __future__ import annotations

import time

import pytest
import torch
from support import LocalStack, wait_for
from transformers import AutoModelForCausalLM

from resplit.models.tiny import build_tiny
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client, Sampling
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from services.orchestrator.core.policy import default_policy

pytestmark = pytest.mark.integration

# tiny Llama, 8 blocks: embedding 81,920 B, block 147,968 B + 256 B/token of KV
# (160 tokens of context in the loop's workload: 188,928 B), head 82,176 B.
START = [(0, 3, 0), (3, 7, 2), (7, 10, 0)]  # worker-0 holds 919,808 B
MEMORY = {0: 1_000_000, 1: 600_000, 3: 400_000}  # worker-2: the host's


@pytest.fixture(scope="module")
def stack():
    local = LocalStack(
        workers=4,
        adaptive=True,
        worker_args=["--torch-threads", "1", "--heartbeat-ttl-s", "3", "--heartbeat-interval-s", "1"],
        per_worker={i: ["--memory-bytes", str(b)] for i, b in MEMORY.items()},
        orchestrator_args=["--control-interval-floor-s", "0.2"],
    )
    try:
        yield local.start()
    finally:
        local.stop()


def _plan(local: LocalStack, name: str) -> common_pb2.Plan:
    with sync_channel(local.orchestrator.address) as channel:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(channel).GetPlan(
            orchestrator_pb2.GetPlanRequest(deployment=name), timeout=10
        )


def _events(local: LocalStack, name: str) -> list[common_pb2.DecisionEvent]:
    with sync_channel(local.orchestrator.address) as channel:
        return list(
            orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            .ListEvents(orchestrator_pb2.ListEventsRequest(deployment=name), timeout=10)
            .events
        )


def _triples(plan: common_pb2.Plan) -> list[tuple[int, int, str]]:
    return [(s.units.start, s.units.end, s.node_id) for s in plan.segments]


def test_a_lost_node_that_no_placement_can_replace_ends_in_a_resplit(stack, tmp_path):
    model_dir = build_tiny("llama", tmp_path / "llama", num_hidden_layers=8)
    policy = default_policy()
    policy.interval_s = 0.5
    stack.deploy("tight", model_dir, START, policy=policy)
    prompt = [9, 8, 7, 6]
    whole = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    expected = whole.generate(
        torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=3
    )[0, len(prompt) :].tolist()
    time.sleep(2)  # a few quiet cycles: nothing fires while every node is up
    assert _plan(stack, "tight").epoch == 1 and not _events(stack, "tight")

    stack.worker_procs[2].kill()
    killed = time.monotonic()
    plan = wait_for(lambda: (p := _plan(stack, "tight")).epoch > 1 and p, 30, 0.1, what="a new plan")
    took = time.monotonic() - killed
    boundaries = [(a, b) for a, b, _ in _triples(plan)]
    assert boundaries != [(a, b) for a, b, _ in START], _triples(plan)
    assert all(node != "worker-2" for *_, node in _triples(plan))
    event = next(e for e in _events(stack, "tight") if e.outcome != common_pb2.DECISION_OUTCOME_KEEP)
    assert event.outcome == common_pb2.DECISION_OUTCOME_RESPLIT
    assert any(t.name == "node_down" and t.subject == "worker-2" for t in event.triggers)
    assert "placement" in event.reason.lower() or "migrat" in event.reason.lower(), event.reason
    with Client(stack.orchestrator.address) as client:
        got = [t.token_id for t in client.generate_ids(prompt, client.route("tight"), Sampling(12))]
    assert got == expected
    print(f"re-split {_triples(plan)} committed {took:.1f} s after the kill; reason: {event.reason}")
