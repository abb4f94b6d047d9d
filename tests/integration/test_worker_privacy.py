"""A worker started without --trusted refuses privacy-critical units, whatever plan it is sent.

The orchestrator and the broadcaster already refuse such plans; this is the
third line: a plan written straight into Redis (past both of them), a direct
LoadSegment, a client following that plan's route - each is answered
PERMISSION_DENIED by the untrusted worker, with a WARNING naming the units and
the deployment. worker-0/1 of the shared stack are trusted, worker-2/3 are not.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from logtap import tap
from support import spread

from resplit.models import Checkpoint, num_units
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client, Sampling
from resplit.state import StateStore
from resplit.v1 import common_pb2, worker_pb2, worker_pb2_grpc

pytestmark = pytest.mark.integration
NAME = "privacy-guard"
PROMPT = [5, 6, 7, 8]


@pytest.fixture(scope="module")
def deployed(stack, tiny_models):
    model = str(tiny_models["llama"])
    units = num_units(Checkpoint(model).config)
    plan = stack.deploy(NAME, model, spread(units, 3))
    return model, units, plan


def _load(stack, worker: int, model: str, start: int, end: int, epoch: int, depth: int = 0):
    request = worker_pb2.LoadSegmentRequest(
        deployment=NAME,
        epoch=epoch,
        units=common_pb2.UnitRange(start=start, end=end),
        model_dir=model,
        private_depth=depth,
    )
    with sync_channel(stack.worker_procs[worker].address) as channel:
        stub = worker_pb2_grpc.WorkerServiceStub(channel)
        try:
            return stub.LoadSegment(request, timeout=30), stub.GetStatus(
                worker_pb2.GetStatusRequest(), timeout=5
            )
        except grpc.RpcError as exc:
            return exc, stub.GetStatus(worker_pb2.GetStatusRequest(), timeout=5)


def _hosts(status: worker_pb2.WorkerStatus, epoch: int) -> list[tuple[int, int]]:
    return [
        (s.units.start, s.units.end) for s in status.segments if s.deployment == NAME and s.epoch == epoch
    ]


def test_load_segment_of_critical_units_is_refused_by_an_untrusted_worker(stack, deployed):
    model, units, plan = deployed
    log = tap(stack.worker_procs[2])
    epoch = plan.epoch + 100  # an epoch nobody serves: nothing of the deployment's traffic is touched
    head = units - 1
    cases = [
        ((0, 2, 0), "unit 0"),  # the embedding
        ((head, units, 0), f"the head (unit {head})"),  # the head alone
        ((2, units, 0), f"the head (unit {head})"),  # blocks and the head
        ((1, 3, 1), "unit 1"),  # within private_depth 1
        ((2, 3, 2), "unit 2"),  # within private_depth 2
    ]
    for (start, end, depth), named in cases:
        answer, status = _load(stack, 2, model, start, end, epoch, depth)
        assert isinstance(answer, grpc.RpcError), f"[{start}, {end}) depth {depth} was loaded"
        assert answer.code() == grpc.StatusCode.PERMISSION_DENIED
        assert named in answer.details() and repr(NAME) in answer.details()
        assert "not trusted" in answer.details()
        assert _hosts(status, epoch) == []
        log.wait_for("WARNING", "LoadSegment refused", named, repr(NAME), f"[{start}, {end})")
    # A block past the private depth is fine on an untrusted worker; a trusted one takes anything.
    answer, status = _load(stack, 2, model, 2, 3, epoch, 1)
    assert not isinstance(answer, grpc.RpcError), answer
    assert _hosts(status, epoch) == [(2, 3)]
    answer, status = _load(stack, 0, model, 0, 2, epoch, 1)
    assert not isinstance(answer, grpc.RpcError), answer
    for worker, (start, end) in ((2, (2, 3)), (0, (0, 2))):
        with sync_channel(stack.worker_procs[worker].address) as channel:
            worker_pb2_grpc.WorkerServiceStub(channel).ReleaseSegment(
                worker_pb2.ReleaseSegmentRequest(
                    deployment=NAME, epoch=epoch, units=common_pb2.UnitRange(start=start, end=end)
                ),
                timeout=5,
            )


def test_a_plan_written_past_the_control_plane_is_refused_by_the_worker(stack, deployed):
    model, units, plan = deployed
    log = tap(stack.worker_procs[2])
    cut = units // 2
    bad = common_pb2.Plan(deployment=NAME, epoch=plan.epoch + 1)
    bad.segments.add(units=common_pb2.UnitRange(start=0, end=cut), node_id="worker-2")
    bad.segments.add(units=common_pb2.UnitRange(start=cut, end=units), node_id="worker-0")

    async def put() -> None:
        store = StateStore(stack.redis.url)
        try:
            await store.put_plan(bad)
        finally:
            await store.close()

    asyncio.run(put())
    # The broadcaster never ran this plan: whoever loads it, worker-2 says no.
    answer, status = _load(stack, 2, model, 0, cut, bad.epoch)
    assert isinstance(answer, grpc.RpcError) and answer.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _hosts(status, bad.epoch) == []
    with Client(stack.orchestrator.address, recoveries=0) as client:
        route = client.route(NAME)
        assert route.epoch == bad.epoch
        assert route.hops[0].address == stack.worker_procs[2].address
        with pytest.raises(grpc.RpcError) as info:
            list(client.generate_ids(PROMPT, route, Sampling(max_new_tokens=2)))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, info.value
    assert "unit 0" in info.value.details() and "not trusted" in info.value.details()
    log.wait_for("WARNING", "session", "refused", "unit 0", repr(NAME))
