"""A worker reuses a loaded segment for a new epoch only in the same weight format."""

from __future__ import annotations

import torch

from services.worker.core.hosting import Hosted, Hosting


def _hosted(weights: str) -> Hosted:
    return Hosted(
        deployment="d",
        epoch=1,
        start=1,
        end=3,
        segment=None,  # type: ignore[arg-type]  # never touched by same_weights
        model_dir="/m",
        compression=0,
        dtype=torch.float32,
        device=torch.device("cpu"),
        generative=True,
        hidden_size=64,
        weights=weights,
    )


def test_a_segment_is_reused_only_in_the_same_weight_format():
    hosting = Hosting()
    hosting.add(_hosted("int4"))
    assert hosting.same_weights("d", 1, 3, "/m", "", "int4") is not None
    assert hosting.same_weights("d", 1, 3, "/m", "", "int8") is None
    assert hosting.same_weights("d", 1, 3, "/m", "", "") is None  # "" is fp32


def test_an_fp32_segment_is_what_an_empty_format_reuses():
    hosting = Hosting()
    hosting.add(_hosted("fp32"))
    assert hosting.same_weights("d", 1, 3, "/m", "float32", "") is not None
    assert hosting.same_weights("d", 1, 3, "/m", "", "bf16") is None
