"""Shared builders for the splitter tests: the published Llama-3-8B config, small random
problems for property tests, the edge/MEC/cloud scenario, and an independent check of
constraints (3)-(5)."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from resplit.core import devices
from resplit.core.profiles import profile
from services.splitter.core.problem import (
    GIB,
    Link,
    Mode,
    Model,
    Node,
    Objective,
    Plan,
    Policy,
    Problem,
    Segment,
    Unit,
    Workload,
)

# meta-llama/Meta-Llama-3-8B config.json as published (the fields a profile reads, and the rest).
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "vocab_size": 128256,
}

MODEL = profile(LLAMA3_8B, "float16")

#: Most units per node count so that brute force stays at a few thousand assignments.
MAX_UNITS = {1: 10, 2: 10, 3: 8, 4: 7, 5: 6}


def check_constraints(problem: Problem, plan: Plan) -> list[str]:
    """Constraints (3), (4), (5) checked from scratch, sharing no code with the cost model."""
    n = problem.num_units
    broken, expected = [], 0
    nodes = {x.node_id: x for x in problem.nodes}
    for seg in plan.segments:
        if seg.start != expected or seg.end <= seg.start or seg.node_id not in nodes:
            broken.append(f"(3) segment {seg} out of order or on an unknown node")
        expected = seg.end
    if expected != n:
        broken.append("(3) the plan does not cover every unit exactly once")
    context = problem.workload.prompt_tokens + problem.workload.generate_tokens
    used: dict[str, int] = {}
    for seg in plan.segments:
        for unit in problem.model.units[seg.start : seg.end]:
            size = unit.param_bytes + unit.kv_bytes_per_token * context * problem.workload.concurrent_sessions
            used[seg.node_id] = used.get(seg.node_id, 0) + size
    for node_id, size in used.items():
        if size > nodes[node_id].memory_bytes:
            broken.append(f"(4) node {node_id} holds {size} B > {nodes[node_id].memory_bytes} B")
    if not problem.policy.soft_privacy:
        trusted = {x.node_id for x in problem.nodes if x.trusted} | problem.policy.trusted_node_ids
        critical = set(range(problem.policy.private_depth + 1)) | {n - 1}
        for seg in plan.segments:
            for i in range(seg.start, seg.end):
                if i in critical and seg.node_id not in trusted:
                    broken.append(f"(5) unit {i} on untrusted node {seg.node_id}")
    return broken


@st.composite
def problems(
    draw, objective: Objective = Objective.LATENCY, mode: Mode = Mode.RESPLIT, reuse: bool = False
) -> Problem:
    """Small random problems: up to 10 units and 5 nodes, random trust, memory, load and links.

    ``reuse``: node 0 is the only trusted node and the fastest, with memory for only part of the
    model - the embedding and the head must share it (the paper's S1 + S3) and the DP would like
    to put more there than fits, so node-wide memory binds.
    """
    count = draw(st.integers(2 if reuse else 1, 5))
    n = draw(st.integers(3, MAX_UNITS[count]))
    depth = min(draw(st.sampled_from([0, 1] if reuse else [0, 0, 1, 2, n - 2])), n - 2)
    units = []
    for i in range(n):
        kind = "embedding" if i == 0 else "head" if i == n - 1 else "block"
        size = draw(st.integers(1, 8) if reuse and kind != "block" else st.integers(1, 64))
        units.append(
            Unit(
                index=i,
                kind=kind,
                param_bytes=size * 2**20,
                kv_bytes_per_token=draw(st.sampled_from([0, 1024, 4096])),
                flops_per_token=draw(st.floats(1e6, 5e9)),
                activation_bytes_per_token=draw(st.sampled_from([2048, 8192, 65536])),
                attention_flops_per_position=draw(st.sampled_from([0.0, 1e4, 1e5])),
            )
        )
    model = Model("random", "llama", "float16", tuple(units))
    total = sum(u.param_bytes for u in units)
    # With reuse, node 0 holds the privacy-critical units (and their KV) plus part of the rest.
    critical = sum(units[i].param_bytes + 2**20 for i in [*range(depth + 1), n - 1])
    nodes = tuple(
        Node(
            node_id=f"n{j}",
            memory_bytes=(
                critical + int((total - critical) * draw(st.floats(0.1, 0.6)))
                if reuse and j == 0
                else int(total * draw(st.floats(0.3 if j == 0 else 0.15, 1.3)))
            ),
            flops_per_s=1e14 if reuse and j == 0 else draw(st.floats(1e10, 5e13)),
            utilization=draw(st.sampled_from([0.0, 0.3, 0.6, 0.9])),
            # Node 0 is usually trusted (else hard privacy makes most draws infeasible), others rarely.
            trusted=j == 0 if reuse else draw(st.integers(0, 19)) < (17 if j == 0 else 6),
            device_profile="",
            memory_bandwidth_bps=draw(st.sampled_from([0.0, 5e10, 1e12])),
        )
        for j in range(count)
    )
    links = []
    for a in range(count):
        for b in range(count):
            if a != b and (reuse or draw(st.integers(0, 9)) < 8):
                links.append(
                    Link(f"n{a}", f"n{b}", draw(st.floats(1.0, 10_000.0)), draw(st.floats(0.0, 50.0)))
                )
    soft = not reuse and draw(st.booleans()) and draw(st.booleans())
    current = None
    if mode is Mode.PLACEMENT_ONLY or draw(st.booleans()):
        cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=min(3, n - 1))))
        points = [0, *cuts, n]
        current = Plan(
            tuple(Segment(a, b, f"n{draw(st.integers(0, count - 1))}") for a, b in itertools.pairwise(points))
        )
    policy = Policy(
        alpha=1.0,
        beta=draw(st.sampled_from([0.0, 0.0, 50.0, 5000.0])),
        gamma=draw(st.sampled_from([0.0, 100.0, 10_000.0])),
        private_depth=depth,
        objective=objective,
        soft_privacy=soft,
        migration_weight=draw(st.sampled_from([0.0, 0.0, 20.0])),
        trusted_node_ids=frozenset({"n0"}) if reuse or draw(st.integers(0, 4)) == 0 else frozenset(),
    )
    work = Workload(
        prompt_tokens=draw(st.integers(1, 256)),
        generate_tokens=draw(st.integers(0, 64)),
        request_rate=draw(st.sampled_from([0.0, 0.0, 0.05, 0.5])),
    )
    return Problem(model, nodes, tuple(links), policy, work, current)


def device_node(
    name: str, device: str, utilization: float, memory_gib: float | None = None, trusted=False
) -> Node:
    spec = devices.lookup(device)
    memory = int(memory_gib * GIB) if memory_gib else spec.memory_bytes
    return Node(name, memory, spec.flops_per_s, utilization, trusted, spec.name, spec.memory_bandwidth_bps)


def edge_mec_cloud(backhaul_mbps: float, mec_load: float, edge_free_gib: float = 24, radio_mbps: float = 400):
    nodes = (
        device_node("edge", "Jetson-AGX-Orin-64GB", 0.1, edge_free_gib, trusted=True),
        device_node("mec", "A100-40GB", mec_load),
        device_node("cloud", "H100-SXM", 0.05),
    )
    links = []
    for a, b, bandwidth, rtt in (
        ("edge", "mec", radio_mbps, 4.0),
        ("mec", "cloud", backhaul_mbps, 12.0),
        ("edge", "cloud", backhaul_mbps, 15.0),
    ):
        links += [Link(a, b, bandwidth, rtt), Link(b, a, bandwidth, rtt)]
    return Problem(MODEL, nodes, tuple(links), Policy(private_depth=1), Workload(512, 64, request_rate=0.02))
