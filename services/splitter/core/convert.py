"""Protobuf <-> plain problem data. The only module of the core that sees protos.

Wire defaults are applied here, once: proto3 zeros mean "unset", so a node
with ``flops_per_s = 0`` takes the numbers of its ``device_profile``, all-zero
weights mean ``alpha = 1`` (latency only), mode UNSPECIFIED means RESPLIT and
solver UNSPECIFIED means EXACT. Anything malformed raises
:class:`ProblemError` naming the field.
"""

from __future__ import annotations

import math

from resplit.core import devices
from resplit.v1 import common_pb2, splitter_pb2

from .costmodel import Breakdown
from .problem import (
    Link,
    Mode,
    Model,
    Node,
    Objective,
    Plan,
    Policy,
    Problem,
    ProblemError,
    Segment,
    SolverKind,
    Unit,
    Workload,
    validate,
)

MODES = {
    splitter_pb2.SOLVE_MODE_UNSPECIFIED: Mode.RESPLIT,
    splitter_pb2.SOLVE_MODE_RESPLIT: Mode.RESPLIT,
    splitter_pb2.SOLVE_MODE_PLACEMENT_ONLY: Mode.PLACEMENT_ONLY,
}
SOLVERS = {
    splitter_pb2.SOLVER_KIND_UNSPECIFIED: SolverKind.EXACT,
    splitter_pb2.SOLVER_KIND_EXACT: SolverKind.EXACT,
    splitter_pb2.SOLVER_KIND_GREEDY: SolverKind.GREEDY,
    splitter_pb2.SOLVER_KIND_BRUTE_FORCE: SolverKind.BRUTE_FORCE,
}
SOLVER_TO_PROTO = {
    SolverKind.EXACT: splitter_pb2.SOLVER_KIND_EXACT,
    SolverKind.GREEDY: splitter_pb2.SOLVER_KIND_GREEDY,
    SolverKind.BRUTE_FORCE: splitter_pb2.SOLVER_KIND_BRUTE_FORCE,
}
OBJECTIVES = {
    common_pb2.OBJECTIVE_UNSPECIFIED: Objective.LATENCY,
    common_pb2.OBJECTIVE_LATENCY: Objective.LATENCY,
    common_pb2.OBJECTIVE_THROUGHPUT: Objective.THROUGHPUT,
}


def mode_from_proto(value: int) -> Mode:
    if value not in MODES:
        raise ProblemError(f"mode {value} is not a SolveMode")
    return MODES[value]


def solver_from_proto(value: int) -> SolverKind:
    if value not in SOLVERS:
        raise ProblemError(f"solver {value} is not a SolverKind")
    return SOLVERS[value]


def _node(pb: splitter_pb2.NodeProfile, index: int) -> Node:
    memory, flops, bandwidth = pb.memory_bytes, pb.flops_per_s, pb.memory_bandwidth_gbps * 1e9
    if pb.device_profile and (memory == 0 or flops == 0 or bandwidth == 0):
        device = devices.lookup(pb.device_profile)
        if device is None and flops == 0:
            raise ProblemError(
                f"nodes[{index}] ({pb.node_id!r}): flops_per_s is 0 and device_profile {pb.device_profile!r} "
                f"is not in the device table (known: {', '.join(devices.known())})"
            )
        if device is not None:
            memory = memory or device.memory_bytes
            flops = flops or device.flops_per_s
            bandwidth = bandwidth or device.memory_bandwidth_bps
    return Node(
        node_id=pb.node_id,
        memory_bytes=memory,
        flops_per_s=flops,
        utilization=pb.utilization,
        trusted=pb.trusted,
        device_profile=pb.device_profile,
        memory_bandwidth_bps=bandwidth,
    )


def model_from_proto(pb: splitter_pb2.ModelProfile) -> Model:
    units = tuple(
        Unit(
            index=u.index,
            kind=u.kind,
            param_bytes=u.param_bytes,
            kv_bytes_per_token=u.kv_bytes_per_token,
            flops_per_token=u.flops_per_token,
            activation_bytes_per_token=u.activation_bytes_per_token,
            attention_flops_per_position=u.attention_flops_per_position,
        )
        for u in pb.units
    )
    return Model(pb.name, pb.family, pb.dtype, units)


