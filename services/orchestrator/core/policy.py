"""Policy defaults from the paper (Table I) and Phi's weights.

Why here: the orchestrator owns deployments, and every deployment without an
explicit policy gets exactly these numbers, so they are written once.
"""

from __future__ import annotations

from resplit.v1 import common_pb2

L_MAX_MS = 150.0
U_MAX = 0.85
B_MIN_MBPS = 50.0
T_COOL_S = 30.0


def default_policy() -> common_pb2.Policy:
    """alpha=1, beta=gamma=0 with hard privacy; thresholds from Table I."""
    return common_pb2.Policy(
        alpha=1.0,
        beta=0.0,
        gamma=0.0,
        thresholds=common_pb2.Thresholds(
            l_max_ms=L_MAX_MS, u_max=U_MAX, b_min_mbps=B_MIN_MBPS, t_cool_s=T_COOL_S
        ),
        private_depth=0,
        objective=common_pb2.OBJECTIVE_LATENCY,
        interval_s=5.0,
        hysteresis=0.05,
    )
