"""A trusted edge device, a loaded MEC server and an idle cloud GPU behind a thin link, serving
Llama-3-8B: as bandwidth and load change, the plan moves the way a person would predict.

Numbers (device table): Jetson Orin edge with 24 GiB free, A100 MEC one 400 Mb/s radio hop away
(4 ms), H100 cloud behind the backhaul (12 ms from the MEC, 15 ms from the edge). A 512-token
prompt, 64 new tokens. The edge keeps the embedding, block 1 and the head (private depth 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from splitter_cases import LLAMA3_8B, MODEL, edge_mec_cloud

from resplit.core import devices
from resplit.scenarios import plan as scenario_mod
from services.splitter.core import convert
from services.splitter.core.problem import Problem
from services.splitter.core.solve import solve

ROOT = Path(__file__).resolve().parents[2]


def _blocks_on(problem: Problem) -> tuple[str, dict[int, str]]:
    plan = solve(problem).plan
    owner = dict(enumerate(plan.node_of_units(problem.num_units)))
    hosts = [owner[i] for i in range(2, 33)]
    return max(set(hosts), key=hosts.count), owner


@pytest.mark.parametrize(
    ("backhaul", "mec_load", "edge_gib", "radio", "blocks_on", "why"),
    [
        (10, 0.1, 24, 400, "mec", "idle MEC next door, thin backhaul: offload to the MEC"),
        (1000, 0.1, 24, 400, "mec", "fat backhaul too, but the MEC is nearer (4 vs 15 ms per hop)"),
        (1000, 0.2, 24, 400, "mec", "a lightly loaded MEC still beats the farther cloud"),
        (
            1000,
            0.5,
            24,
            400,
            "cloud",
            "half-loaded MEC: its queueing costs more than the cloud's distance, crossed once per token "
            "(the token stays on the edge)",
        ),
        (1000, 0.7, 24, 400, "cloud", "MEC at 70 %: its queueing now costs more than the cloud's distance"),
        (1000, 0.95, 24, 400, "cloud", "MEC saturated, backhaul fat: the idle cloud GPU"),
        (10, 0.7, 24, 400, "mec", "MEC at 70 % but the 10 Mb/s backhaul makes the cloud worse"),
        (10, 0.95, 24, 400, "edge", "MEC saturated and backhaul thin: keep everything on the edge"),
        (
            10,
            0.95,
            8,
            400,
            "cloud",
            "...unless the edge cannot hold the model: the thin cloud beats a full MEC",
        ),
        (1000, 0.1, 24, 10, "cloud", "the radio link drops to 10 Mb/s: skip the MEC, use the cloud"),
        (10, 0.1, 24, 10, "edge", "both links thin: stay on the edge"),
    ],
)
def test_the_plan_moves_where_a_person_expects(backhaul, mec_load, edge_gib, radio, blocks_on, why):
    host, owner = _blocks_on(edge_mec_cloud(backhaul, mec_load, edge_gib, radio))
    assert host == blocks_on, why
    assert owner[0] == owner[1] == owner[33] == "edge"  # privacy: embedding, block 1, head stay trusted


def test_the_example_scenario_file_is_valid_and_solves_to_the_mec():
    spec = scenario_mod.load(ROOT / "scenarios" / "edge-mec-cloud.yaml")
    assert spec.model.config == {**LLAMA3_8B, "torch_dtype": "bfloat16"}
    problem_pb = scenario_mod.to_problem(spec, convert.model_to_proto(MODEL))
    problem = convert.problem_from_proto(problem_pb)
    assert [n.node_id for n in problem.nodes] == ["edge", "mec", "cloud"]
    assert len(problem.links) == 6  # three links, both directions
    assert problem.nodes[1].flops_per_s == devices.lookup("A100-40GB").flops_per_s  # from the device table
    plan = solve(problem).plan
    assert [(s.start, s.end, s.node_id) for s in plan.segments] == [
        (0, 2, "edge"),
        (2, 33, "mec"),
        (33, 34, "edge"),
    ]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


GOOD = """
name: t
model: {config: {model_type: llama}}
nodes:
  - {id: a, device: A100-40GB, trusted: true}
  - {id: b, device: H100-SXM}
links:
  - {between: [a, b], bandwidth_mbps: 100, rtt_ms: 1}
"""


BAD = [
    (("trusted: true", "utilization: 1.5"), "nodes.0.utilization: Input should be less than or equal to 1"),
    (("[a, b]", "[a, c]"), "links[0] names unknown node 'c'"),
    (("bandwidth_mbps: 100", "bandwidth_mbps: 0"), "links.0.bandwidth_mbps: Input should be greater than 0"),
    (("device: H100-SXM", "memory_gib: 4"), "give a device (from the splitter's device table) or tflops"),
    (("model: {config: {model_type: llama}}", "model: {}"), "give exactly one of config and config_file"),
    (("id: b", "id: a"), "node ids appear twice: a"),
]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        *[(GOOD.replace(old, new), message) for (old, new), message in BAD],
        (GOOD + "color: blue\n", "color: Extra inputs are not permitted"),
        ("- just\n- a list\n", "a scenario is a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_scenario_files_are_refused_with_field_and_reason(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(scenario_mod.ScenarioError) as info:
        scenario_mod.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_a_config_file_next_to_the_scenario_is_read(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    spec = scenario_mod.load(
        _write(tmp_path, GOOD.replace("{config: {model_type: llama}}", "{config_file: config.json}"))
    )
    assert scenario_mod.model_config_json(spec, tmp_path) == '{"model_type": "gpt2"}'
    missing = scenario_mod.load(
        _write(tmp_path, GOOD.replace("{config: {model_type: llama}}", "{config_file: x.json}"))
    )
    with pytest.raises(scenario_mod.ScenarioError, match=r"model\.config_file .*x\.json: cannot read it"):
        scenario_mod.model_config_json(missing, tmp_path)
