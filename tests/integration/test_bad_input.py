"""Bad input gets the right status and a clear message; other sessions go on.

A good session generates step by step; between its steps every kind of bad
input is thrown at the workers. The good session must still produce exactly
the whole model's tokens, and no session may leak.
"""

from __future__ import annotations

import grpc
import pytest
import torch
from support import spread, wait_for, worker_sessions
from transformers import AutoModelForCausalLM

from resplit.core.tensors import encode
from resplit.models import Checkpoint, num_units
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client, Sampling
from resplit.sdk.exchange import GenerateExchange
from resplit.v1 import common_pb2, tensor_pb2, worker_pb2, worker_pb2_grpc

pytestmark = pytest.mark.integration
PROMPT = [9, 8, 7, 6, 5, 40, 41]


@pytest.fixture(scope="module")
def deployed(stack, tiny_models):
    units = num_units(Checkpoint(tiny_models["llama"]).config)
    plan = stack.deploy("bad-input", tiny_models["llama"], spread(units, 3))
    with Client(stack.orchestrator.address) as client:
        route = client.route("bad-input")
    return plan, route


def _stream(address: str, messages: list[worker_pb2.ForwardRequest]) -> list[worker_pb2.ForwardResponse]:
    """Send ``messages`` on one Forward stream; return replies (raises on a status)."""
    with sync_channel(address) as channel:
        return list(worker_pb2_grpc.WorkerServiceStub(channel).Forward(iter(messages), timeout=20))


def _open(route: common_pb2.Route, hop: int, session: str, **overrides) -> worker_pb2.ForwardRequest:
    fields = {
        "session_id": session,
        "deployment": route.deployment,
        "epoch": route.epoch,
        "task": worker_pb2.TASK_GENERATE,
        "units": route.hops[hop].units,
        "downstream": list(route.hops[hop + 1 :]),
    }
    fields.update(overrides)
    return worker_pb2.ForwardRequest(open=worker_pb2.OpenSession(**fields))


def _activation(
    route: common_pb2.Route, hop: int, tensor: torch.Tensor, **header
) -> list[worker_pb2.ForwardRequest]:
    units = (route.hops[hop].units.start, route.hops[hop].units.end)
    chunks = encode(
        tensor,
        session_id="s",
        step=header.pop("step", 0),
        epoch=header.pop("epoch", route.epoch),
        units=units,
    )
    return [worker_pb2.ForwardRequest(activation=c) for c in chunks]


