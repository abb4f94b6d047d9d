"""Table I defaults are what a deployment without a policy gets."""

from __future__ import annotations

from resplit.v1 import common_pb2
from services.orchestrator.core.policy import default_policy


def test_table_one_defaults():
    policy = default_policy()
    assert policy.thresholds.l_max_ms == 150.0
    assert policy.thresholds.u_max == 0.85
    assert policy.thresholds.b_min_mbps == 50.0
    assert policy.thresholds.t_cool_s == 30.0
    assert policy.objective == common_pb2.OBJECTIVE_LATENCY
    assert not policy.soft_privacy
