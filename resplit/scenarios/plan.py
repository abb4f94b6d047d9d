"""The scenario ``resplit plan solve`` hands the splitter: a model, nodes, links,
a policy and a workload.

Validated (pydantic, :mod:`.loading`) so that a typo fails with the field and
the reason, before any RPC: ``scenario.yaml: nodes.1.utilization: Input should
be less than or equal to 1 (got 1.5)``. The model is a transformers
``config.json`` (inline or a file next to the scenario); the splitter turns it
into a unit profile (``SplitterService.ProfileModel``) and :func:`to_problem`
assembles the ``Problem`` proto from that profile and the rest of the scenario.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..v1 import common_pb2, splitter_pb2
from .loading import NodeId, ScenarioError, Strict, read_mapping, validate

GIB = 1024**3


class ModelSpec(Strict):
    #: The transformers config.json, inline.
    config: dict[str, Any] | None = None
    #: Or a path to it (relative paths are relative to the scenario file).
    config_file: str | None = None
    dtype: str = "float16"

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.config is None) == (self.config_file is None):
            raise ValueError("give exactly one of config and config_file")
        return self


class NodeSpec(Strict):
    id: NodeId = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)
    #: A name in the splitter's device table; fills what is not given below.
    device: str = ""
    memory_gib: float | None = Field(None, gt=0, description="memory free for this model")
    tflops: float | None = Field(None, gt=0, description="sustained TFLOP/s")
    memory_bandwidth_gbps: float | None = Field(None, gt=0)
    utilization: float = Field(0.0, ge=0, le=1, description="background load, 0..1")
    trusted: bool = False

    @model_validator(mode="after")
    def _has_compute(self) -> NodeSpec:
        if not self.device and self.tflops is None:
            raise ValueError("give a device (from the splitter's device table) or tflops")
        if not self.device and self.memory_gib is None:
            raise ValueError("give a device or memory_gib")
        return self


class LinkSpec(Strict):
    between: tuple[NodeId, NodeId]
    bandwidth_mbps: float = Field(gt=0)
    rtt_ms: float = Field(ge=0)
    #: Only from the first node to the second (default: both ways).
    directed: bool = False


class PolicySpec(Strict):
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(0.0, ge=0)
    gamma: float = Field(0.0, ge=0)
    private_depth: int = Field(0, ge=0)
    #: Nodes trusted by this policy in addition to those marked trusted.
    trusted: list[NodeId] = []
    objective: Literal["latency", "throughput"] = "latency"
    soft_privacy: bool = False
    migration_weight: float = Field(0.0, ge=0)


class WorkloadSpec(Strict):
    prompt_tokens: int = Field(128, ge=1)
    generate_tokens: int = Field(32, ge=0)
    request_rate: float = Field(0.0, ge=0)
    concurrent_sessions: int = Field(1, ge=1)


class SegmentSpec(Strict):
    units: tuple[int, int]
    node: NodeId


def check_nodes_and_links(ids: list[NodeId], links: list[tuple[NodeId, NodeId]]) -> set[NodeId]:
    """The node ids, once each; raises ValueError for an id given twice or a link that
    names an unknown node or joins a node to itself (``links``: each link's two ends)."""
    doubled = sorted({i for i in ids if ids.count(i) > 1})
    if doubled:
        raise ValueError(f"node ids appear twice: {', '.join(doubled)}")
    known = set(ids)
    for k, (a, b) in enumerate(links):
        for end in (a, b):
            if end not in known:
                raise ValueError(f"links[{k}] names unknown node {end!r}")
        if a == b:
            raise ValueError(f"links[{k}] joins {a!r} to itself")
    return known


class Scenario(Strict):
    name: str
    description: str = ""
    model: ModelSpec
    nodes: list[NodeSpec] = Field(min_length=1)
    links: list[LinkSpec] = []
    policy: PolicySpec = PolicySpec()
    workload: WorkloadSpec = WorkloadSpec()
    #: The plan in force (needed by --mode placement-only).
    current: list[SegmentSpec] | None = None

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        known = check_nodes_and_links([n.id for n in self.nodes], [link.between for link in self.links])
        for name in self.policy.trusted:
            if name not in known:
                raise ValueError(f"policy.trusted names unknown node {name!r}")
        for k, seg in enumerate(self.current or []):
            if seg.node not in known:
                raise ValueError(f"current[{k}] names unknown node {seg.node!r}")
        return self


def load(path: Path) -> Scenario:
    """Read and validate a scenario file; raises :class:`ScenarioError` with file, field and reason."""
    data = read_mapping(path, "a scenario is a mapping (name, model, nodes, ...)")
    return validate(Scenario, data, path)


def model_config_json(scenario: Scenario, base: Path) -> str:
    """The model's config.json text (read from ``config_file`` relative to ``base`` if need be)."""
    if scenario.model.config is not None:
        return json.dumps(scenario.model.config)
    path = Path(scenario.model.config_file or "")
    path = path if path.is_absolute() else base / path
    try:
        return path.read_text()
    except OSError as exc:
        raise ScenarioError(f"model.config_file {path}: cannot read it: {exc.strerror}") from None


def to_problem(scenario: Scenario, model: splitter_pb2.ModelProfile) -> splitter_pb2.Problem:
    """The ``Problem`` proto for ``scenario`` with the splitter's profile of its model."""
    nodes = [
        splitter_pb2.NodeProfile(
            node_id=n.id,
            memory_bytes=int(n.memory_gib * GIB) if n.memory_gib else 0,
            flops_per_s=n.tflops * 1e12 if n.tflops else 0.0,
            utilization=n.utilization,
            trusted=n.trusted,
            device_profile=n.device,
            memory_bandwidth_gbps=n.memory_bandwidth_gbps or 0.0,
        )
        for n in scenario.nodes
    ]
    links = []
    for link in scenario.links:
        a, b = link.between
        pairs = [(a, b)] if link.directed else [(a, b), (b, a)]
        links += [
            common_pb2.Link(src=s, dst=d, bandwidth_mbps=link.bandwidth_mbps, rtt_ms=link.rtt_ms)
            for s, d in pairs
        ]
    p = scenario.policy
    policy = common_pb2.Policy(
        alpha=p.alpha,
        beta=p.beta,
        gamma=p.gamma,
        trusted_node_ids=p.trusted,
        private_depth=p.private_depth,
        objective=common_pb2.OBJECTIVE_THROUGHPUT
        if p.objective == "throughput"
        else common_pb2.OBJECTIVE_LATENCY,
        soft_privacy=p.soft_privacy,
        migration_weight=p.migration_weight,
    )
    w = scenario.workload
    problem = splitter_pb2.Problem(
        model=model,
        nodes=nodes,
        links=links,
        policy=policy,
        workload=splitter_pb2.Workload(
            prompt_tokens=w.prompt_tokens,
            generate_tokens=w.generate_tokens,
            request_rate=w.request_rate,
            concurrent_sessions=w.concurrent_sessions,
        ),
    )
    if scenario.current:
        problem.current.deployment = scenario.name
        for seg in scenario.current:
            problem.current.segments.add(
                units=common_pb2.UnitRange(start=seg.units[0], end=seg.units[1]), node_id=seg.node
            )
    return problem
