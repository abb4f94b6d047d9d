"""Both ends of the server loop decide from the same token where it stops."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from resplit.sdk.exchange import GenerateExchange, Sampling
from resplit.v1 import common_pb2, tensor_pb2, worker_pb2
from services.worker.core.step import fed_back

ROUTE = common_pb2.Route(
    deployment="d", epoch=3, hops=[common_pb2.Hop(address="127.0.0.1:1", units=common_pb2.UnitRange(end=4))]
)


def _session(epoch: int = 3):
    return SimpleNamespace(hosted=SimpleNamespace(epoch=epoch))


def _tokens(step: int) -> worker_pb2.ForwardRequest:
    return worker_pb2.ForwardRequest(tokens=worker_pb2.TokenInput(step=step, input_ids=[1, 2], rows=1))


def _token(step=4, token_id=77, finished=False, latest_epoch=3) -> worker_pb2.TokenOutput:
    return worker_pb2.TokenOutput(step=step, token_id=token_id, finished=finished, latest_epoch=latest_epoch)


def test_the_first_hop_feeds_the_token_back_as_the_next_step():
    nxt = fed_back(_session(), _tokens(4), _token())
    assert nxt is not None and nxt.HasField("tokens")
    assert (nxt.tokens.step, list(nxt.tokens.input_ids), nxt.tokens.rows) == (5, [77], 1)


@pytest.mark.parametrize(
    "request_, token",
    [
        (_tokens(4), _token(finished=True)),  # the session is done
        (_tokens(4), _token(latest_epoch=4)),  # a newer epoch: the client moves the session here
        (_tokens(4), None),  # no token came back (an embedding step)
        (worker_pb2.ForwardRequest(activation=tensor_pb2.TensorChunk()), _token()),  # not the first hop
    ],
)
def test_the_loop_stops_where_the_client_takes_over(request_, token):
    assert fed_back(_session(), request_, token) is None


def _reply(**fields) -> worker_pb2.ForwardResponse:
    return worker_pb2.ForwardResponse(token=_token(**fields))


def test_with_the_server_loop_the_client_sends_nothing_until_a_newer_epoch():
    exchange = GenerateExchange(ROUTE, [1, 2], Sampling(max_new_tokens=8))
    assert exchange.opening()[0].open.server_loop
    token, following, done = exchange.handle(_reply(step=0, token_id=5))
    assert token.token_id == 5 and following == [] and not done
    token, following, done = exchange.handle(_reply(step=1, token_id=6, latest_epoch=4))
    assert exchange.moved() and not done
    # The first hop stopped at this token: the client sends the step itself (or moves first).
    assert [m.tokens.step for m in following] == [2] and list(following[0].tokens.input_ids) == [6]


def test_without_the_server_loop_the_client_sends_every_step():
    exchange = GenerateExchange(ROUTE, [1, 2], Sampling(max_new_tokens=8), server_loop=False)
    assert not exchange.opening()[0].open.server_loop
    _, following, _ = exchange.handle(_reply(step=0, token_id=5))
    assert [m.tokens.step for m in following] == [1]


def test_a_finished_token_closes_in_both_modes():
    for loop in (True, False):
        exchange = GenerateExchange(ROUTE, [1], Sampling(max_new_tokens=1), server_loop=loop)
        _, following, done = exchange.handle(_reply(step=0, finished=True))
        assert done and following[0].HasField("close")
