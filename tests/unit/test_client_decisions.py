"""The decisions both clients share (resplit/sdk/base.py): which failures a session
survives, how long it backs off, and when it asks for a newer route."""

from __future__ import annotations

import os
import time

import grpc
import pytest

from resplit import AsyncClient, Client
from resplit.sdk.base import DOWN_ROUTE_WAIT_S, ROUTE_CHECK_INTERVAL_S
from resplit.sdk.exchange import GenerateExchange, Sampling
from resplit.sdk.requests import BACKOFF_CAP_S, HopTimeout, SessionFailed
from resplit.v1 import common_pb2

ROUTE = common_pb2.Route(
    deployment="d", epoch=3, hops=[common_pb2.Hop(address="127.0.0.1:1", units=common_pb2.UnitRange(end=4))]
)


class _Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def _exchange() -> GenerateExchange:
    return GenerateExchange(ROUTE, [1, 2, 3], Sampling(max_new_tokens=4), False)


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_both_clients_take_the_same_options(cls):
    client = cls("10.0.0.1:7", recoveries=2, move_cache=False, step_timeout_s=5.0, server_loop=False)
    assert (client.orchestrator, client.recoveries, client.move_cache) == ("10.0.0.1:7", 2, False)
    assert (client.step_timeout_s, client.server_loop) == (5.0, False)
    exchange = client._generate_exchange([1, 2], ROUTE, None, False)
    assert exchange.server_loop is False and exchange.sampling == Sampling()


def test_a_recoverable_failure_backs_off_longer_each_time_and_is_recorded():
    client, exchange = Client(recoveries=3), _exchange()
    waits = [
        client._recovery_wait_s(
            exchange, attempt, _Refused(grpc.StatusCode.UNAVAILABLE, f"hop {attempt} gone")
        )
        for attempt in (1, 2, 3)
    ]
    assert waits == sorted(waits) and waits[0] < waits[-1]
    assert exchange.recovered_from == [f"UNAVAILABLE: hop {a} gone" for a in (1, 2, 3)]


def test_a_session_out_of_recoveries_fails_naming_the_cause_and_the_recoveries():
    client, exchange = Client(recoveries=1), _exchange()
    error = HopTimeout("no reply")
    client._recovery_wait_s(exchange, 1, error)
    with pytest.raises(SessionFailed) as raised:
        client._recovery_wait_s(exchange, 2, error)
    failed = raised.value
    assert failed.last is error and failed.code() == grpc.StatusCode.UNAVAILABLE
    assert failed.recoveries == ["UNAVAILABLE: no reply"] and len(exchange.recovered_from) == 1
    assert "recoveries=1 used up, after 1 recoveries" in failed.details()
    assert "causes seen: UNAVAILABLE: no reply" in failed.details()


def test_by_default_a_session_recovers_until_its_deadline_not_a_count(monkeypatch):
    client, exchange = Client(timeout_s=30.0), _exchange()
    error = _Refused(grpc.StatusCode.UNAVAILABLE, "next hop refused")
    now = [exchange.started]
    monkeypatch.setattr("resplit.sdk.base.time.monotonic", lambda: now[0])
    waits = [client._recovery_wait_s(exchange, attempt, error) for attempt in range(1, 101)]
    assert len(exchange.recovered_from) == 100
    assert max(waits) <= BACKOFF_CAP_S and min(waits[10:]) >= BACKOFF_CAP_S / 2  # capped, jittered
    now[0] += 29.9  # the next wait would pass the deadline
    with pytest.raises(SessionFailed) as raised:
        client._recovery_wait_s(exchange, 101, error)
    assert "its deadline (timeout_s=30) passed, after 100 recoveries in 29.9 s" in raised.value.details()


def test_a_lost_hop_reports_every_node_of_the_route_once_and_other_failures_none():
    route = common_pb2.Route(
        deployment="d",
        hops=[common_pb2.Hop(node_id=n) for n in ("worker-0", "worker-1", "worker-0")],
    )
    client = Client()
    report = client._failure_report(route, HopTimeout("no reply"))
    assert list(report.node_ids) == ["worker-0", "worker-1"] and report.deployment == "d"
    assert report.reason == "UNAVAILABLE: no reply" and str(os.getpid()) in report.reporter
    stale = _Refused(grpc.StatusCode.FAILED_PRECONDITION, "stale epoch")
    assert client._failure_report(route, stale) is None


def test_a_recovering_session_waits_for_a_route_without_the_nodes_found_down(monkeypatch):
    client, exchange = Client(timeout_s=60.0), _exchange()
    error = HopTimeout("no reply")
    now = [exchange.started]
    monkeypatch.setattr("resplit.sdk.base.time.monotonic", lambda: now[0])
    through = common_pb2.Route(deployment="d", epoch=3, hops=[common_pb2.Hop(node_id="w1")])
    around = common_pb2.Route(deployment="d", epoch=4, hops=[common_pb2.Hop(node_id="w2")])
    since = now[0]
    assert client._recovery_route(exchange, through, {"w1"}, error, since) is None  # re-planning
    unreachable = _Refused(grpc.StatusCode.UNAVAILABLE, "orchestrator away")
    assert client._recovery_route(exchange, unreachable, {"w1"}, error, since) is None
    assert client._recovery_route(exchange, around, {"w1"}, error, since) is around
    # Nothing found down: the orchestrator's route, or (it does not answer) the session's own.
    assert client._recovery_route(exchange, through, set(), error, since) is through
    assert client._recovery_route(exchange, unreachable, set(), error, since) is exchange.route
    gone = _Refused(grpc.StatusCode.NOT_FOUND, "deployment 'd' has no plan")
    with pytest.raises(SessionFailed) as raised:
        client._recovery_route(exchange, gone, set(), error, since)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "the orchestrator no longer knows the deployment" in raised.value.details()
    now[0] += DOWN_ROUTE_WAIT_S  # waited long enough: the node may be back, take what is given
    assert client._recovery_route(exchange, through, {"w1"}, error, since) is through
    now[0] = exchange.started + 60.5  # past it: (t + 60.0) - t can round to 59.999...
    with pytest.raises(SessionFailed) as raised:
        client._recovery_route(exchange, through, {"w1"}, error, since)
    assert "no route without ['w1'] before its deadline" in raised.value.details()


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED],
)
def test_the_callers_own_errors_are_not_replayed(code):
    client, exchange = AsyncClient(), _exchange()
    error = _Refused(code, "bad input")
    with pytest.raises(grpc.RpcError) as raised:
        client._recovery_wait_s(exchange, 1, error)
    assert raised.value is error and exchange.recovered_from == []


