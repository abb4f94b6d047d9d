"""The testbed's scenarios: emulated nodes, shaped links, background load and a workload, as YAML.

A testbed scenario is what ``resplit testbed run`` plays: it builds one
emulated node per ``nodes`` entry (a cgroup and a network namespace, a worker
emulating a device or running the real model), shapes ``links`` and changes
them on their timelines, raises background ``load`` on nodes, and drives the
``workload`` for ``duration_s`` seconds with the control loop adaptive or
static (``control``). Validated with pydantic: a bad file fails with the
field and the reason (``paper.yaml: links.0.changes.1.at_s: ...``), before
anything is built.

Links: the testbed is a star (every node's namespace hangs off the host
bridge), so a link is its first node's access link, shaped both ways (the
node's egress and the host side of its veth): ``between: [cloud, mec1]`` at
50 Mb/s makes every path into and out of ``cloud`` a 50 Mb/s backhaul, and
leaves the MEC nodes' paths to each other unshaped. One link per node.
Delay (``rtt_ms``, ``jitter_ms``) and ``loss_pct`` use netem where the kernel
has it, else the testbed's userspace delay relay (testbed/relay.py: the access
link's RTT on every connection into or out of the node); with neither (no
iptables) the runner says so and shapes the rate alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from ..core.devices import known, lookup
from .loading import NodeId, ScenarioError, Strict, override, read_mapping, validate
from .plan import SegmentSpec as Placement
from .plan import check_nodes_and_links


class TinyModel(Strict):
    """A small random model built on this machine (resplit.models.tiny), for nodes that
    really compute on the host CPU: nothing is downloaded, the same seed gives the same
    weights. ``config`` overrides the family's tiny defaults (hidden_size, layers, ...)."""

    family: Literal["llama", "qwen2", "qwen2-sliding", "mistral", "gpt2"]
    seed: int = Field(0, ge=0)
    config: dict[str, int | float | bool | str] = {}


class ModelRef(Strict):
    #: A Hugging Face model directory (only config.json is read by emulated workers),
    #: relative to the scenario file ...
    dir: str | None = None
    #: ... or a tiny model built into the run's results folder before the run.
    tiny: TinyModel | None = None
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"

    @model_validator(mode="after")
    def _one_source(self) -> ModelRef:
        if (self.dir is None) == (self.tiny is None):
            raise ValueError("give exactly one of dir (a model directory) and tiny (a model built here)")
        return self


class TestbedNode(Strict):
    id: NodeId = Field(pattern=r"^[A-Za-z0-9_-]{1,12}$", description="short: it names a network namespace")
    #: Device profile (resplit.core.devices): the emulated device, and what the splitter assumes.
    device: str
    #: Emulated (the worker waits what the device would take) or real (it computes on the host CPU).
    emulate: bool = True
    memory_gib: float | None = Field(
        None, gt=0, description="memory offered to segments (default: the device's)"
    )
    trusted: bool = False
    #: Host CPU cores the node's cgroup may use.
    cores: float = Field(0.5, gt=0, le=64)

    @model_validator(mode="after")
    def _known_device(self) -> TestbedNode:
        if lookup(self.device) is None:
            raise ValueError(
                f"device {self.device!r} is not in the device table (known: {', '.join(known())})"
            )
        return self


class LinkChange(Strict):
    at_s: float = Field(ge=0)
    bandwidth_mbps: float | None = Field(None, gt=0)
    rtt_ms: float | None = Field(None, ge=0)
    jitter_ms: float | None = Field(None, ge=0)
    loss_pct: float | None = Field(None, ge=0, le=100)


class TestbedLink(Strict):
    #: The first node's access link (both ways); the second names the far end, for reading.
    between: tuple[NodeId, NodeId]
    bandwidth_mbps: float = Field(gt=0)
    rtt_ms: float = Field(0.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0)
    loss_pct: float = Field(0.0, ge=0, le=100)
    #: Changes over time, in order of ``at_s``.
    changes: list[LinkChange] = []

    @model_validator(mode="after")
    def _ordered(self) -> TestbedLink:
        times = [c.at_s for c in self.changes]
        if times != sorted(times):
            raise ValueError(f"changes must be in time order, got at_s {times}")
        return self


class LoadEvent(Strict):
    node: NodeId
    start_s: float = Field(ge=0)
    end_s: float = Field(gt=0)
    #: Share of the node's device taken by another tenant while the event lasts.
    utilization: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _span(self) -> LoadEvent:
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        return self


