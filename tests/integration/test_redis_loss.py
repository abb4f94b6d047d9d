"""A deployment that Redis loses right after it was made comes back.

The orchestrator keeps the last deployments and plans it knew and writes them back
when Redis restarts empty. It must know a deployment from the moment Deploy
answers, not from its next read of Redis a second later: a Redis that loses its
data in between would otherwise lose that deployment for good (the plan still
answered from memory, but nothing left to route or roll out).
"""

from __future__ import annotations

import pytest
import redis
from support import LocalStack, wait_for

from resplit.models import Checkpoint, num_units
from resplit.models.tiny import build_tiny
from resplit.rpc.channels import sync_channel
from resplit.state import keys
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

pytestmark = pytest.mark.integration


def _undeploy(stack: LocalStack, name: str) -> None:
    with sync_channel(stack.orchestrator.address) as channel:
        orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Undeploy(
            orchestrator_pb2.UndeployRequest(deployment=name), timeout=30
        )


def test_a_deployment_lost_by_redis_right_after_deploy_is_restored(tmp_path):
    model_dir = build_tiny("llama", tmp_path / "llama", num_hidden_layers=2)
    stack = LocalStack(workers=1).start()
    try:
        plan = stack.deploy("lost", model_dir, [(0, num_units(Checkpoint(model_dir).config), 0)])
        with redis.Redis.from_url(stack.redis.url) as store:
            store.flushall()  # at once: the orchestrator has not read the deployment back yet
            wait_for(
                lambda: store.exists(keys.deployment("lost"), keys.plan("lost")) == 2,
                10,
                0.1,
                what="the deployment and its plan written back",
            )
            restored = store.get(keys.plan("lost"))
            assert restored is not None and common_pb2.Plan.FromString(restored) == plan
            # Undeployed, Redis emptied again (the epoch counter with it), deployed again: the
            # new epoch is above the old one, which the worker still knows (the soak's
            # "cannot commit epoch 1 of 'soak-2': epoch 2 is already active").
            _undeploy(stack, "lost")
            store.flushall()
            wait_for(lambda: store.exists(keys.node("worker-0")), 30, 0.1, what="worker-0 registered again")
        again = stack.deploy("lost", model_dir, [(0, num_units(Checkpoint(model_dir).config), 0)])
        assert again.epoch > plan.epoch
    finally:
        stack.stop()
