"""Weights loaded into huge-page-advised memory (resplit/models/arena.py): the same
tensors, the same tokens and logits within 1e-5, held in one arena the kernel backs
with 2 MiB pages. (Not bitwise: safetensors hands tensors over 8 bytes past a cache
line, the arena aligns them to 64, and the BLAS kernels round differently.)

Real checkpoints saved as safetensors and loaded as segments, in this process.
"""

from __future__ import annotations

import re

import pytest
import torch

from resplit.models import Checkpoint, load_segment
from resplit.models.arena import Arena, aligned, huge_bytes_at, thp_mode
from resplit.models.tiny import build_tiny

PROMPT = [5, 17, 33, 8, 91, 40, 12, 7, 66, 150, 23]


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory):
    """Two blocks of 13 MB each: big enough to span whole 2 MiB pages."""
    out = tmp_path_factory.mktemp("arena") / "llama"
    return build_tiny("llama", out, num_hidden_layers=2, hidden_size=512, intermediate_size=1408)


def _storages(segment) -> set[int]:
    return {p.untyped_storage().data_ptr() for p in segment.parameters()}


def _decode(segment, steps: int = 6) -> list[torch.Tensor]:
    state, outs = segment.new_state(), []
    inputs = {"input_ids": torch.tensor([PROMPT])}
    for _ in range(steps):
        logits = segment.step(state, **inputs).logits
        outs.append(logits)
        inputs = {"input_ids": torch.tensor([[int(logits[0].argmax())]])}
    return outs


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory) -> dict[str, object]:
    """The tiny models, and a Mixtral: its experts are fused at load, after the read."""
    return {**tiny_models, "mixtral": build_tiny("mixtral", tmp_path_factory.mktemp("arena") / "mixtral")}


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert", "qwen2-sliding", "mixtral"])
def test_arena_weights_are_the_checkpoint_tensors_in_one_storage(models, family):
    checkpoint = Checkpoint(models[family])
    end = checkpoint.config.num_hidden_layers + (1 if family == "bert" else 2)
    plain = load_segment(checkpoint, 0, end, torch.device("cpu"), huge_pages=False)
    packed = load_segment(checkpoint, 0, end, torch.device("cpu"), huge_pages=True)
    assert len(_storages(packed)) == 1  # one arena holds every weight
    assert len(_storages(plain)) > 1
    for (name, a), (_, b) in zip(plain.named_parameters(), packed.named_parameters(), strict=True):
        assert torch.equal(a, b), name
        assert b.data_ptr() % 64 == 0, name


def test_arena_decode_gives_the_same_tokens_and_logits(wide_llama):
    checkpoint = Checkpoint(wide_llama)
    plain = load_segment(checkpoint, 0, 4, torch.device("cpu"), huge_pages=False)
    packed = load_segment(checkpoint, 0, 4, torch.device("cpu"), huge_pages=True)
    for a, b in zip(_decode(plain), _decode(packed), strict=True):
        assert int(a.argmax()) == int(b.argmax())
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_a_cast_on_load_fits_the_arena_sized_from_the_headers(wide_llama):
    checkpoint = Checkpoint(wide_llama)  # saved as fp32
    half = load_segment(checkpoint, 0, 4, torch.device("cpu"), torch.float16, huge_pages=True)
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    assert len(_storages(half)) == 1
    expected = sum(aligned(p.numel() * 2) for p in half.parameters())
    assert next(half.parameters()).untyped_storage().nbytes() >= expected


def test_the_kernel_backs_the_arena_with_huge_pages(wide_llama):
    mode = thp_mode()
    if mode not in ("always", "madvise"):
        pytest.skip(f"transparent huge pages are {mode!r} on this kernel: nothing to check")
    segment = load_segment(Checkpoint(wide_llama), 0, 4, torch.device("cpu"), huge_pages=True)
    weights = max(segment.parameters(), key=lambda p: p.numel())
    huge = huge_bytes_at(weights.data_ptr())
    assert huge is not None
    assert huge >= 2 << 20, (
        f"THP {mode}, but none of the {weights.nbytes >> 20} MiB weights are in huge pages"
    )


def test_an_arena_refuses_more_than_it_was_sized_for():
    arena = Arena(aligned(40) + aligned(8))
    first = arena.place(torch.arange(10, dtype=torch.float32))
    arena.place(torch.ones(2, dtype=torch.float32))
    assert first.tolist() == list(range(10))
    with pytest.raises(ValueError, match="no room"):
        arena.place(torch.ones(1))


def test_the_worker_logs_how_much_of_a_segment_is_in_huge_pages(wide_llama):
    from services.worker.core.loading import huge_page_share, load_hosted

    hosted = load_hosted("arena", 1, 0, 4, str(wide_llama), "", 0, torch.device("cpu"), huge_pages=True)
    assert re.fullmatch(r"[\d.]+ of [\d.]+ MB in huge pages \(THP \w+\)", huge_page_share(hosted.segment))
    off = load_hosted("arena", 1, 0, 4, str(wide_llama), "", 0, torch.device("cpu"), huge_pages=False)
    assert len(_storages(off.segment)) > 1