def plan_from_proto(pb: common_pb2.Plan) -> Plan:
    segments = tuple(Segment(s.units.start, s.units.end, s.node_id) for s in pb.segments)
    return Plan(segments, deployment=pb.deployment, epoch=pb.epoch)


def _policy(pb: common_pb2.Policy) -> Policy:
    if pb.objective not in OBJECTIVES:
        raise ProblemError(f"policy.objective {pb.objective} is not an Objective")
    alpha = pb.alpha
    if pb.alpha == 0 and pb.beta == 0 and pb.gamma == 0:
        alpha = 1.0  # all weights unset: plain latency
    return Policy(
        alpha=alpha,
        beta=pb.beta,
        gamma=pb.gamma,
        trusted_node_ids=frozenset(pb.trusted_node_ids),
        private_depth=pb.private_depth,
        objective=OBJECTIVES[pb.objective],
        soft_privacy=pb.soft_privacy,
        migration_weight=pb.migration_weight,
    )


def problem_from_proto(pb: splitter_pb2.Problem) -> Problem:
    """A validated :class:`Problem`; raises :class:`ProblemError` naming the bad field."""
    if not pb.HasField("model") or not pb.model.units:
        raise ProblemError(
            "problem.model has no units (profile the model first: SplitterService.ProfileModel)"
        )
    work = pb.workload
    for name in ("prefill_factor", "decode_factor"):
        value = getattr(work, name)
        if not (value >= 0 and math.isfinite(value)):
            raise ProblemError(f"workload.{name} must be a finite factor >= 0 (0 means 1), got {value}")
    problem = Problem(
        model=model_from_proto(pb.model),
        nodes=tuple(_node(n, j) for j, n in enumerate(pb.nodes)),
        links=tuple(Link(x.src, x.dst, x.bandwidth_mbps, x.rtt_ms) for x in pb.links),
        policy=_policy(pb.policy),
        workload=Workload(
            prompt_tokens=work.prompt_tokens,
            generate_tokens=work.generate_tokens,
            request_rate=work.request_rate,
            concurrent_sessions=work.concurrent_sessions or 1,
            prefill_factor=work.prefill_factor or 1.0,
            decode_factor=work.decode_factor or 1.0,
        ),
        current=plan_from_proto(pb.current) if pb.HasField("current") and pb.current.segments else None,
    )
    validate(problem)
    return problem


def breakdown_to_proto(b: Breakdown) -> common_pb2.CostBreakdown:
    return common_pb2.CostBreakdown(
        phi=b.phi,
        latency_ms=b.latency_ms,
        utilization=b.utilization,
        privacy=b.privacy,
        compute_ms=b.compute_ms,
        transfer_ms=b.transfer_ms,
        queueing_ms=b.queueing_ms,
        prefill_ms=b.prefill_ms,
        decode_ms_per_token=b.decode_ms_per_token,
        throughput_tps=b.throughput_tps,
        migration_gib=b.migration_gib,
        bottleneck_ms=b.bottleneck_ms,
    )


def plan_to_proto(plan: Plan, cost: Breakdown, reason: str, created_at: float) -> common_pb2.Plan:
    """The plan with its predicted cost; epoch stays 0 (the orchestrator stamps epochs)."""
    return common_pb2.Plan(
        deployment=plan.deployment,
        segments=[
            common_pb2.Segment(units=common_pb2.UnitRange(start=s.start, end=s.end), node_id=s.node_id)
            for s in plan.segments
        ],
        predicted=breakdown_to_proto(cost),
        created_at=created_at,
        reason=reason,
    )


def model_to_proto(model: Model) -> splitter_pb2.ModelProfile:
    return splitter_pb2.ModelProfile(
        name=model.name,
        family=model.family,
        dtype=model.dtype,
        units=[
            splitter_pb2.UnitProfile(
                index=u.index,
                kind=u.kind,
                param_bytes=u.param_bytes,
                kv_bytes_per_token=u.kv_bytes_per_token,
                flops_per_token=u.flops_per_token,
                activation_bytes_per_token=u.activation_bytes_per_token,
                attention_flops_per_position=u.attention_flops_per_position,
            )
            for u in model.units
        ],
    )
