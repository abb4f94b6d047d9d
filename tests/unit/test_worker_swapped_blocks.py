"""A worker's side of a layer swap: a segment with blocks from another checkpoint is
loaded beside the old one (never re-filed from it), a source that does not fit is
refused naming the tensor, and sessions that began before the swap are told of the
new epoch only under the replay policy."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM

from resplit.models.tiny import build_tiny
from resplit.v1 import common_pb2
from services.worker.core.errors import BadInput, NotHosted
from services.worker.core.hosting import Hosting
from services.worker.core.loading import load_hosted


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("swap")
    base = build_tiny("llama", root / "base", num_hidden_layers=2)
    other = build_tiny("llama", root / "other", seed=1, num_hidden_layers=2)
    model = AutoModelForCausalLM.from_pretrained(other)
    model.model.layers[0].mlp.up_proj.weight.data = model.model.layers[0].mlp.up_proj.weight.half()
    model.save_pretrained(root / "half")
    return {"base": str(base), "other": str(other), "half": str(root / "half")}


def _load(models, sources, epoch=1):
    return load_hosted("d", epoch, 1, 3, models["base"], "", 0, torch.device("cpu"), sources=sources)


def test_swapped_blocks_are_loaded_from_their_source_and_never_reused_across_sources(models):
    own, swapped = _load(models, {}), _load(models, {2: models["other"], 7: models["other"]}, epoch=2)
    assert swapped.sources == ((2, models["other"]),)  # unit 7 is outside [1, 3): not this segment's

    def q(hosted, index):
        return hosted.segment.layers[index].self_attn.q_proj.weight

    assert torch.equal(q(own, 0), q(swapped, 0)) and not torch.equal(q(own, 1), q(swapped, 1))
    hosting = Hosting()
    hosting.add(own)
    assert hosting.same_weights("d", 1, 3, models["base"], "", "", swapped.sources) is None
    hosting.add(swapped)
    assert hosting.same_weights("d", 1, 3, models["base"], "", "", swapped.sources) is swapped
    assert hosting.same_weights("d", 1, 3, models["base"], "", "", ()) is own


def test_a_source_that_does_not_fit_or_is_not_here_is_refused(models):
    with pytest.raises(BadInput, match=r"model\.layers\.0\.mlp\.up_proj\.weight .*F16"):
        _load(models, {1: models["half"]})
    with pytest.raises(NotHosted, match="does not exist on this worker"):
        _load(models, {1: models["base"] + "-missing"})


@pytest.mark.parametrize("policy", [common_pb2.SESSION_POLICY_DRAIN, common_pb2.SESSION_POLICY_REPLAY])
def test_a_session_older_than_a_swap_is_told_of_newer_epochs_only_under_replay(models, policy):
    hosting = Hosting()
    hosting.add(dataclasses.replace(_load(models, {}), epoch=3))
    route = common_pb2.Route(deployment="d", epoch=3, hops=[common_pb2.Hop(node_id="w")])
    hosting.commit("d", 3, route)
    assert hosting.epoch_for("d", 2) == 3  # a plan change that swapped nothing: everyone moves
    route = common_pb2.Route(deployment="d", epoch=5, hops=[common_pb2.Hop(node_id="w")])
    route.layers.CopyFrom(common_pb2.LayerChange(epoch=4, first_unit=2, sessions=policy))
    hosting.commit("d", 5, route)  # a migration after the swap still carries it
    drained = policy == common_pb2.SESSION_POLICY_DRAIN
    assert hosting.epoch_for("d", 3) == (3 if drained else 5)
    assert hosting.epoch_for("d", 4) == 5  # began on the swapped weights: moves as always