def _bad_cases(route: common_pb2.Route):
    """(name, hop address, messages, expected status, message fragment)."""
    middle = route.hops[1].address
    first = route.hops[0].address
    good = torch.zeros(1, 3, 64)
    truncated = _activation(route, 1, good)
    truncated[0].activation.data = truncated[0].activation.data[:-10]
    nan = good.clone()
    nan[0, 1, 5] = float("nan")
    return [
        (
            "wrong hidden size",
            middle,
            [_open(route, 1, "a"), *_activation(route, 1, torch.zeros(1, 3, 32))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "is not [rows, tokens, 64]",
        ),
        (
            "wrong dtype",
            middle,
            [_open(route, 1, "b"), *_activation(route, 1, good.half())],
            grpc.StatusCode.INVALID_ARGUMENT,
            "dtype torch.float16 does not match torch.float32",
        ),
        (
            "wrong shape",
            middle,
            [_open(route, 1, "c"), *_activation(route, 1, torch.zeros(3, 64))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "is not [rows, tokens, 64]",
        ),
        (
            "truncated bytes",
            middle,
            [_open(route, 1, "d"), *truncated],
            grpc.StatusCode.INVALID_ARGUMENT,
            "tensor bytes do not match",
        ),
        (
            "NaN activation",
            middle,
            [_open(route, 1, "e"), *_activation(route, 1, nan)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "NaN or Inf",
        ),
        (
            "unknown session",
            middle,
            _activation(route, 1, good),
            grpc.StatusCode.NOT_FOUND,
            "unknown session",
        ),
        (
            "out-of-order step",
            middle,
            [_open(route, 1, "f"), *_activation(route, 1, good, step=3)],
            grpc.StatusCode.FAILED_PRECONDITION,
            "expected step 0, got step 3",
        ),
        (
            "units not hosted",
            middle,
            [_open(route, 1, "g", units=common_pb2.UnitRange(start=1, end=3))],
            grpc.StatusCode.NOT_FOUND,
            "are not hosted here",
        ),
        (
            "stale epoch at open",
            middle,
            [_open(route, 1, "h", epoch=route.epoch + 7)],
            grpc.StatusCode.FAILED_PRECONDITION,
            "stale epoch",
        ),
        (
            "stale epoch in a step",
            middle,
            [_open(route, 1, "i"), *_activation(route, 1, good, epoch=route.epoch + 1)],
            grpc.StatusCode.FAILED_PRECONDITION,
            "the session is at epoch",
        ),
        (
            "unknown deployment",
            middle,
            [_open(route, 1, "j", deployment="nope")],
            grpc.StatusCode.NOT_FOUND,
            "'nope' is not hosted",
        ),
        (
            "token outside vocabulary",
            first,
            [
                _open(route, 0, "k"),
                worker_pb2.ForwardRequest(tokens=worker_pb2.TokenInput(step=0, input_ids=[10**6])),
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
            "outside the vocabulary",
        ),
        (
            "activation to the embedding hop",
            first,
            [_open(route, 0, "l"), *_activation(route, 0, good)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "send token ids",
        ),
    ]


def test_bad_input_is_refused_while_a_good_session_goes_on(stack, tiny_models, deployed):
    _, route = deployed
    whole = AutoModelForCausalLM.from_pretrained(tiny_models["llama"]).eval()
    expected = whole.generate(
        torch.tensor([PROMPT]), max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=3
    )[0, len(PROMPT) :].tolist()
    cases = _bad_cases(route)
    with Client(stack.orchestrator.address) as client:
        good = client._run(GenerateExchange(route, PROMPT, Sampling(max_new_tokens=20)))
        tokens = [next(good).token_id]
        for name, address, messages, code, fragment in cases:
            with pytest.raises(grpc.RpcError) as info:
                _stream(address, messages)
            assert info.value.code() == code, f"{name}: {info.value.code()} {info.value.details()}"
            assert fragment in info.value.details(), f"{name}: {info.value.details()}"
            tokens.append(next(good).token_id)  # the good session moves on between bad requests
        tokens += [t.token_id for t in good]
    assert tokens == expected

    # Closing travels hop by hop after a stream ends: a leak is a session still held after 5 s.
    wait_for(
        lambda: all(worker_sessions(p) == 0 for p in stack.worker_procs), timeout=5, what="no session leaked"
    )


def test_downstream_refusal_reaches_the_client_with_its_status(stack, deployed):
    _, route = deployed
    broken = common_pb2.Route()
    broken.CopyFrom(route)
    broken.hops[2].units.start = 3  # the last hop does not host [3, 6)
    broken.hops[1].units.end = 3
    # recoveries=0: a client that may recover would fetch the real route and succeed
    with Client(stack.orchestrator.address, recoveries=0) as client, pytest.raises(grpc.RpcError) as info:
        list(client.generate_ids(PROMPT, broken, Sampling(max_new_tokens=2)))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details().startswith("next hop")


def test_compressed_wire_dtype_must_match_the_declared_compression(stack, deployed):
    _, route = deployed
    units = (route.hops[1].units.start, route.hops[1].units.end)
    chunks = encode(
        torch.zeros(1, 2, 64), epoch=route.epoch, units=units, compression=tensor_pb2.COMPRESSION_INT8_ABSMAX
    )
    chunks[0].header.scales = b"\0" * 4  # one scale for two tokens
    with pytest.raises(grpc.RpcError) as info:
        _stream(
            route.hops[1].address,
            [_open(route, 1, "z"), *(worker_pb2.ForwardRequest(activation=c) for c in chunks)],
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "int8 tensor needs 2 scales" in info.value.details()