class TestbedWorkload(Strict):
    arrival: Literal["poisson", "constant", "closed"] = "poisson"
    #: Requests per second over all clients (poisson / constant); closed = back to back.
    rate_per_s: float = Field(1.0, gt=0)
    clients: int = Field(1, ge=1, le=64)
    prompt_tokens: int = Field(128, ge=1, le=8192)
    generate_tokens: int = Field(32, ge=1, le=4096)
    #: Stepped open-loop arrivals (capacity): the rate in req/s of each ``step_s`` in turn (the
    #: last one holds to the end); empty: ``rate_per_s`` throughout.
    steps: list[float] = Field([], max_length=64)
    step_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _steps(self) -> TestbedWorkload:
        if any(not r > 0 for r in self.steps):
            raise ValueError(f"workload.steps must all be > 0 req/s, got {self.steps}")
        return self

    def rate_at(self, t_s: float) -> float:
        """Requests per second over all clients at ``t_s`` after t = 0."""
        if not self.steps:
            return self.rate_per_s
        return self.steps[min(int(max(t_s, 0.0) / self.step_s), len(self.steps) - 1)]


class Thresholds(Strict):
    """Θ: the triggers of Alg. 1."""

    l_max_ms: float | None = Field(None, gt=0)
    u_max: float | None = Field(None, gt=0, le=1)
    b_min_mbps: float | None = Field(None, gt=0)
    t_cool_s: float | None = Field(None, ge=0)


class TestbedPolicy(Strict):
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(0.0, ge=0)
    gamma: float = Field(0.0, ge=0)
    private_depth: int = Field(0, ge=0)
    thresholds: Thresholds = Thresholds()
    #: Control-loop period Δt, seconds.
    interval_s: float = Field(1.0, gt=0)
    #: The latency a request must meet to count as attained (per token, ms).
    sla_ms: float = Field(150.0, gt=0)


class Control(Strict):
    #: Run Alg. 1 (adaptive) or keep the initial plan (static, orchestrator --no-adaptive).
    adaptive: bool = True
    #: Fit the cost model's online correction (orchestrator --no-cost-correction when false).
    cost_correction: bool = True
    #: The plan deployed at t = 0 (default: the splitter's choice at the start).
    initial: list[Placement] = []


class TestbedScenario(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = 0
    duration_s: float = Field(gt=0, le=3600)
    #: Seconds between the deploy and t = 0 (clients and timeline start): the control loop may
    #: leave the initial plan before traffic, as a running system has (its changes still count).
    warmup_s: float = Field(0.0, ge=0, le=600)
    model: ModelRef
    nodes: list[TestbedNode] = Field(min_length=1, max_length=16)
    links: list[TestbedLink] = []
    load: list[LoadEvent] = []
    workload: TestbedWorkload = TestbedWorkload()
    policy: TestbedPolicy = TestbedPolicy()
    control: Control = Control()

    @model_validator(mode="after")
    def _references(self) -> TestbedScenario:
        known_ids = check_nodes_and_links([n.id for n in self.nodes], [link.between for link in self.links])
        shaped: set[NodeId] = set()
        for k, link in enumerate(self.links):
            if link.between[0] in shaped:
                raise ValueError(
                    f"links[{k}]: {link.between[0]!r} already has a shaped link (the testbed shapes a "
                    "node's egress, one link per node)"
                )
            shaped.add(link.between[0])
            for c in link.changes:
                if c.at_s > self.duration_s:
                    raise ValueError(f"links[{k}] changes at {c.at_s} s, after duration_s {self.duration_s}")
        for k, event in enumerate(self.load):
            if event.node not in known_ids:
                raise ValueError(f"load[{k}] names unknown node {event.node!r}")
            if event.start_s > self.duration_s:
                raise ValueError(f"load[{k}] starts at {event.start_s} s, after duration_s {self.duration_s}")
        expected = 0
        for k, seg in enumerate(self.control.initial):
            if seg.node not in known_ids:
                raise ValueError(f"control.initial[{k}] names unknown node {seg.node!r}")
            if seg.units[0] != expected or seg.units[1] <= seg.units[0]:
                raise ValueError(
                    f"control.initial[{k}]: units {list(seg.units)} do not follow unit {expected}"
                )
            expected = seg.units[1]
        return self

    def model_dir(self, base: Path) -> Path:
        """Where the model is: its directory, or for ``tiny`` where the run builds it
        (``base`` is then the results folder)."""
        if self.model.tiny is not None:
            return base / "model"
        path = Path(self.model.dir or "")
        return path if path.is_absolute() else base / path


def load(path: Path, overrides: dict | None = None) -> TestbedScenario:
    """Read and validate a testbed scenario; raises ScenarioError with file, field and reason.

    ``overrides`` (the CLI's --set) replace keys; a dotted key reaches into
    mappings (``control.adaptive``)."""
    data = read_mapping(path, "a testbed scenario is a mapping (name, nodes, ...)")
    for key, value in (overrides or {}).items():
        override(data, key, value, path)
    scenario = validate(TestbedScenario, data, path)
    model_dir = scenario.model_dir(Path(path).parent)
    if scenario.model.tiny is None and not (model_dir / "config.json").is_file():
        raise ScenarioError(f"{path}: model.dir: no config.json in {model_dir}")
    return scenario
