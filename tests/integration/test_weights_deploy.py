"""``resplit deploy --weights``: the format travels from Deploy to every worker's
LoadSegment, each worker quantizes its own segment, and the split generates what
the whole model loaded in the same format generates (same engine, same weights)."""

from __future__ import annotations

import grpc
import pytest
import torch
from support import spread

from resplit.core.profiles import load_config, profile
from resplit.models import Checkpoint, load_segment, num_units
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client, Sampling
from resplit.v1 import common_pb2, worker_pb2, worker_pb2_grpc

pytestmark = pytest.mark.integration

PROMPT = [5, 17, 33, 40, 41]  # within one prefill chunk of the stack's chunking workers
NEW_TOKENS = 12


def _whole(model_dir, weights: str) -> tuple[list[int], torch.Tensor]:
    checkpoint = Checkpoint(model_dir)
    segment = load_segment(
        checkpoint, 0, num_units(checkpoint.config), torch.device("cpu"), torch.float32, weights=weights
    )
    state, ids, tokens, logits = segment.new_state(), PROMPT, [], []
    for _ in range(NEW_TOKENS):
        out = segment.step(state, input_ids=torch.tensor([ids]))
        logits.append(out.logits[0])
        ids = [int(out.logits[0].argmax())]
        tokens += ids
    return tokens, torch.stack(logits)


@pytest.mark.parametrize("weights", ["int8", "int4"])
def test_a_quantized_deployment_split_three_ways_matches_its_whole_model(stack, tiny_models, weights):
    model_dir = tiny_models["llama"]
    units = num_units(Checkpoint(model_dir).config)
    name = f"weights-{weights}"
    stack.deploy(name, model_dir, spread(units, 3), weights=weights)
    with Client(stack.orchestrator.address) as client:
        route = client.route(name)
        got = list(
            client.generate_ids(PROMPT, route, Sampling(max_new_tokens=NEW_TOKENS), return_logits=True)
        )
    tokens, logits = _whole(model_dir, weights)
    assert [t.token_id for t in got] == tokens
    assert (torch.stack([t.logits for t in got]) - logits).abs().max().item() <= 1e-4


def test_load_segment_reports_the_quantized_bytes_and_refuses_unknown_formats(stack, tiny_models):
    model_dir = tiny_models["llama"]
    units = common_pb2.UnitRange(start=1, end=3)
    planned = profile(load_config(str(model_dir)), "float32", weights="int4").units[1:3]
    with sync_channel(stack.worker_procs[2].address) as channel:
        worker = worker_pb2_grpc.WorkerServiceStub(channel)
        request = worker_pb2.LoadSegmentRequest(
            deployment="weights-bytes", epoch=1, model_dir=str(model_dir), units=units, weights="int4"
        )
        reply = worker.LoadSegment(request, timeout=120)
        worker.ReleaseSegment(
            worker_pb2.ReleaseSegmentRequest(deployment="weights-bytes", epoch=1, units=units), timeout=30
        )
        assert reply.param_bytes == sum(u.param_bytes for u in planned)
        request.weights, request.deployment = "int3", "weights-bad"
        with pytest.raises(grpc.RpcError) as err:
            worker.LoadSegment(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "int3" in err.value.details()


def test_deploy_refuses_a_format_the_family_cannot_run(stack, tiny_models):
    with pytest.raises(grpc.RpcError) as err:
        stack.deploy("weights-gpt2", tiny_models["gpt2"], weights="int8")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gpt2" in err.value.details() and "fp32 only" in err.value.details()
