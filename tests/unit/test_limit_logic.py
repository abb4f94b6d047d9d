"""Server-wide caps and backpressure, as pure logic: admission per service and per
client, the retry hint, the SDK's backoff on overload, a session's bounded inbox, the
cut-off of a caller that stopped reading, the client-side throttle and the first hop's
waiting room. No sockets."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from resplit.core.limits import Admission, Caps, client_identity, hint_in
from resplit.sdk import AsyncClient, Client
from resplit.sdk.exchange import GenerateExchange, Sampling
from resplit.sdk.requests import OVERLOAD_CAP_S, SessionFailed, overload_hint_ms, overload_wait_s
from resplit.sdk.throttle import Throttle, Throttled
from resplit.v1 import common_pb2, worker_pb2
from services.worker.core import errors
from services.worker.core.inbox import Inbox
from services.worker.core.sessions import Limits, Session, SessionTable
from services.worker.core.waiting import WaitingRoom
from services.worker.replies import ReaderStalled, Replies

ROUTE = common_pb2.Route(deployment="d", epoch=1, hops=[common_pb2.Hop(address="127.0.0.1:1")])


class _Refused(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing=()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return self._trailing


# -- admission -------------------------------------------------------------------------


def test_a_service_admits_up_to_its_cap_then_refuses_with_a_hint_and_admits_again_on_release():
    admission = Admission(Caps(max_rpcs=3, max_rpcs_per_client=0, retry_after_ms=250), "worker")
    assert [admission.admit(f"ip:10.0.0.{i}") for i in range(3)] == [None, None, None]
    refusal = admission.admit("ip:10.0.0.9")
    assert refusal is not None and refusal.retry_after_ms == 250
    assert "worker has 3 RPCs in flight (limit 3" in refusal.message and hint_in(refusal.message) == 250
    assert admission.in_flight == 3 and admission.refused == 1  # a refusal takes no slot
    admission.release("ip:10.0.0.1")
    assert admission.admit("ip:10.0.0.9") is None and admission.in_flight == 3


def test_one_client_is_capped_below_the_service_and_others_still_get_in():
    admission = Admission(Caps(max_rpcs=10, max_rpcs_per_client=2))
    assert admission.admit("cn:client") is None and admission.admit("cn:client") is None
    refusal = admission.admit("cn:client")
    assert refusal is not None and "client 'cn:client' has 2 RPCs" in refusal.reason
    assert admission.admit("cn:worker-1") is None  # another identity is not held back
    assert admission.of("cn:client") == 2 and admission.in_flight == 3


def test_no_caps_admit_everything_and_a_release_without_admit_is_a_bug():
    admission = Admission(Caps())
    assert all(admission.admit("x") is None for _ in range(1000))
    with pytest.raises(ValueError, match="release without admit"):
        admission.release("never-seen")
    with pytest.raises(ValueError, match="negative"):
        Caps(max_rpcs=-1)


@pytest.mark.parametrize(
    ("names", "peer", "identity"),
    [
        (["worker-1"], "ipv4:127.0.0.1:5000", "cn:worker-1"),  # mutual TLS: the certificate names it
        ([], "ipv4:10.1.2.3:40000", "ip:10.1.2.3"),  # plaintext: the address, without the port
        ([], "ipv6:[::1]:40000", "ip:::1"),
        ([], "unix:/tmp/s", "unix:/tmp/s"),
    ],
)
def test_a_client_is_named_by_its_certificate_else_its_address(names, peer, identity):
    assert client_identity(names, peer) == identity


# -- the SDK's side: which refusals it retries, and how long it waits -------------------------


def test_only_an_overload_with_a_hint_is_worth_retrying():
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert overload_hint_ms(_Refused(exhausted, "x", (("retry-after-ms", "40"),))) == 40
    assert overload_hint_ms(_Refused(exhausted, "hop 2: full; retry after 70 ms or use another")) == 70
    # A session too long for --max-tokens carries no hint: retrying cannot help.
    assert overload_hint_ms(_Refused(exhausted, "would hold 9000 tokens, over the limit")) is None
    assert overload_hint_ms(_Refused(grpc.StatusCode.UNAVAILABLE, "retry after 5 ms")) is None


def test_overload_backoff_honours_the_hint_doubles_and_is_capped():
    assert overload_wait_s(1, 100) == pytest.approx(0.1)
    assert overload_wait_s(1, 10) == pytest.approx(0.05)  # never below the first step
    assert [overload_wait_s(a, 0) for a in (1, 2, 3)] == pytest.approx([0.05, 0.1, 0.2])
    assert overload_wait_s(30, 0) == pytest.approx(OVERLOAD_CAP_S)
    assert overload_wait_s(30, 5000) == pytest.approx(5.0)  # a longer hint wins over the cap
    assert overload_wait_s(1, 100, jitter=1.5) == pytest.approx(0.15)


def test_a_session_retries_an_overload_within_its_deadline_and_fails_past_it():
    client = Client("127.0.0.1:1", timeout_s=1.0)
    exchange = GenerateExchange(ROUTE, [1, 2], Sampling(max_new_tokens=2), False)
    busy = _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded: ...; retry after 100 ms")
    wait = client._recovery_wait_s(exchange, 1, busy)
    assert 0.1 <= wait <= 0.2  # the hint, jittered upwards only
    assert exchange.recovered_from == ["RESOURCE_EXHAUSTED: overloaded: ...; retry after 100 ms"]
    exchange.started = time.monotonic() - 0.95
    with pytest.raises(SessionFailed, match="deadline"):
        client._recovery_wait_s(exchange, 2, busy)
    too_long = _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "over the limit of 4096")
    with pytest.raises(_Refused):  # no hint: the caller sees it at once
        client._recovery_wait_s(exchange, 1, too_long)


def test_a_control_plane_call_is_retried_while_overloaded_then_answers():
    client = Client("127.0.0.1:1", timeout_s=5.0)
    answers = [_Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "x", (("retry-after-ms", "1"),))] * 3 + ["ok"]

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert client._retried(call) == "ok" and not answers
    with pytest.raises(_Refused):
        client._retried(lambda: (_ for _ in ()).throw(_Refused(grpc.StatusCode.INVALID_ARGUMENT, "bad")))


def test_a_full_worker_and_a_full_kv_budget_carry_the_hint_a_too_long_session_does_not():
    table = SessionTable(Limits(max_sessions=1, max_tokens=8, kv_budget_tokens=0, retry_after_ms=30))
    first = table.open(_session("a"))
    with pytest.raises(errors.Exhausted) as full:
        table.open(_session("b"))
    assert hint_in(str(full.value)) == 30
    with pytest.raises(errors.Exhausted) as too_long:
        table.begin_step(first, 0, 9)
    assert hint_in(str(too_long.value)) is None


# -- the worker's bounded queue and the cut-off of a caller that stopped reading -----------


def test_a_sessions_inbox_reads_ahead_at_most_its_bound():
    async def scenario() -> None:
        inbox: Inbox[int, str] = Inbox(max_requests=2)
        await inbox.offer(1)
        await inbox.offer(2)
        third = asyncio.ensure_future(inbox.offer(3))
        await asyncio.sleep(0.01)
        assert not third.done() and inbox.waiting_requests == 2  # the stream's reader waits
        inbox.put("reply")  # the ring's replies are never held back
        assert await inbox.get(1, "x") == 1
        await asyncio.wait_for(third, 1)
        assert [await inbox.get(1, "x") for _ in range(3)] == [2, "reply", 3]
        assert inbox.waiting_requests == 0

    asyncio.run(scenario())


class _NeverRead:
    """A context whose writes never finish: the caller stopped reading."""

    def __init__(self) -> None:
        self.writes = 0

    async def write(self, reply) -> None:
        self.writes += 1
        await asyncio.Event().wait()


def test_a_caller_that_stops_reading_is_cut_off_after_the_stall_timeout():
    async def scenario() -> None:
        context = _NeverRead()
        replies = Replies(context, stall_s=0.05)
        await replies.send(worker_pb2.ForwardResponse())
        with pytest.raises(ReaderStalled, match=r"took no reply for 0\.05 s"):
            await replies.send(worker_pb2.ForwardResponse())
        assert context.writes == 1  # never a second write
        await replies.settle()  # nothing in flight any more: returns at once

    asyncio.run(asyncio.wait_for(scenario(), 5))


FULL = _Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "full; retry after 40 ms", (("retry-after-ms", "40"),))
LOST = _Refused(grpc.StatusCode.UNAVAILABLE, "hop gone")


# -- the client-side throttle ---------------------------------------------------------


def test_a_hop_that_admits_everything_is_never_throttled():
    throttle = Throttle(k=2.0, window_s=10.0)
    for i in range(100):
        assert throttle.admits(i * 0.05, draw=0.0)
        throttle.admitted(i * 0.05)
    assert throttle.probability(5.0) == 0.0


def test_a_hop_refusing_most_sessions_makes_the_client_refuse_about_k_per_admitted():
    throttle = Throttle(k=2.0, window_s=10.0)
    for i in range(100):
        (throttle.admitted if i % 10 == 0 else lambda t: throttle.refused(t, 40))(i * 0.01)
    p = throttle.probability(1.0)
    assert p == pytest.approx((100 - 2 * 10) / 101)
    assert not throttle.admits(1.0, draw=p - 0.01)  # refused here: counted as a request
    assert len(throttle.requests) == 101 and throttle.hint_ms == 40
    assert throttle.admits(1.0, draw=p + 0.01)  # sent: its outcome is counted when known
    assert len(throttle.requests) == 101
    # the window forgets: ten seconds later, nothing is refused here
    assert throttle.probability(11.5) == 0.0


def test_a_few_refusals_do_not_start_the_throttle():
    """A worker full for a moment refuses one session: the next is still sent (the book's
    rule alone would refuse half of them after that one refusal)."""
    throttle = Throttle(k=2.0, window_s=10.0, min_refused=10)
    for i in range(9):
        throttle.refused(i * 0.01, 100)
    assert throttle.probability(0.1) == 0.0
    throttle.refused(0.1, 100)
    assert throttle.probability(0.1) == pytest.approx(10 / 11)


def test_a_client_refusal_reads_as_the_hops_own():
    throttle = Throttle(k=2.0)
    throttle.refused(0.0, 40)
    error = Throttled("10.0.0.1:50051", throttle, 0.0)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert overload_hint_ms(error) == 40 and hint_in(error.details()) == 40
    assert "10.0.0.1:50051" in error.details() and "client-side throttling" in str(error)


def test_the_client_counts_only_what_overload_decided_and_never_throttles_a_live_session():
    client = AsyncClient("127.0.0.1:1", throttle_k=2.0)

    def new() -> GenerateExchange:
        return GenerateExchange(ROUTE, [1, 2], Sampling(2))

    client._throttle_check("hop", new())  # nothing known: sent
    for _ in range(30):
        client._throttle_outcome("hop", LOST)  # a lost hop is not overload: counts for nothing
    assert len(client._throttles["hop"].requests) == 0
    for _ in range(30):
        client._throttle_outcome("hop", FULL)
    refused = 0
    for _ in range(200):
        try:
            client._throttle_check("hop", new())
        except Throttled:
            refused += 1
    assert refused > 100  # 30 of 30 refused, none admitted: most are refused here
    live = new()
    live.admitted = True  # its move to a new route, or its replay after a lost hop
    for _ in range(200):
        client._throttle_check("hop", live)  # never refused
    off = AsyncClient("127.0.0.1:1", throttle_k=0)
    off._throttle_outcome("hop", FULL)
    for _ in range(50):
        off._throttle_check("hop", new())  # never refuses


# -- the first hop's waiting room --------------------------------------------------------


def _session(sid: str) -> Session:
    hosted = type("H", (), {"deployment": "d", "epoch": 1, "start": 0, "sessions": 0})()
    state = type("S", (), {"seq_len": 0, "cache": None})()
    return Session(session_id=sid, hosted=hosted, state=state, sampler=None)


def test_a_freed_slot_goes_to_the_longest_waiting_session_and_no_newcomer_takes_it():
    async def scenario() -> None:
        table = SessionTable(Limits(max_sessions=1, retry_after_ms=30))
        room = WaitingRoom(table, max_waiting=2, wait_s=5.0)
        first = await room.admit("a")
        assert first.outcome == "admitted"
        opened = table.open(_session("a"))
        b = asyncio.ensure_future(room.admit("b"))
        c = asyncio.ensure_future(room.admit("c"))
        await asyncio.sleep(0.01)
        assert len(room) == 2 and not b.done()
        late = await room.admit("d")  # the room is full: refused at once, with the hint
        assert late.outcome == "refused" and hint_in(late.refusal) == 30
        assert "2 waiting for a slot already" in late.refusal
        table.close(opened)  # a slot frees: b's, held for it
        assert (await asyncio.wait_for(b, 1)).outcome == "waited"
        assert table.refusal("e") and not table.refusal("b")  # held: a newcomer finds it taken
        table.let_go("b")  # b's stream ended before it opened: c gets the slot
        assert (await asyncio.wait_for(c, 1)).outcome == "waited"
        table.open(_session("c"))
        assert table.refusal("e")

    asyncio.run(scenario())


def test_a_session_already_here_never_waits_even_with_the_room_full():
    """Its other segment, or its move to a new epoch, opens another stream: a rollout under a
    full worker must not be refused or delayed behind new sessions."""

    async def scenario() -> None:
        table = SessionTable(Limits(max_sessions=1))
        room = WaitingRoom(table, max_waiting=1, wait_s=5.0)
        await room.admit("a")
        table.open(_session("a"))
        waiting = asyncio.ensure_future(room.admit("b"))
        await asyncio.sleep(0.01)
        assert len(room) == 1
        assert (await asyncio.wait_for(room.admit("a"), 0.1)).outcome == "admitted"
        waiting.cancel()

    asyncio.run(scenario())


def test_a_wait_is_bounded_and_a_caller_that_leaves_gives_its_slot_back():
    async def scenario() -> None:
        table = SessionTable(Limits(max_sessions=1, retry_after_ms=30))
        room = WaitingRoom(table, max_waiting=4, wait_s=0.05)
        await room.admit("a")
        opened = table.open(_session("a"))
        timed_out = await room.admit("b")
        assert timed_out.outcome == "refused_after_wait" and "waited 50 ms" in timed_out.refusal
        assert hint_in(timed_out.refusal) == 30 and len(room) == 0
        patient = WaitingRoom(table, max_waiting=4, wait_s=5.0)
        leaving = asyncio.ensure_future(patient.admit("c"))
        staying = asyncio.ensure_future(patient.admit("d"))
        await asyncio.sleep(0.01)
        leaving.cancel()
        await asyncio.sleep(0.01)
        table.close(opened)
        assert (await asyncio.wait_for(staying, 1)).outcome == "waited"  # not lost to the one gone
        never = WaitingRoom(table, max_waiting=0, wait_s=5.0)
        assert (await never.admit("e")).outcome == "refused"

    asyncio.run(scenario())
