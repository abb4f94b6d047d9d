"""Testbed scenario files: the shipped ones load, bad ones fail with the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from resplit.scenarios.loading import ScenarioError
from resplit.scenarios.testbed import load

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SHIPPED = sorted(
    [SCENARIOS / "testbed-smoke.yaml", SCENARIOS / "cpu-tiny-llama.yaml", *SCENARIOS.glob("paper-*.yaml")]
)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_shipped_scenarios_load(path):
    scenario = load(path)
    assert scenario.nodes and scenario.duration_s > 0


def _write(tmp_path, change) -> Path:
    data = yaml.safe_load((SCENARIOS / "testbed-smoke.yaml").read_text())
    data["model"]["dir"] = str(SCENARIOS / "models" / "llama-3-8b")
    change(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _set(path: str, value):
    def change(data):
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(last) if last.isdigit() else last] = value

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            _set("nodes.0.device", "TPU-v9"),
            "nodes.0: Value error, device 'TPU-v9' is not in the device table",
        ),
        (_set("nodes.1.id", "mec1"), "node ids appear twice: mec1"),
        (_set("links.0.between", ["mec2", "moon"]), "links[0] names unknown node 'moon'"),
        (_set("links.0.bandwidth_mbps", 0), "links.0.bandwidth_mbps: Input should be greater than 0 (got 0)"),
        (_set("links.0.loss_pct", 150), "links.0.loss_pct: Input should be less than or equal to 100"),
        (
            _set("links.0.changes", [{"at_s": 5, "bandwidth_mbps": 20}, {"at_s": 2, "bandwidth_mbps": 50}]),
            "links.0: Value error, changes must be in time order",
        ),
        (_set("links.0.changes.0.at_s", 99), "links[0] changes at 99.0 s, after duration_s"),
        (_set("load.0.end_s", 1), "load.0: Value error, end_s (1.0) must be after start_s (4.0)"),
        (_set("load.0.utilization", 1.5), "load.0.utilization: Input should be less than or equal to 1"),
        (_set("load.0.node", "nowhere"), "load[0] names unknown node 'nowhere'"),
        (
            _set("workload.arrival", "bursty"),
            "workload.arrival: Input should be 'poisson', 'constant' or 'closed'",
        ),
        (_set("workload.clients", 0), "workload.clients: Input should be greater than or equal to 1"),
        (_set("workload.steps", [1, 0]), "workload: Value error, workload.steps must all be > 0 req/s"),
        (_set("warmup_s", -1), "warmup_s: Input should be greater than or equal to 0"),
        (_set("policy.alpha", -1), "policy.alpha: Input should be greater than or equal to 0"),
        (
            _set("policy.thresholds.u_max", 2),
            "policy.thresholds.u_max: Input should be less than or equal to 1",
        ),
        (_set("control.initial.1.units", [4, 20]), "control.initial[1]: units [4, 20] do not follow unit 3"),
        (_set("duration_s", -5), "duration_s: Input should be greater than 0"),
        (_set("seeds", 3), "seeds: Extra inputs are not permitted"),
        (_set("model.dir", "/nonexistent"), "model.dir: no config.json in /nonexistent"),
        (
            _set("model.tiny", {"family": "llama"}),
            "model: Value error, give exactly one of dir (a model directory) and tiny",
        ),
        (_set("model.dir", None), "model: Value error, give exactly one of dir"),
        (
            _set("model", {"tiny": {"family": "bert"}}),
            "model.tiny.family: Input should be 'llama', 'qwen2', 'qwen2-sliding', 'mistral' or 'gpt2'",
        ),
        (
            _set("model", {"tiny": {"family": "llama", "seed": -1}}),
            "model.tiny.seed: Input should be greater",
        ),
    ],
)
def test_bad_files_are_refused_with_the_field_and_the_reason(tmp_path, change, expected):
    path = _write(tmp_path, change)
    with pytest.raises(ScenarioError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert expected in str(caught.value), str(caught.value)


def test_a_tiny_model_is_built_in_the_results_folder_not_read_from_the_scenario_folder(tmp_path):
    scenario = load(SCENARIOS / "cpu-tiny-llama.yaml")
    assert scenario.model.tiny is not None and scenario.model.tiny.family == "llama"
    assert not any(node.emulate for node in scenario.nodes)  # every node really computes
    assert scenario.model_dir(tmp_path) == tmp_path / "model"


def test_not_yaml_and_not_a_mapping(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("nodes: [")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="a testbed scenario is a mapping"):
        load(bad)


def test_overrides_replace_keys_dotted_or_not():
    scenario = load(SCENARIOS / "testbed-smoke.yaml", {"seed": 42, "control.adaptive": False})
    assert scenario.seed == 42 and not scenario.control.adaptive
    assert len(scenario.control.initial) == 3  # the rest of control stays
    with pytest.raises(ScenarioError, match=r"load.0.utilization: Input should be less than or equal to 1"):
        load(SCENARIOS / "testbed-smoke.yaml", {"load.0.utilization": 1.5})
    with pytest.raises(ScenarioError, match=r"--set load.5.node: no such place"):
        load(SCENARIOS / "testbed-smoke.yaml", {"load.5.node": "x"})
