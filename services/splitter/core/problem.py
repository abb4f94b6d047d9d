"""The split + placement problem as plain data (no protobuf, no grpc).

Everything the solvers and the cost model read lives here, already validated
and with defaults applied, so the algorithms never re-check wire input. The
vocabulary follows DESIGN.md: a *unit* is what a split can cut between
(0 = embedding, 1..L = blocks, L+1 = head), a *segment* is a unit range
``[start, end)`` on one node, a *plan* is the segments in unit order.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from resplit.core.profiles import Model, Unit

GIB = 1024**3


class ProblemError(ValueError):
    """A malformed problem; the message names the field and what is wrong with it."""


class Mode(enum.Enum):
    """PLACEMENT_ONLY keeps the current boundaries (the paper's migration); RESPLIT frees them (eq. 6)."""

    PLACEMENT_ONLY = "placement-only"
    RESPLIT = "resplit"


class SolverKind(enum.Enum):
    EXACT = "exact"
    GREEDY = "greedy"
    BRUTE_FORCE = "brute-force"


class Objective(enum.Enum):
    #: Minimise Phi = alpha L + beta U + gamma P (+ delta M for migration).
    LATENCY = "latency"
    #: Minimise the slowest pipeline stage first, then Phi among the plans that reach it.
    THROUGHPUT = "throughput"


@dataclass(frozen=True)
class Node:
    node_id: str
    memory_bytes: int
    flops_per_s: float
    utilization: float = 0.0
    trusted: bool = False
    device_profile: str = ""
    #: Bytes per second; 0 means unknown (compute-bound only).
    memory_bandwidth_bps: float = 0.0

    @property
    def usable(self) -> bool:
        """A node at 100 % background utilization has no capacity left for us (M/M/1 diverges)."""
        return self.utilization < 1.0


@dataclass(frozen=True)
class Link:
    src: str
    dst: str
    bandwidth_mbps: float
    rtt_ms: float


@dataclass(frozen=True)
class Policy:
    alpha: float = 1.0
    beta: float = 0.0
    gamma: float = 0.0
    trusted_node_ids: frozenset[str] = frozenset()
    #: Units 0..private_depth and the head are privacy-critical.
    private_depth: int = 0
    objective: Objective = Objective.LATENCY
    soft_privacy: bool = False
    #: Phi per GiB moved away from the current plan's nodes.
    migration_weight: float = 0.0


@dataclass(frozen=True)
class Workload:
    prompt_tokens: int = 128
    generate_tokens: int = 0
    request_rate: float = 0.0
    concurrent_sessions: int = 1
    #: Measured over modelled compute time of a prefill / a decode step (the orchestrator's
    #: online correction of this cost model; 1: the roofline as it is).
    prefill_factor: float = 1.0
    decode_factor: float = 1.0

    @property
    def decode_steps(self) -> int:
        """The prefill yields the first new token; every further token is one decode step."""
        return max(self.generate_tokens - 1, 0)


@dataclass(frozen=True)
class Segment:
    start: int
    end: int
    node_id: str


@dataclass(frozen=True)
class Plan:
    segments: tuple[Segment, ...]
    deployment: str = ""
    epoch: int = 0

    def boundaries(self) -> tuple[int, ...]:
        """Interior cut points (unit index where a segment starts), excluding 0."""
        return tuple(s.start for s in self.segments[1:])

    def node_of_units(self, num_units: int) -> list[str]:
        owner = [""] * num_units
        for seg in self.segments:
            for i in range(seg.start, min(seg.end, num_units)):
                owner[i] = seg.node_id
        return owner


@dataclass(frozen=True)
class Problem:
    model: Model
    nodes: tuple[Node, ...]
    links: tuple[Link, ...] = ()
    policy: Policy = field(default_factory=Policy)
    workload: Workload = field(default_factory=Workload)
    current: Plan | None = None

    @property
    def num_units(self) -> int:
        return self.model.num_units

    def node_index(self) -> dict[str, int]:
        return {n.node_id: j for j, n in enumerate(self.nodes)}

    def is_trusted(self, node: Node) -> bool:
        return node.trusted or node.node_id in self.policy.trusted_node_ids

    def critical_units(self) -> list[int]:
        """Units that see raw input or produce output: 0..private_depth and the head (constraint 5)."""
        n = self.num_units
        return sorted(set(range(min(self.policy.private_depth, n - 1) + 1)) | {n - 1})

    def unit_memory_bytes(self, unit: Unit) -> int:
        """Weights plus the KV cache of every concurrent session at full context."""
        context = self.workload.prompt_tokens + self.workload.generate_tokens
        return unit.param_bytes + unit.kv_bytes_per_token * context * self.workload.concurrent_sessions


def _finite(value: float, where: str, *, minimum: float = 0.0, strict: bool = False) -> None:
    if not math.isfinite(value):
        raise ProblemError(f"{where} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ProblemError(f"{where} must be {relation} {minimum:g}, got {value:g}")


def validate(problem: Problem) -> None:
    """Raise :class:`ProblemError` unless ``problem`` is well formed (not: feasible)."""
    units = problem.model.units
    if len(units) < 3:
        raise ProblemError(
            f"model.units: a model has at least 3 units (embedding, one block, head), got {len(units)}"
        )
    for i, unit in enumerate(units):
        where = f"model.units[{i}]"
        if unit.index != i:
            raise ProblemError(f"{where}.index is {unit.index}, expected {i} (units must be in order)")
        if unit.kind and unit.kind not in ("embedding", "block", "head"):
            raise ProblemError(f"{where}.kind {unit.kind!r} is not one of embedding, block, head")
        _finite(unit.flops_per_token, f"{where}.flops_per_token")
        _finite(unit.attention_flops_per_position, f"{where}.attention_flops_per_position")
    if not problem.nodes:
        raise ProblemError("nodes: a problem needs at least one node")
    seen: set[str] = set()
    for j, node in enumerate(problem.nodes):
        where = f"nodes[{j}]"
        if not node.node_id:
            raise ProblemError(f"{where}.node_id is empty")
        if node.node_id in seen:
            raise ProblemError(f"{where}.node_id {node.node_id!r} appears twice")
        seen.add(node.node_id)
        where = f"node {node.node_id!r}"
        if node.memory_bytes <= 0:
            raise ProblemError(f"{where}: memory_bytes must be > 0 (or a known device_profile)")
        _finite(node.flops_per_s, f"{where}: flops_per_s", strict=True)
        _finite(node.memory_bandwidth_bps, f"{where}: memory_bandwidth_gbps")
        _finite(node.utilization, f"{where}: utilization")
        if node.utilization > 1.0:
            raise ProblemError(f"{where}: utilization must be in [0, 1], got {node.utilization:g}")
    pairs: set[tuple[str, str]] = set()
    for k, link in enumerate(problem.links):
        where = f"links[{k}] ({link.src}->{link.dst})"
        for end in (link.src, link.dst):
            if end not in seen:
                raise ProblemError(f"{where}: unknown node {end!r}")
        if link.src == link.dst:
            raise ProblemError(f"{where}: a link joins two different nodes")
        if (link.src, link.dst) in pairs:
            raise ProblemError(f"{where}: duplicate link")
        pairs.add((link.src, link.dst))
        _finite(link.bandwidth_mbps, f"{where}.bandwidth_mbps", strict=True)
        _finite(link.rtt_ms, f"{where}.rtt_ms")
    policy = problem.policy
    for name in ("alpha", "beta", "gamma", "migration_weight"):
        _finite(getattr(policy, name), f"policy.{name}")
    unknown = sorted(policy.trusted_node_ids - seen)
    if unknown:
        raise ProblemError(f"policy.trusted_node_ids names unknown nodes: {', '.join(unknown)}")
    if policy.private_depth > problem.model.num_blocks:
        raise ProblemError(
            f"policy.private_depth is {policy.private_depth}, but the model has only "
            f"{problem.model.num_blocks} blocks"
        )
    work = problem.workload
    if work.prompt_tokens < 1:
        raise ProblemError("workload.prompt_tokens must be >= 1")
    if work.concurrent_sessions < 1:
        raise ProblemError("workload.concurrent_sessions must be >= 1")
    _finite(work.request_rate, "workload.request_rate")
    if problem.current is not None:
        _validate_plan(problem.current, problem.num_units)


def _validate_plan(plan: Plan, num_units: int) -> None:
    expected = 0
    for i, seg in enumerate(plan.segments):
        if seg.start != expected:
            raise ProblemError(f"current.segments[{i}] starts at unit {seg.start}, expected {expected}")
        if seg.end <= seg.start:
            raise ProblemError(f"current.segments[{i}] [{seg.start}, {seg.end}) is empty")
        expected = seg.end
    if not plan.segments or expected != num_units:
        raise ProblemError(f"current plan ends at unit {expected}, but the model has {num_units} units")
