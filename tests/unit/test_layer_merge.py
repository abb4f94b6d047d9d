"""SafeMERGE's decisions (resplit/models/merge.py) and blocks read from another
checkpoint (resplit/models/layers.py) on constructed cases: a fine-tuned model whose
blocks were pushed along known directions, checked against what the math must give."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from resplit.models import Checkpoint, load_segment
from resplit.models.layers import (
    LayerSourceError,
    block_tensors,
    check_compatible,
    decide_merge,
    open_sourced,
    write_merged,
)
from resplit.models.merge import decide_block, merged_block, projection_cosine
from resplit.models.tiny import build_tiny

PUSHED = {2, 4}  # block units pushed out of the safety subspace
BLOCKS = 4


def _orthogonal(a: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    u = torch.randn(a.shape[0], generator=generator, dtype=torch.float64)
    return u - (u @ a) / (a @ a) * a


def _block(unit: int, shapes: dict[str, tuple[int, ...]], generator: torch.Generator):
    """(base, aligned, fine-tuned) tensors of one block: aligned = base + a b^T per matrix;
    the fine-tuning update is a c^T (inside the safety subspace) or, for a pushed block,
    u w^T with u orthogonal to a (outside it); both with 1 % noise."""
    base, aligned, tuned = {}, {}, {}
    for name, shape in shapes.items():
        b0 = torch.randn(shape, generator=generator, dtype=torch.float64)
        if len(shape) == 1:
            base[name], aligned[name], tuned[name] = b0, b0, b0 + 0.1
            continue
        a = torch.randn(shape[0], generator=generator, dtype=torch.float64)
        v = torch.outer(a, torch.randn(shape[1], generator=generator, dtype=torch.float64))
        left = _orthogonal(a, generator) if unit in PUSHED else a
        update = torch.outer(left, torch.randn(shape[1], generator=generator, dtype=torch.float64))
        update += (
            0.01 * update.norm() / shape[0] * torch.randn(shape, generator=generator, dtype=torch.float64)
        )
        base[name], aligned[name], tuned[name] = b0, b0 + v, b0 + v + update
    return base, aligned, tuned


def test_projection_cosine_is_one_inside_and_zero_outside_the_subspace():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(8, generator=g, dtype=torch.float64) for _ in range(3))
    v = torch.outer(a, b)
    assert projection_cosine(torch.outer(a, c), v) == pytest.approx(1.0)
    assert projection_cosine(torch.outer(_orthogonal(a, g), c), v) == pytest.approx(0.0, abs=1e-9)
    assert projection_cosine(torch.zeros(8, 8), v) == 1.0  # nothing changed: nothing to merge
    assert projection_cosine(torch.outer(a, c), torch.zeros(8, 8)) == 0.0  # no safety subspace at all
    tall = torch.outer(torch.randn(12, generator=g, dtype=torch.float64), b)  # out > in: the other path
    assert projection_cosine(tall * 3, tall) == pytest.approx(1.0)


def test_the_decisions_pick_exactly_the_pushed_blocks():
    g = torch.Generator().manual_seed(1)
    shapes = {"q.weight": (16, 8), "up.weight": (24, 8), "norm.weight": (8,)}
    decisions = []
    for unit in range(1, BLOCKS + 1):
        base, aligned, tuned = _block(unit, shapes, g)
        decisions.append(decide_block(unit, tuned, aligned, base, threshold=0.5))
    assert {d.unit for d in decisions if d.merge} == PUSHED
    for d in decisions:
        assert (d.rho < 0.1) if d.unit in PUSHED else (d.rho > 0.9), d
        assert d.tensor in shapes and d.drift > 0
    # The threshold moves the line: above every rho everything merges, at 0 nothing does.
    base, aligned, tuned = _block(1, shapes, g)
    assert decide_block(1, tuned, aligned, base, threshold=1.01).merge
    assert not decide_block(1, tuned, aligned, base, threshold=0.0).merge


def test_merged_block_is_the_linear_combination():
    tuned = {"w": torch.tensor([[2.0, 4.0]]), "n": torch.tensor([1.0], dtype=torch.bfloat16)}
    safe = {"w": torch.tensor([[0.0, 8.0]]), "n": torch.tensor([3.0], dtype=torch.bfloat16)}
    out = merged_block(tuned, safe, weight=0.25)
    assert torch.equal(out["w"], torch.tensor([[0.5, 7.0]]))
    assert out["n"].dtype == torch.bfloat16 and out["n"].item() == 2.5
    with pytest.raises(ValueError, match="weight"):
        merged_block(tuned, safe, weight=1.5)


def _shifted(src, out, seed: int, units: set[int], along_first_row: bool):
    """A copy of the model at ``src`` with the 2-D block weights of ``units`` moved."""
    model = AutoModelForCausalLM.from_pretrained(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if (
                ".layers." in name
                and p.dim() == 2
                and int(name.split(".layers.")[1].split(".")[0]) + 1 in units
            ):
                step = torch.zeros_like(p)
                row = 0 if along_first_row else 1
                step[row] = torch.randn(p.shape[1], generator=g)
                p += step
    model.save_pretrained(out)
    return out


def test_checkpoints_decide_write_and_load_the_merged_blocks(tmp_path):
    """base -> aligned (every block's first output row moved) -> fine-tuned (blocks 2 and 4
    moved along the second row: out of the safety subspace; blocks 1 and 3 along the first)."""
    base = build_tiny("llama", tmp_path / "base", num_hidden_layers=BLOCKS)
    aligned = _shifted(base, tmp_path / "aligned", 1, set(range(1, BLOCKS + 1)), along_first_row=True)
    pushed = _shifted(aligned, tmp_path / "pushed", 2, PUSHED, along_first_row=False)
    tuned = _shifted(pushed, tmp_path / "tuned", 3, {1, 3}, along_first_row=True)
    ft, safe, b = Checkpoint(tuned), Checkpoint(aligned), Checkpoint(base)
    decisions = decide_merge(ft, safe, b, threshold=0.5)
    assert [d.unit for d in decisions] == list(range(1, BLOCKS + 1))
    assert {d.unit for d in decisions if d.merge} == PUSHED

    out = write_merged(tmp_path / "merged", ft, safe, sorted(PUSHED), weight=0.5)
    assert sorted(Checkpoint(out).names()) == sorted(
        n for n in ft.names() if ".layers.1." in n or ".layers.3." in n
    )
    sourced = open_sourced(tuned, dict.fromkeys(PUSHED, str(out)))
    got = block_tensors(sourced, 2)
    want = merged_block(block_tensors(ft, 2), block_tensors(safe, 2), 0.5)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert all(torch.equal(block_tensors(sourced, 1)[k], v) for k, v in block_tensors(ft, 1).items())
    segment = load_segment(sourced, 0, BLOCKS + 2, torch.device("cpu"), huge_pages=False)
    assert segment.param_bytes() == load_segment(ft, 0, BLOCKS + 2, torch.device("cpu")).param_bytes()


def test_a_mismatched_checkpoint_is_refused_naming_what_differs(tmp_path):
    base = build_tiny("llama", tmp_path / "base", num_hidden_layers=2)
    wider = build_tiny("llama", tmp_path / "wider", num_hidden_layers=2, intermediate_size=96)
    with pytest.raises(LayerSourceError, match="intermediate_size"):
        check_compatible(Checkpoint(base), Checkpoint(wider), [1])
    with pytest.raises(LayerSourceError, match="not a transformer block"):
        check_compatible(Checkpoint(base), Checkpoint(base), [0])
    # Same config, one tensor of block 2 saved in another dtype: named.
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.data = model.model.layers[1].mlp.down_proj.weight.half()
    model.save_pretrained(tmp_path / "half")
    check_compatible(Checkpoint(base), Checkpoint(tmp_path / "half"), [1])
    with pytest.raises(LayerSourceError, match=r"model\.layers\.1\.mlp\.down_proj\.weight .* F16"):
        check_compatible(Checkpoint(base), Checkpoint(tmp_path / "half"), [2])
