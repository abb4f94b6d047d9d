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


INTERVAL_S = 5.0


def effective_thresholds(policy: common_pb2.Policy) -> common_pb2.Thresholds:
    """The policy's Theta with Table I in place of every unset (0) threshold."""
    given = policy.thresholds
    return common_pb2.Thresholds(
        l_max_ms=given.l_max_ms or L_MAX_MS,
        u_max=given.u_max or U_MAX,
        b_min_mbps=given.b_min_mbps or B_MIN_MBPS,
        t_cool_s=given.t_cool_s or T_COOL_S,
    )


def interval_of(policy: common_pb2.Policy) -> float:
    """Delta t of a deployment: its policy's, else 5 s."""
    return policy.interval_s if policy.interval_s > 0 else INTERVAL_S


TPOT_MAX_MS = 50.0
TTFT, TPOT, REQUEST = "ttft", "tpot", "request"


def latency_bounds(policy: common_pb2.Policy, generative: bool) -> list[tuple[str, float]]:
    """The latency signals the L_max trigger compares, each with its bound.

    Why one named signal: the SLA is stated on one quantity (TTFT for a chat-like
    decoder, one embedding call for an encoder), and a trigger that compares another
    one (the whole request, always longer) fires on every cycle. Unspecified: TTFT
    for decoders, the whole request for encoders. TPOT alone is bounded by L_max;
    with both, TTFT by L_max and TPOT by ``tpot_max_ms`` (50 ms when unset).
    """
    theta = effective_thresholds(policy)
    tpot_max = policy.thresholds.tpot_max_ms or TPOT_MAX_MS
    signal = policy.latency_signal
    if signal == common_pb2.LATENCY_SIGNAL_UNSPECIFIED:
        signal = common_pb2.LATENCY_SIGNAL_TTFT if generative else common_pb2.LATENCY_SIGNAL_REQUEST
    if not generative:  # an encoder has no first token of its own: its request is the signal
        signal = common_pb2.LATENCY_SIGNAL_REQUEST
    return {
        common_pb2.LATENCY_SIGNAL_TTFT: [(TTFT, theta.l_max_ms)],
        common_pb2.LATENCY_SIGNAL_TPOT: [(TPOT, theta.l_max_ms)],
        common_pb2.LATENCY_SIGNAL_TTFT_AND_TPOT: [(TTFT, theta.l_max_ms), (TPOT, tpot_max)],
        common_pb2.LATENCY_SIGNAL_REQUEST: [(REQUEST, theta.l_max_ms)],
    }[signal]
