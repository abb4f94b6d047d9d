"""The ring's pieces without sockets: the first hop's slots (core/ring.py), the one inbox a
hop waits on (core/inbox.py), the next hop's end reaching that inbox (streams.py), and the
first hop taking a step's replies from the ring (transport.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest

from resplit.v1 import common_pb2, worker_pb2
from services.worker.core.errors import BadInput, NotHosted, NotTrusted
from services.worker.core.hosting import Hosting
from services.worker.core.inbox import ENDED, Inbox
from services.worker.core.ring import HopTable, RingTable
from services.worker.statuses import HopError
from services.worker.streams import Downstream
from services.worker.transport import Closed, Forwarding, OpenHop


def test_a_head_hop_attaches_only_with_the_slots_key():
    ring, inbox = RingTable(), Inbox()
    slot = ring.open("s", "d", 3, inbox)
    assert ring.find("s", "d", 3, slot.key) is slot
    with pytest.raises(NotTrusted):
        ring.find("s", "d", 3, "0" * 32)
    for other in (("t", "d", 3), ("s", "e", 3), ("s", "d", 4)):
        with pytest.raises(NotHosted):
            ring.find(*other, slot.key)
    assert ring.open("t", "d", 3, inbox).key != slot.key  # a new key per session
    ring.close("s", "d", 3)
    ring.close("s", "d", 3)  # idempotent
    with pytest.raises(NotHosted):
        ring.find("s", "d", 3, slot.key)
    assert len(ring) == 1


def test_a_lane_row_lands_only_with_its_hops_key_even_with_several_hops_of_a_session_here():
    hops, first, second = HopTable(), Inbox(), Inbox()
    # one worker running two hops of the same session (every segment of a plan on one node)
    a, b = hops.open("s", "d", 3, first), hops.open("s", "d", 3, second)
    assert a.key != b.key
    assert hops.find("s", "d", 3, a.key).inbox is first
    assert hops.find("s", "d", 3, b.key).inbox is second
    for other in (("t", "d", 3), ("s", "e", 3), ("s", "d", 4)):  # the key of another session
        with pytest.raises(NotTrusted):
            hops.find(*other, a.key)
    with pytest.raises(NotHosted):
        hops.find("s", "d", 3, "0" * 32)
    hops.close(a.key)
    hops.close(a.key)  # idempotent
    with pytest.raises(NotHosted):
        hops.find("s", "d", 3, a.key)
    assert len(hops) == 1


def test_the_inbox_keeps_arrival_order_raises_failures_and_names_what_timed_out():
    async def run():
        inbox = Inbox()
        inbox.put("request")
        inbox.put("reply")
        inbox.end()
        inbox.fail(HopError(grpc.StatusCode.UNAVAILABLE, "next hop x: gone"))
        assert [await inbox.get(1, "x") for _ in range(3)] == ["request", "reply", ENDED]
        with pytest.raises(HopError, match="gone"):
            await inbox.get(1, "x")
        with pytest.raises(TimeoutError, match=r"no token from the head hop for 0\.05 s"):
            await inbox.get(0.05, "token from the head hop")

    asyncio.run(run())


class _Call:
    """A Forward call to the next hop whose one read the test settles."""

    def __init__(self) -> None:
        self.read_result: asyncio.Future = asyncio.get_running_loop().create_future()
        self.cancelled = False

    async def read(self):
        return await self.read_result

    async def code(self):
        return grpc.StatusCode.UNAVAILABLE

    async def details(self):
        return "Socket closed"

    async def done_writing(self) -> None:
        pass

    def cancel(self) -> None:
        """As with grpc: a read in flight ends with the stream."""
        self.cancelled = True
        if not self.read_result.done():
            self.read_result.set_result(grpc.aio.EOF)


class _Stub:
    def __init__(self, call: _Call) -> None:
        self.call = call

    def Forward(self, metadata=None) -> _Call:
        return self.call


def test_the_next_hops_end_reaches_the_inbox_at_once_and_our_own_close_does_not():
    async def run():
        call = _Call()
        inbox = Inbox()
        downstream = Downstream(_Stub(call), "10.0.0.2:50061", (3, 5), lanes=None, slot=("s", "d", 1))
        downstream.watch(inbox)
        call.read_result.set_result(grpc.aio.EOF)
        with pytest.raises(HopError) as failed:
            await inbox.get(1, "request")
        assert failed.value.code == grpc.StatusCode.UNAVAILABLE
        assert failed.value.details == "next hop 10.0.0.2:50061: Socket closed"

        quiet, second = Inbox(), _Call()
        closing = Downstream(_Stub(second), "10.0.0.3:50061", (5, 7), lanes=None, slot=("s", "d", 1))
        closing.watch(quiet)
        await closing.close()
        await asyncio.sleep(0.05)
        assert second.cancelled
        with pytest.raises(TimeoutError):
            await quiet.get(0.05, "request")

    asyncio.run(run())


def _first_hop(epoch: int = 1, latest: int = 1, route: common_pb2.Route | None = None):
    hosting = Hosting()
    if route is not None:
        hosting.commit("d", latest, route)
    else:
        hosting._latest["d"] = latest
    channels = SimpleNamespace(stub=lambda address: None)
    forwarding = Forwarding(
        hosting, SimpleNamespace(limits=SimpleNamespace(idle_timeout_s=1.0)), channels, None, 1, None
    )
    hosted = SimpleNamespace(deployment="d", epoch=epoch, generative=True)
    hop = OpenHop(SimpleNamespace(hosted=hosted, session_id="s"), first=True, inbox=Inbox())
    return forwarding, hop


def _token(step: int, latest: int = 1) -> worker_pb2.ForwardResponse:
    return worker_pb2.ForwardResponse(
        token=worker_pb2.TokenOutput(step=step, token_id=100 + step, latest_epoch=latest)
    )


async def _returned(forwarding, hop):
    return [reply async for reply in forwarding._returned(hop)]


def test_the_first_hop_passes_the_rings_replies_through_the_token_and_stamps_the_new_route():
    async def run():
        route = common_pb2.Route(deployment="d", epoch=2, hops=[common_pb2.Hop(node_id="n", address="h:1")])
        forwarding, hop = _first_hop(epoch=1, latest=2, route=route)
        logits = worker_pb2.ForwardResponse(result=worker_pb2.ForwardResponse().result)
        hop.inbox.put(logits)
        hop.inbox.put(_token(4, latest=1))
        hop.inbox.put(_token(5))  # the next step's: stays in the inbox
        got = await _returned(forwarding, hop)
        assert [r.WhichOneof("kind") for r in got] == ["result", "token"]
        assert got[1].token.latest_epoch == 2 and got[1].token.route == route

        current, same = _first_hop(epoch=2, latest=2, route=route)
        same.inbox.put(_token(0, latest=2))
        (token,) = await _returned(current, same)
        assert not token.token.HasField("route")  # the session is on the newest epoch already

    asyncio.run(run())


def test_a_close_or_a_stray_step_while_a_token_is_due_ends_the_step():
    async def run():
        forwarding, hop = _first_hop()
        hop.inbox.put(worker_pb2.ForwardRequest(close=worker_pb2.CloseSession(session_id="s")))
        with pytest.raises(Closed):
            await _returned(forwarding, hop)
        hop.inbox.end()
        with pytest.raises(Closed):
            await _returned(forwarding, hop)
        hop.inbox.put(worker_pb2.ForwardRequest(tokens=worker_pb2.TokenInput(step=9, input_ids=[1])))
        with pytest.raises(BadInput, match="before the previous step's token"):
            await _returned(forwarding, hop)
        hop.inbox.fail(HopError(grpc.StatusCode.RESOURCE_EXHAUSTED, "next hop h:2: limit"))
        with pytest.raises(HopError, match="limit"):
            await _returned(forwarding, hop)

    asyncio.run(run())


def test_a_broken_request_stream_ends_the_hops_inbox():
    """The caller's stream failing mid-way is its end for the hop, not a wait until the idle timeout."""
    from services.worker.transport import _pump

    async def broken():
        yield worker_pb2.ForwardRequest(close=worker_pb2.CloseSession(session_id="s"))
        raise RuntimeError("stream reset")

    async def run():
        inbox = Inbox()
        with pytest.raises(RuntimeError):
            await _pump(broken(), inbox)
        assert (await inbox.get(1, "request")).HasField("close")
        assert await inbox.get(1, "request") is ENDED

    asyncio.run(run())