def test_a_newer_route_is_taken_and_an_older_or_same_one_is_not():
    client = Client()
    newer, same = common_pb2.Route(deployment="d", epoch=4), common_pb2.Route(deployment="d", epoch=3)
    assert client._route_answer(ROUTE, same) is None
    assert client._route_answer(ROUTE, newer) is newer
    assert client._route_check_due()  # an answer, newer or not, lets the next ask go at once


def test_an_unreachable_orchestrator_is_asked_again_only_after_a_while(monkeypatch):
    client, now = Client(), [100.0]
    monkeypatch.setattr("resplit.sdk.base.time.monotonic", lambda: now[0])
    assert client._route_check_due()
    assert client._route_answer(ROUTE, None) is None
    assert not client._route_check_due()
    now[0] += ROUTE_CHECK_INTERVAL_S
    assert client._route_check_due()


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_a_session_moves_to_the_route_its_token_carries_only_when_it_is_newer(cls):
    client, exchange = cls(), _exchange()
    assert client._pushed_route(exchange) is None  # no token carried one
    newer = common_pb2.Route(deployment="d", epoch=4, hops=ROUTE.hops)
    for pushed, taken in (
        (newer, True),
        (common_pb2.Route(deployment="d", epoch=3, hops=ROUTE.hops), False),  # not newer
        (common_pb2.Route(deployment="other", epoch=4, hops=ROUTE.hops), False),
        (common_pb2.Route(deployment="d", epoch=4), False),  # no hops: nothing to open
    ):
        exchange.pushed_route = pushed
        assert (client._pushed_route(exchange) is pushed) == taken, pushed


def test_the_token_that_reports_a_newer_epoch_hands_its_route_to_the_session():
    from resplit.v1 import worker_pb2

    exchange = _exchange()
    newer = common_pb2.Route(deployment="d", epoch=4, hops=ROUTE.hops)
    token = worker_pb2.TokenOutput(step=0, token_id=7, latest_epoch=4, route=newer)
    exchange.handle(worker_pb2.ForwardResponse(token=token))
    assert exchange.moved() and exchange.pushed_route == newer


def test_the_client_lists_deployments_once():
    class _Orchestrator:
        listed = 0

        def ListDeployments(self, request, timeout):
            _Orchestrator.listed += 1
            from resplit.v1 import orchestrator_pb2

            return orchestrator_pb2.ListDeploymentsResponse(deployments=[common_pb2.Deployment(name="d")])

    client = Client()
    client._orchestrator = _Orchestrator
    assert client.deployment("d").name == client.deployment("d").name == "d"
    assert _Orchestrator.listed == 1


def test_a_node_found_down_that_answers_again_ends_the_wait_for_a_route_around_it(monkeypatch):
    """A worker SIGSTOPped for a few seconds is found down, the re-plan around it fails (the
    chaos soak killed the broadcaster meanwhile), and it comes back: the plan in force is
    whole again and no new one comes. The session asks again every DOWN_RECHECK_S and
    replays on that plan once the orchestrator finds the node up, instead of waiting out
    DOWN_ROUTE_WAIT_S (the soak's 18-s stall). Only an explicit "up" ends the wait."""
    from resplit.sdk.base import DOWN_RECHECK_S, still_down
    from resplit.v1 import orchestrator_pb2

    verdict = orchestrator_pb2.FailureVerdict
    found = orchestrator_pb2.ReportFailureResponse(
        verdicts=[
            verdict(node_id="w1", state=verdict.STATE_UP),
            verdict(node_id="w2", state=verdict.STATE_DOWN),
        ]
    )
    assert still_down({"w1", "w2", "w3"}, found) == {"w2", "w3"}  # w3: no verdict, not checked

    through = common_pb2.Route(deployment="d", epoch=3, hops=[common_pb2.Hop(node_id="w1", address="a:1")])
    asked: list[list[str]] = []

    class Orchestrator:
        def ReportFailure(self, request, timeout):
            asked.append(list(request.node_ids))
            state = verdict.STATE_DOWN if len(asked) < 3 else verdict.STATE_UP  # back at the 3rd
            return orchestrator_pb2.ReportFailureResponse(verdicts=[verdict(node_id="w1", state=state)])

    client, exchange = Client(timeout_s=60.0), _exchange()
    exchange.route = through
    monkeypatch.setattr(client, "_orchestrator", lambda: Orchestrator())
    monkeypatch.setattr(client, "route", lambda deployment: through)  # the old plan, whole again
    started = time.monotonic()
    client._recover(exchange, 1, HopTimeout("no reply"))
    waited = time.monotonic() - started
    assert asked == [["w1"], ["w1"], ["w1"]]  # the first report, then a recheck each second
    assert exchange.route is through
    assert 2 * DOWN_RECHECK_S <= waited < DOWN_ROUTE_WAIT_S / 2
