"""The splitter as a real process (`python -m services.splitter`) over gRPC, and `resplit plan solve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from support import ROOT

from resplit.launcher.processes import ServiceProcess, free_port
from resplit.rpc.channels import sync_channel
from resplit.scenarios import plan as scenario_mod
from resplit.v1 import common_pb2, splitter_pb2, splitter_pb2_grpc

pytestmark = pytest.mark.integration
RESPLIT = str(Path(sys.executable).parent / "resplit")
SCENARIO = ROOT / "scenarios" / "edge-mec-cloud.yaml"
#: The splitter never connects to Redis; the flag is only required by the shared settings.
UNUSED_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def splitter():
    proc = ServiceProcess("splitter", UNUSED_REDIS).start()
    try:
        proc.wait_health("SERVING")
        yield proc
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def stub(splitter):
    with sync_channel(splitter.address) as channel:
        yield splitter_pb2_grpc.SplitterServiceStub(channel)


@pytest.fixture(scope="module")
def scenario_problem(stub) -> splitter_pb2.Problem:
    spec = scenario_mod.load(SCENARIO)
    profile = stub.ProfileModel(
        splitter_pb2.ProfileModelRequest(config_json=json.dumps(spec.model.config), dtype="float16"),
        timeout=30,
    )
    return scenario_mod.to_problem(spec, profile)


def _refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_profile_model_from_config_json(stub):
    config = json.loads(json.dumps(scenario_mod.load(SCENARIO).model.config))
    profile = stub.ProfileModel(splitter_pb2.ProfileModelRequest(config_json=json.dumps(config)), timeout=30)
    assert profile.family == "llama" and profile.dtype == "bfloat16" and len(profile.units) == 34
    assert profile.units[1].param_bytes == 2 * 218_112_000
    assert profile.units[1].activation_bytes_per_token == 8192


def test_profile_model_from_a_directory_and_its_refusals(stub, tmp_path):
    tiny_gpt2 = {"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(tiny_gpt2))
    profile = stub.ProfileModel(splitter_pb2.ProfileModelRequest(model_dir=str(tmp_path)), timeout=30)
    assert [u.kind for u in profile.units] == ["embedding", "block", "block", "head"]
    missing = _refusal(
        lambda: stub.ProfileModel(
            splitter_pb2.ProfileModelRequest(model_dir=str(tmp_path / "gone")), timeout=30
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND and "no config.json" in missing.details()
    bad = _refusal(
        lambda: stub.ProfileModel(splitter_pb2.ProfileModelRequest(config_json="{oops"), timeout=30)
    )
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and "not valid JSON" in bad.details()
    both = _refusal(lambda: stub.ProfileModel(splitter_pb2.ProfileModelRequest(), timeout=30))
    assert both.code() == grpc.StatusCode.INVALID_ARGUMENT and "exactly one of" in both.details()


def test_solve_returns_the_optimal_plan_and_its_cost(stub, scenario_problem):
    reply = stub.Solve(splitter_pb2.SolveRequest(problem=scenario_problem), timeout=60)
    assert reply.solver == splitter_pb2.SOLVER_KIND_EXACT
    assert [(s.units.start, s.units.end, s.node_id) for s in reply.plan.segments] == [
        (0, 2, "edge"),
        (2, 33, "mec"),
        (33, 34, "edge"),
    ]
    assert reply.cost.phi == pytest.approx(reply.cost.latency_ms) and reply.cost.latency_ms > 0
    assert reply.plan.predicted == reply.cost
    assert reply.cost.throughput_tps > 0 and reply.solve_ms > 0
    assert "optimal" in reply.detail


def test_placement_only_and_the_baselines_over_the_wire(stub, scenario_problem):
    moved = stub.Solve(
        splitter_pb2.SolveRequest(problem=scenario_problem, mode=splitter_pb2.SOLVE_MODE_PLACEMENT_ONLY),
        timeout=60,
    )
    assert [s.node_id for s in moved.plan.segments] == ["edge", "mec", "edge"]  # off the thin-linked cloud
    assert moved.cost.migration_gib > 10
    greedy = stub.Solve(
        splitter_pb2.SolveRequest(problem=scenario_problem, solver=splitter_pb2.SOLVER_KIND_GREEDY),
        timeout=60,
    )
    assert greedy.solver == splitter_pb2.SOLVER_KIND_GREEDY and greedy.cost.phi >= moved.cost.phi - 1e-6
    too_big = _refusal(
        lambda: stub.Solve(
            splitter_pb2.SolveRequest(problem=scenario_problem, solver=splitter_pb2.SOLVER_KIND_BRUTE_FORCE),
            timeout=60,
        )
    )
    assert too_big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "use EXACT" in too_big.details()


def test_an_infeasible_problem_is_failed_precondition_naming_the_constraint(stub, scenario_problem):
    problem = splitter_pb2.Problem()
    problem.CopyFrom(scenario_problem)
    problem.policy.private_depth = 3
    problem.nodes[0].memory_bytes = 2 * 1024**3  # the edge: 2 GiB for the embedding and 3 blocks
    error = _refusal(lambda: stub.Solve(splitter_pb2.SolveRequest(problem=problem), timeout=60))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        "infeasible: privacy (5): no trusted node has memory for units 0-3 (they need 2.20 GiB; "
        "the only trusted node 'edge' has 2.00 GiB)"
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.ClearField("model"), "problem.model has no units"),
        (lambda p: setattr(p.nodes[2], "flops_per_s", -1.0), "node 'cloud': flops_per_s must be > 0"),
        (lambda p: setattr(p.workload, "prompt_tokens", 0), "workload.prompt_tokens must be >= 1"),
        (
            lambda p: p.links.append(common_pb2.Link(src="edge", dst="moon", bandwidth_mbps=1)),
            "unknown node 'moon'",
        ),
    ],
)
def test_a_malformed_problem_is_invalid_argument_naming_the_field(stub, scenario_problem, mutate, message):
    problem = splitter_pb2.Problem()
    problem.CopyFrom(scenario_problem)
    mutate(problem)
    error = _refusal(lambda: stub.Solve(splitter_pb2.SolveRequest(problem=problem), timeout=60))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("malformed problem: ") and message in error.details()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([RESPLIT, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def test_cli_plan_solve_prints_the_plan_and_its_cost(splitter):
    result = _cli("plan", "solve", "--scenario", str(SCENARIO), "--splitter", splitter.address)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "plan for edge-mec-cloud (3 segments)" in out
    for row in ("[0, 2)", "embedding + block 1", "[2, 33)", "blocks 2-32", "A100-40GB", "[33, 34)", "head"):
        assert row in out
    assert "L: latency per request" in out and "exact in" in out and "optimal" in out


def test_cli_plan_solve_placement_only_with_greedy(splitter):
    result = _cli(
        "plan", "solve", "--scenario", str(SCENARIO), "--splitter", splitter.address,
        "--mode", "placement-only", "--solver", "greedy",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "greedy in" in result.stdout


def test_cli_refuses_a_bad_scenario_with_the_field(tmp_path, splitter):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SCENARIO.read_text().replace("utilization: 0.7", "utilization: 7"))
    result = _cli("plan", "solve", "--scenario", str(bad), "--splitter", splitter.address)
    assert result.returncode == 2
    assert "nodes.1.utilization: Input should be less than or equal to 1" in result.stderr


def test_cli_says_when_the_splitter_is_unreachable(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    result = _cli(
        "plan", "solve", "--scenario", str(SCENARIO), "--splitter", address, "--timeout", "2",
        "--state-dir", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 1
    assert f"cannot reach the splitter at {address}" in result.stderr
