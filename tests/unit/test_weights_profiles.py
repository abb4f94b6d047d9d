"""The splitter sizes a deployment by the weight format its workers quantize to."""

from __future__ import annotations

import pytest
from splitter_cases import LLAMA3_8B

from resplit.core.profiles import ConfigError, profile
from resplit.core.weights import WeightsError, check_family, matrix_bytes, weights_name
from services.splitter.core.problem import Node, Policy, Problem, Workload
from services.splitter.core.solve import Infeasible, solve

GB = 10**9


def _total(weights: str, dtype: str = "bfloat16") -> int:
    return sum(u.param_bytes for u in profile(LLAMA3_8B, dtype, weights=weights).units)


def _edge_board(memory: int) -> Problem:
    """One trusted 8 GB node that must hold the whole model (embedding and head are private)."""
    node = Node("board", memory, 1e12, 0.0, True, "", 5e10)
    return Problem(profile(LLAMA3_8B, "bfloat16", weights="int4"), (node,), (), Policy(), Workload(128, 16))


def test_llama3_8b_planned_with_int4_weights_fits_a_node_declaring_8_gb():
    plan = solve(_edge_board(8 * GB)).plan
    assert [(s.start, s.end, s.node_id) for s in plan.segments] == [(0, 34, "board")]
    assert _total("int4") < 6.0 * GB  # 0.625 B per matrix weight, a bf16 embedding


def test_llama3_8b_at_bf16_does_not_fit_8_gb():
    node = Node("board", 8 * GB, 1e12, 0.0, True, "", 5e10)
    problem = Problem(profile(LLAMA3_8B, "bfloat16"), (node,), (), Policy(), Workload(128, 16))
    with pytest.raises(Infeasible, match="capacity"):
        solve(problem)


def test_formats_shrink_the_weights_in_order():
    sizes = [_total(w, "float32") for w in ("fp32", "bf16", "int8", "int4")]
    assert sizes == sorted(sizes, reverse=True)
    assert _total("", "float32") == sizes[0]
    assert sizes[1] / sizes[0] == pytest.approx(0.5, abs=0.01)
    # int8 matrices (1/4), the embedding (6.5 % of the weights) in bf16 (1/2)
    assert sizes[2] / sizes[0] == pytest.approx(0.25 * 0.935 + 0.5 * 0.065, abs=0.003)


def test_matrix_bytes_count_scales_and_groups():
    assert matrix_bytes(4, 64, "fp32", 4) == 4 * 64 * 4
    assert matrix_bytes(4, 64, "bf16", 4) == 4 * 64 * 2
    assert matrix_bytes(4, 64, "int8", 4) == 4 * 64 + 4 * 2
    assert matrix_bytes(4, 64, "int4", 4) == 4 * 32 + 4 * 2 * 4


def test_unknown_formats_and_families_that_cannot_run_them_are_refused():
    with pytest.raises(WeightsError, match="one of fp32, bf16, int8, int4"):
        weights_name("int3")
    with pytest.raises(WeightsError, match="'gpt2' runs fp32 only"):
        check_family("int8", "gpt2")
    assert check_family("", "gpt2") == "fp32"
    with pytest.raises(ConfigError, match="int3"):
        profile(LLAMA3_8B, weights="int3")
