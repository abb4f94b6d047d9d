"""Hostile input against every RPC of every running service.

Hypothesis drives 1,000 random messages per RPC (``FUZZ_EXAMPLES`` to change),
up to 16 of them in flight at once, at real processes: the shared stack's
workers, orchestrator and broadcaster, plus a monitor and a splitter of this
module's own on the stack's Redis.
Messages are random in every field (tests/fuzzmsg.py): extremes, NaN and Inf,
odd strings, unknown enums, long repeated fields; Forward streams open real
and broken sessions and send truncated, oversize-shaped, NaN/Inf activations,
wrong epochs and sessions, replayed steps.

Each answer must be a proper status: OK where the input happens to be valid,
else INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, ... - never UNKNOWN or
INTERNAL (an unhandled exception). Well-formed calls go out among the hostile
ones (GOOD_EVERY) and must succeed, so a service that refused everything would
fail. After each RPC's fuzzing every process is alive and serving and the live
deployment still generates exactly its tokens; at the end the workers host
exactly what they hosted before with no session left and their memory has not
run away.

Mutating control RPCs (Deploy, Undeploy, ApplyPlan, SwapLayers, Rollout, Release, CommitEpoch,
ReleaseSegment, LoadSegment) only ever name deployments this module owns
("fuzz-" prefix, never the live one); nothing else sharing the stack is touched.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from fuzzmsg import OWNED, Fuzz, _repeated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from logtap import tap
from support import make_plan, spread

from resplit.core.tensors import encode
from resplit.launcher.processes import ServiceProcess
from resplit.models import Checkpoint, num_units
from resplit.rpc.channels import sync_channel
from resplit.sdk import Client, Sampling
from resplit.sdk.exchange import GenerateExchange
from resplit.v1 import (
    broadcaster_pb2,
    broadcaster_pb2_grpc,
    common_pb2,
    monitor_pb2,
    monitor_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    splitter_pb2,
    splitter_pb2_grpc,
    tensor_pb2,
    worker_pb2,
    worker_pb2_grpc,
)

pytestmark = pytest.mark.integration
LIVE = "fuzz-live"
#: Deployments of the well-formed calls (never a name the fuzzer picks: see fuzzmsg.OWNED).
GOOD = "fuzz-good"
PROMPT = [11, 12, 13, 14, 15]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SEEDS = st.integers(0, 2**64 - 1)
#: An unhandled exception in a servicer; never a proper answer to bad input.
BROKEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
CODES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
TIMES: dict[str, float] = collections.defaultdict(float)


def _answer(rpc: str, call, request=None):
    """Run ``call``; its status code (OK when it returned). Fails on UNKNOWN / INTERNAL."""
    started = time.perf_counter()
    try:
        result = call()
        code = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code, result = exc.code(), exc
        assert code not in BROKEN, f"{rpc}: {code.name} {exc.details()!r}\nrequest: {request!r}"[:4000]
    finally:
        TIMES[rpc] += time.perf_counter() - started
    CODES[rpc][code.name] += 1
    return result


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _generate(orchestrator: str) -> list[int]:
    with Client(orchestrator) as client:
        route = client.route(LIVE)
        return [t.token_id for t in client.generate_ids(PROMPT, route, Sampling(max_new_tokens=6))]


class Env:
    """Channels (one per service), the live deployment and the baseline."""

    def __init__(self, stack, tiny_models, monitor, splitter) -> None:
        self.stack = stack
        self.model = str(tiny_models["llama"])
        self.units = num_units(Checkpoint(self.model).config)
        self.monitor_proc, self.splitter_proc = monitor, splitter
        self.channels = {
            "orchestrator": sync_channel(stack.orchestrator.address),
            "broadcaster": sync_channel(stack.broadcaster.address),
            "monitor": sync_channel(monitor.address),
            "splitter": sync_channel(splitter.address),
        }
        self.workers = [
            worker_pb2_grpc.WorkerServiceStub(sync_channel(p.address)) for p in stack.worker_procs[:3]
        ]
        self.orchestrator = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channels["orchestrator"])
        self.broadcaster = broadcaster_pb2_grpc.BroadcasterServiceStub(self.channels["broadcaster"])
        self.monitor = monitor_pb2_grpc.MonitorServiceStub(self.channels["monitor"])
        self.splitter = splitter_pb2_grpc.SplitterServiceStub(self.channels["splitter"])
        self.profile = self.splitter.ProfileModel(
            splitter_pb2.ProfileModelRequest(model_dir=self.model), timeout=30
        )
        self.route = self.orchestrator.GetRoute(orchestrator_pb2.GetRouteRequest(deployment=LIVE), timeout=10)
        addresses = [p.address for p in stack.worker_procs[:3]]
        self.by_address = dict(zip(addresses, self.workers, strict=True))

    def status(self) -> list[tuple]:
        out = []
        for stub in self.workers:
            status = stub.GetStatus(worker_pb2.GetStatusRequest(), timeout=10)
            out.append(
                (
                    status.sessions,
                    sorted(
                        (s.deployment, s.epoch, s.units.start, s.units.end, s.sessions)
                        for s in status.segments
                    ),
                )
            )
        return out

    def release_owned(self) -> None:
        """Free what the fuzzer's own LoadSegment calls happened to load."""
        for stub in self.workers:
            for s in stub.GetStatus(worker_pb2.GetStatusRequest(), timeout=10).segments:
                if s.deployment.startswith("fuzz-") and s.deployment != LIVE:
                    stub.ReleaseSegment(
                        worker_pb2.ReleaseSegmentRequest(
                            deployment=s.deployment, epoch=s.epoch, units=s.units
                        ),
                        timeout=10,
                    )


def _settled(env: Env, timeout_s: float = 10.0) -> list[tuple]:
    """The workers' status once the session of the generate just run has closed on every hop.

    A hop closes its session a moment after the client has its last token (the first hop
    may still wait for the relayed copy of a token it took locally), so a status read at
    once can still count it."""

    def live_sessions(status: list[tuple]) -> int:
        return sum(s[-1] for _, segments in status for s in segments if s[0] == LIVE)

    deadline = time.monotonic() + timeout_s
    status = env.status()
    while live_sessions(status) and time.monotonic() < deadline:
        time.sleep(0.1)
        status = env.status()
    assert not live_sessions(status), f"the live session never closed: {status}"
    return status


@pytest.fixture(scope="module")
def env(stack, tiny_models):
    monitor = ServiceProcess("monitor", stack.redis.url).start()
    splitter = ServiceProcess("splitter", stack.redis.url).start()
    try:
        monitor.wait_health("SERVING", timeout=60)
        splitter.wait_health("SERVING", timeout=60)
        units = num_units(Checkpoint(str(tiny_models["llama"])).config)
        stack.deploy(LIVE, tiny_models["llama"], spread(units, 3))
        env = Env(stack, tiny_models, monitor, splitter)
        env.expected = _generate(stack.orchestrator.address)
        env.baseline = _settled(env)
        env.rss = {p.proc.pid: _rss_kib(p.proc.pid) for p in stack.worker_procs}
        env.started = time.perf_counter()
        yield env
    finally:
        monitor.kill()
        splitter.kill()


def _first(call):
    """A watch's first message, or None when it has nothing to send yet (it waits, as it
    should, until the client's deadline)."""
    try:
        return next(call, None)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            return None
        raise
    finally:
        call.cancel()


#: Calls in flight at once: the fuzzing waits about one round trip per window, not per message.
WINDOW = 16
#: A well-formed call goes out with the first window and then every GOOD_EVERY windows, in
#: flight among the hostile ones, and must succeed: a service that refused everything would
#: pass the bad-input checks alone.
GOOD_EVERY = 8

Call = tuple[Callable[[], Any], Any]


def _expect_ok(rpc: str, wait: Callable[[], Any], request) -> None:
    """A well-formed call's answer: it must succeed (``wait`` also checks what came back)."""
    try:
        wait()
    except grpc.RpcError as exc:
        raise AssertionError(
            f"{rpc}: a well-formed request failed: {exc.code().name} {exc.details()!r}\nrequest: {request!r}"
        ) from None
    CODES[rpc]["well-formed OK"] += 1


def _fuzz_calls(
    rpc: str, start: Callable[[int], Call], window: int = WINDOW, good: Callable[[], Call] | None = None
) -> None:
    """Send one message per example without waiting: ``start(seed)`` sends it and returns
    (wait for its answer, the request). Every ``window`` messages the answers are read
    and checked (:func:`_answer`), so up to ``window`` calls are in flight at a time,
    also for the RPCs that change state: concurrent hostile input is input too. A
    failure's message names the request that got the bad answer; the example that
    Hypothesis reports may be a later one of the same window. ``good()`` starts a
    well-formed call (see GOOD_EVERY) whose answer must be a success."""
    pending: list[Call] = []
    windows, goods = [0], [0]
    well_formed: list[Call] = []

    def drain() -> None:
        for wait, request in pending:
            _answer(rpc, wait, request)
        pending.clear()
        for wait, request in well_formed:
            _expect_ok(rpc, wait, request)
            goods[0] += 1
        well_formed.clear()
        windows[0] += 1

    @FUZZ
    @given(SEEDS)
    def fuzz(seed):
        if not pending and good is not None and windows[0] % GOOD_EVERY == 0:
            well_formed.append(good())
        pending.append(start(seed))
        if len(pending) >= window:
            drain()

    fuzz()
    drain()
    assert good is None or goods[0] >= 1, f"{rpc}: no well-formed call went out"


def _fuzz_unary(
    rpc: str,
    request_for: Callable[[Fuzz], tuple[Any, Any]],
    good: Callable[[], Call] | None = None,
    **fuzz_args: Any,
) -> None:
    """Fuzz a unary RPC: ``request_for(fuzz)`` gives (the stub's method, the request)."""

    def start(seed: int):
        method, request = request_for(Fuzz(seed, **fuzz_args))
        return method.future(request, timeout=30).result, request

    _fuzz_calls(rpc, start, good=good)


def _fuzz_watch(rpc: str, method, request_type, good: Callable[[], Call] | None = None) -> None:
    """Watches wait for a change: open them 100 at a time with a short deadline and read
    each one's first answer, instead of waiting out one deadline per message."""

    def start(seed: int):
        request = Fuzz(seed).message(request_type)
        call = method(request, timeout=0.5)
        return (lambda: _first(call)), request

    _fuzz_calls(rpc, start, window=100, good=good)


def _check(condition: bool, what: str) -> None:
    assert condition, f"unexpected answer to a well-formed request: {what}"


def _has_nodes(environment: common_pb2.Environment) -> bool:
    return "worker-0" in {n.node_id for n in environment.nodes}


def _unary_ok(method, request, check: Callable[[Any], bool] = lambda reply: True) -> Call:
    """A well-formed unary call, sent now; its wait also checks the reply."""
    future = method.future(request, timeout=60)

    def wait() -> None:
        reply = future.result()
        assert check(reply), f"unexpected answer to a well-formed request: {reply!r}"

    return wait, request


def _in_thread(work: Callable[[], Any], what: str) -> Call:
    """A well-formed exchange of several calls, run beside the fuzzing."""
    future = POOL.submit(work)
    return future.result, what


POOL = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="fuzz-good")
GOOD_EPOCHS = itertools.count(1)


# -- well-formed calls mixed in ------------------------------------------------


def _good_generate(env: Env) -> Call:
    def work() -> None:
        assert _generate(env.stack.orchestrator.address) == env.expected

    return _in_thread(work, "a greedy session on the live route")


def _good_segment_cycle(env: Env) -> Call:
    """LoadSegment, CommitEpoch and ReleaseSegment of a middle unit of a deployment of
    this module's own (not one the fuzzer names) on an untrusted worker."""

    def work() -> None:
        worker, epoch = env.workers[2], next(GOOD_EPOCHS)
        units = common_pb2.UnitRange(start=1, end=2)
        load = worker_pb2.LoadSegmentRequest(deployment=GOOD, epoch=epoch, model_dir=env.model, units=units)
        assert worker.LoadSegment(load, timeout=60).param_bytes > 0
        worker.CommitEpoch(worker_pb2.CommitEpochRequest(deployment=GOOD, epoch=epoch), timeout=30)
        release = worker_pb2.ReleaseSegmentRequest(deployment=GOOD, epoch=epoch, units=units)
        assert worker.ReleaseSegment(release, timeout=30).freed_bytes > 0

    return _in_thread(work, f"LoadSegment, CommitEpoch, ReleaseSegment of {GOOD}")


def _good_export(env: Env) -> Call:
    """A live session paused after its first token: its middle hop exports its cache."""

    def work() -> None:
        with Client(env.stack.orchestrator.address) as client:
            exchange = GenerateExchange(env.route, PROMPT, Sampling(max_new_tokens=6), server_loop=False)
            session = client._run(exchange)
            first = next(session)
            hop = env.route.hops[1]
            request = worker_pb2.ExportSessionRequest(
                deployment=LIVE, session_id=exchange.session_id, units=hop.units, epoch=env.route.epoch
            )
            chunks = list(env.by_address[hop.address].ExportSession(request, timeout=30))
            assert chunks and all(c.session_id == exchange.session_id for c in chunks)
            assert [first.token_id, *(t.token_id for t in session)] == env.expected

    return _in_thread(work, "ExportSession of a live session's middle hop")


def _good_deployment(env: Env, then: Callable[[str], None] = lambda name: None) -> Call:
    """Deploy a deployment of this module's own over the three workers, ``then(name)``,
    and undeploy it."""

    def work() -> None:
        name = f"{GOOD}-{next(GOOD_EPOCHS)}"
        plan = env.stack.deploy(name, env.model, spread(env.units, 3))
        assert plan.epoch == 1 and len(plan.segments) == 3
        then(name)
        env.orchestrator.Undeploy(orchestrator_pb2.UndeployRequest(deployment=name), timeout=60)

    return _in_thread(work, "Deploy, then Undeploy, of a deployment of this module's own")


def _apply_two_segments(env: Env, name: str) -> None:
    request = orchestrator_pb2.ApplyPlanRequest(
        deployment=name,
        segments=[
            common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=f"worker-{w}")
            for a, b, w in spread(env.units, 2)
        ],
        reason="fuzz: a well-formed plan",
    )
    assert env.orchestrator.ApplyPlan(request, timeout=60).epoch == 2


def _roll_two_segments(env: Env, name: str) -> None:
    reply = env.broadcaster.Rollout(
        broadcaster_pb2.RolloutRequest(plan=make_plan(name, spread(env.units, 2))), timeout=60
    )
    assert reply.committed.epoch == 2, reply


def _good_report(env: Env) -> Call:
    """A report of a healthy worker; while the fuzzing has used up this host's report
    budget (RESOURCE_EXHAUSTED, as it should be), it is sent again until the budget refills."""

    def work() -> None:
        request = orchestrator_pb2.ReportFailureRequest(node_ids=["worker-1"], reporter="fuzz: well-formed")
        deadline = time.monotonic() + 5
        while True:
            try:
                reply = env.orchestrator.ReportFailure(request, timeout=30)
                break
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        (verdict,) = reply.verdicts
        assert verdict.node_id == "worker-1" and verdict.state == orchestrator_pb2.FailureVerdict.STATE_UP

    return _in_thread(work, "a report of a healthy worker")


def _good_watch(method, request, check: Callable[[Any], bool]) -> Call:
    call = method(request, timeout=30)

    def wait() -> None:
        try:
            assert check(next(call)), "unexpected first message of a well-formed watch"
        finally:
            call.cancel()

    return wait, request


def _solvable(env: Env, count: int) -> splitter_pb2.Problem:
    """The tiny model on ``count`` equal nodes, node n0 trusted, 100 Mbit/s links."""
    problem = splitter_pb2.Problem(model=env.profile)
    for j in range(count):
        problem.nodes.add(
            node_id=f"n{j}", memory_bytes=1 << 30, flops_per_s=1e12, trusted=j == 0, utilization=0.1
        )
    for a in range(count):
        for b in range(count):
            if a != b:
                problem.links.add(src=f"n{a}", dst=f"n{b}", bandwidth_mbps=100.0, rtt_ms=2.0)
    problem.policy.alpha = 1.0
    problem.workload.prompt_tokens, problem.workload.generate_tokens = 16, 4
    return problem


# -- worker ------------------------------------------------------------------


def _open(env: Env, fuzz: Fuzz, hop: int, session: str) -> worker_pb2.OpenSession:
    """A valid open for ``hop`` of the live route, often with one field broken."""
    route, rng = env.route, fuzz.rng
    request = worker_pb2.OpenSession(
        session_id=session,
        deployment=LIVE,
        epoch=route.epoch,
        task=worker_pb2.TASK_GENERATE,
        units=route.hops[hop].units,
        downstream=list(route.hops[hop + 1 :]),
        sampling=worker_pb2.SamplingParams(max_new_tokens=rng.choice([0, 1, 4])),
    )
    broken = rng.randrange(12)
    if broken == 0:
        request.epoch = rng.choice([0, route.epoch + 1, route.epoch - 1, 2**64 - 1])
    elif broken == 1:
        request.units.start, request.units.end = rng.choice([(0, 0), (1, 0), (0, 2**32 - 1), (5, 3)])
    elif broken == 2:
        request.session_id = rng.choice(["", "s" * 10_000, "\x00"])
    elif broken == 3:
        request.sampling.CopyFrom(fuzz.message(worker_pb2.SamplingParams))
    elif broken == 4:
        del request.downstream[:]
        request.downstream.extend(fuzz.message(common_pb2.Route).hops)
    elif broken == 5:
        request.migrate_from.extend(fuzz.message(common_pb2.Route).hops)
        request.migrate_epoch = rng.choice([0, route.epoch - 1, 2**64 - 1])
    elif broken == 6:
        request.start_step, request.generated = rng.choice([(2**64 - 1, 2**32 - 1), (5, 3), (1, 0)])
        request.context_tokens = rng.choice([0, 4, 2**64 - 1])
    elif broken == 7:
        request.task = rng.choice([worker_pb2.TASK_EMBED, worker_pb2.TASK_UNSPECIFIED, 77])
    return request


def _tensor(fuzz: Fuzz, env: Env, hop: int, session: str) -> list[worker_pb2.ForwardRequest]:
    rng = fuzz.rng
    hidden = 64 if rng.random() < 0.8 else rng.choice([1, 63, 65])
    shape = rng.choice(
        [(1, rng.randint(1, 4), hidden), (1, 0, hidden), (2, 1, hidden), (hidden,), (1, 1, 1, hidden)]
    )
    tensor = torch.randn(*shape) if rng.random() < 0.8 else torch.zeros(*shape, dtype=torch.float16)
    if rng.random() < 0.3 and tensor.numel():
        tensor.view(-1)[rng.randrange(tensor.numel())] = rng.choice(
            [float("nan"), float("inf"), -float("inf")]
        )
    units = env.route.hops[hop].units
    chunks = encode(
        tensor,
        session_id=session if rng.random() < 0.8 else rng.choice(["", "other"]),
        step=rng.choice([0, 0, 1, 2**64 - 1]),
        epoch=env.route.epoch if rng.random() < 0.8 else rng.choice([0, env.route.epoch + 1]),
        units=(units.start, units.end) if rng.random() < 0.8 else (0, 2**32 - 1),
        compression=rng.choice([0, 0, 1, 2, 3]),
        chunk_bytes=rng.choice([1024, 1 << 20]),
    )
    broken = rng.randrange(10)
    first = chunks[0]
    if broken == 0:
        chunks[-1].data = chunks[-1].data[: rng.randrange(max(len(chunks[-1].data), 1))]
    elif broken == 1:
        del first.header.shape[:]
        first.header.shape.extend(
            rng.choice([[2**63, 2**63], [2**64 - 1], [1, 2**40, 64], [0, 0, 0], [1] * 64])
        )
    elif broken == 2:
        first.header.total_bytes = rng.choice([0, 2**64 - 1, first.header.total_bytes + 1, 1 << 40])
    elif broken == 3:
        first.header.dtype = rng.choice([*tensor_pb2.DType.values(), 99])
    elif broken == 4:
        chunks[-1].last = False  # the stream moves on before the last chunk
    elif broken == 5:
        first.index = rng.choice([1, 2**32 - 1])
    elif broken == 6:
        first.ClearField("header")
    elif broken == 7:
        first.header.scales = rng.randbytes(rng.choice([0, 3, 7]))
        first.header.attention_mask.extend([rng.choice([0, 1, 2**32 - 1]) for _ in range(rng.randint(0, 9))])
    elif broken == 8 and rng.random() < 0.05:
        first.data = b"\x00" * (5 << 20)  # oversize: far beyond its header's byte count
    return [worker_pb2.ForwardRequest(activation=c) for c in chunks]


def _forward_messages(env: Env, seed: int) -> tuple[int, list[worker_pb2.ForwardRequest]]:
    fuzz = Fuzz(seed)
    rng = fuzz.rng
    hop = rng.randrange(3)
    session = f"fuzz-s-{seed}"
    messages = []
    r = rng.random()
    if r < 0.65:
        messages.append(worker_pb2.ForwardRequest(open=_open(env, fuzz, hop, session)))
    elif r < 0.95:
        messages.append(worker_pb2.ForwardRequest(open=fuzz.message(worker_pb2.OpenSession)))
    step = 0
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        kind = rng.random()
        if kind < 0.45:
            count = rng.choice([1, 1, 3, 5, 0, 5000])
            ids = [
                rng.choice([1, 7, 100, 255, 256, 2**32, 2**64 - 1])
                if rng.random() < 0.1
                else rng.randrange(200)
                for _ in range(count)
            ]
            tokens = worker_pb2.TokenInput(
                step=rng.choice([step, step, step - 1 if step else 0, step + 2, 2**64 - 1]), input_ids=ids
            )
            if rng.random() < 0.2:
                tokens.rows = rng.choice([0, 2, 2**32 - 1])
                tokens.attention_mask.extend(
                    [rng.choice([0, 1, 7]) for _ in range(rng.randint(0, count + 1))]
                )
            messages.append(worker_pb2.ForwardRequest(tokens=tokens))
            step += 1
        elif kind < 0.85:
            messages += _tensor(fuzz, env, hop, session)
        elif kind < 0.95:
            messages.append(fuzz.message(worker_pb2.ForwardRequest))
        else:
            messages.append(worker_pb2.ForwardRequest(close=worker_pb2.CloseSession(session_id=session)))
    return hop, messages


def test_worker_forward(env):
    def start(seed: int):
        hop, messages = _forward_messages(env, seed)
        call = env.by_address[env.route.hops[hop].address].Forward(iter(messages), timeout=20)
        return (lambda: list(call)), messages[:3]

    _fuzz_calls("worker.Forward", start, good=lambda: _good_generate(env))


def _load_request(env: Env, fuzz: Fuzz) -> worker_pb2.LoadSegmentRequest:
    request = fuzz.message(worker_pb2.LoadSegmentRequest)
    request.deployment = fuzz.rng.choice(OWNED)  # never the live one
    if fuzz.rng.random() < 0.03:  # a real model: a small segment, or (mostly) a refusal of its range
        request.model_dir = env.model
        request.epoch = fuzz.rng.choice([0, 1, 2])
        request.units.start, request.units.end = fuzz.rng.choice(
            [(1, 2), (0, 1), (env.units - 1, env.units), (2, 2**32 - 1), (3, 1), (0, env.units + 1)]
        )
    return request


def _worker_unary(env: Env, rpc: str, request_type, **fuzz_args: Any) -> None:
    """A random ``request_type`` message to one of the three workers, chosen by the seed."""

    def request_for(fuzz: Fuzz):
        request = fuzz.message(request_type)
        return getattr(env.workers[fuzz.rng.randrange(3)], rpc), request

    _fuzz_unary(f"worker.{rpc}", request_for, **fuzz_args)


def test_worker_lane(env):
    """Hostile lanes (every session's activations and the ring's replies between workers):
    random rows, now and then with the live deployment's name and epoch. No session waits
    for them here or the key is wrong, so each row is dropped (the call ends OK or with a
    clean status, never UNKNOWN / INTERNAL) and never reaches a session: generation through
    the route goes on meanwhile and stays exact."""

    def start(seed: int):
        fuzz = Fuzz(seed)
        messages = [fuzz.message(worker_pb2.LaneMessage) for _ in range(fuzz.count())]
        for message in messages:
            for row in message.rows:
                if fuzz.rng.random() < 0.3:
                    row.deployment, row.epoch = LIVE, env.route.epoch
        future = env.workers[fuzz.rng.randrange(3)].Lane.future(iter(messages), timeout=10)
        return future.result, messages[:2]

    _fuzz_calls("worker.Lane", start, good=lambda: _good_generate(env))


def test_worker_load_segment(env):
    def request_for(fuzz: Fuzz):
        request = _load_request(env, fuzz)
        return env.workers[fuzz.rng.randrange(3)].LoadSegment, request

    _fuzz_unary("worker.LoadSegment", request_for, good=lambda: _good_segment_cycle(env), owned=True)


def test_worker_commit_epoch(env):
    _worker_unary(
        env, "CommitEpoch", worker_pb2.CommitEpochRequest, good=lambda: _good_segment_cycle(env), owned=True
    )


def test_worker_release_segment(env):
    _worker_unary(
        env,
        "ReleaseSegment",
        worker_pb2.ReleaseSegmentRequest,
        good=lambda: _good_segment_cycle(env),
        owned=True,
    )


def test_worker_export_session(env):
    def start(seed: int):
        fuzz = Fuzz(seed)
        request = fuzz.message(worker_pb2.ExportSessionRequest)
        if fuzz.rng.random() < 0.3:
            request.deployment, request.epoch = LIVE, env.route.epoch
        call = env.workers[fuzz.rng.randrange(3)].ExportSession(request, timeout=10)
        return (lambda: list(call)), request

    _fuzz_calls("worker.ExportSession", start, good=lambda: _good_export(env))


def test_worker_get_status(env):
    live = lambda reply: any(s.deployment == LIVE for s in reply.segments)  # noqa: E731
    good = lambda: _unary_ok(env.workers[0].GetStatus, worker_pb2.GetStatusRequest(), live)  # noqa: E731
    _worker_unary(env, "GetStatus", worker_pb2.GetStatusRequest, good=good)


def test_worker_ping(env):
    def start(seed: int):
        fuzz = Fuzz(seed)
        request = fuzz.message(worker_pb2.PingRequest)
        future = env.workers[fuzz.rng.randrange(3)].Ping.future(request, timeout=10)

        def echoed() -> worker_pb2.PingResponse:
            reply = future.result()
            assert reply.payload == request.payload
            return reply

        return echoed, request

    good = worker_pb2.PingRequest(payload=b"well-formed")
    _fuzz_calls(
        "worker.Ping",
        start,
        good=lambda: _unary_ok(env.workers[1].Ping, good, lambda r: r.payload == good.payload and r.node_id),
    )


def test_worker_probe_bandwidth(env):
    def start(seed: int):
        fuzz = Fuzz(seed)
        chunks = [fuzz.message(worker_pb2.ProbeChunk) for _ in range(fuzz.count())]
        future = env.workers[fuzz.rng.randrange(3)].ProbeBandwidth.future(iter(chunks), timeout=10)
        return future.result, chunks[:2]

    def good() -> Call:
        chunks = [worker_pb2.ProbeChunk(data=b"x" * 1024) for _ in range(4)]
        future = env.workers[2].ProbeBandwidth.future(iter(chunks), timeout=30)
        return (lambda: _check(future.result().bytes == 4096, "probe bytes")), "4 KiB probe"

    _fuzz_calls("worker.ProbeBandwidth", start, good=good)


# -- monitor -----------------------------------------------------------------

FUZZ_NODES = {"node_id": lambda f: f.rng.choice(["", "fuzz-node", "fuzz-node-" + "x" * 300, "fuzz-\x00"])}


def test_monitor_list_nodes(env):
    request = monitor_pb2.ListNodesRequest(include_down=True)
    _fuzz_unary(
        "monitor.ListNodes",
        lambda f: (env.monitor.ListNodes, f.message(monitor_pb2.ListNodesRequest)),
        good=lambda: _unary_ok(
            env.monitor.ListNodes, request, lambda r: "worker-0" in {n.node_id for n in r.nodes}
        ),
    )


def test_monitor_get_environment(env):
    _fuzz_unary(
        "monitor.GetEnvironment",
        lambda f: (env.monitor.GetEnvironment, f.message(monitor_pb2.GetEnvironmentRequest)),
        good=lambda: _unary_ok(env.monitor.GetEnvironment, monitor_pb2.GetEnvironmentRequest(), _has_nodes),
    )


def test_monitor_watch_environment(env):
    _fuzz_watch(
        "monitor.WatchEnvironment",
        env.monitor.WatchEnvironment,
        monitor_pb2.WatchEnvironmentRequest,
        good=lambda: _good_watch(
            env.monitor.WatchEnvironment, monitor_pb2.WatchEnvironmentRequest(), _has_nodes
        ),
    )


def test_monitor_report_metrics(env):
    # Only made-up node ids: the stack's real nodes' metrics stay as they are.
    _fuzz_unary(
        "monitor.ReportMetrics",
        lambda f: (env.monitor.ReportMetrics, f.message(common_pb2.NodeMetrics)),
        good=lambda: _unary_ok(
            env.monitor.ReportMetrics,
            common_pb2.NodeMetrics(node_id="fuzz-node", timestamp=time.time(), cpu_utilization=0.5),
        ),
        values=FUZZ_NODES,
    )


def test_monitor_report_latency(env):
    _fuzz_unary(
        "monitor.ReportLatency",
        lambda f: (env.monitor.ReportLatency, f.message(monitor_pb2.LatencySample)),
        good=lambda: _unary_ok(
            env.monitor.ReportLatency,
            monitor_pb2.LatencySample(deployment=GOOD, latency_ms=12.5, tokens=4, timestamp=time.time()),
        ),
        owned=True,
    )


# -- splitter ----------------------------------------------------------------


def _valid_problem(env: Env, fuzz: Fuzz) -> splitter_pb2.Problem:
    """A small solvable problem (the tiny model on 2-3 nodes), then one to three of its
    fields made hostile: the solver itself gets to see them, not only the validation."""
    rng = fuzz.rng
    count = rng.choice([2, 3])
    problem = _solvable(env, count)
    targets = [problem.workload, problem.policy, problem.nodes[rng.randrange(count)], problem.links[0]]
    targets += [problem.model.units[rng.randrange(len(problem.model.units))]]
    for _ in range(rng.randint(1, 3)):
        target = rng.choice(targets)
        field = rng.choice(target.DESCRIPTOR.fields)
        scalar = field.type != field.TYPE_MESSAGE and not _repeated(field)
        if scalar and field.name not in ("node_id", "src", "dst"):
            setattr(target, field.name, fuzz.value(field, 0))
    if rng.random() < 0.2:
        problem.current.CopyFrom(fuzz.message(common_pb2.Plan))
    return problem


def test_splitter_solve(env):
    def request_for(fuzz: Fuzz):
        request = fuzz.message(splitter_pb2.SolveRequest)
        if fuzz.rng.random() < 0.4:
            request.problem.CopyFrom(_valid_problem(env, fuzz))
        return env.splitter.Solve, request

    def good() -> Call:
        request = splitter_pb2.SolveRequest(problem=_solvable(env, 3), mode=splitter_pb2.SOLVE_MODE_RESPLIT)
        return _unary_ok(env.splitter.Solve, request, lambda r: len(r.plan.segments) >= 1)

    _fuzz_unary("splitter.Solve", request_for, good=good)


def test_splitter_profile_model(env):
    request = splitter_pb2.ProfileModelRequest(model_dir=env.model)
    _fuzz_unary(
        "splitter.ProfileModel",
        lambda fuzz: (env.splitter.ProfileModel, _profile_request(env, fuzz)),
        good=lambda: _unary_ok(env.splitter.ProfileModel, request, lambda r: len(r.units) == env.units),
    )


def _profile_request(env: Env, fuzz: Fuzz) -> splitter_pb2.ProfileModelRequest:
    request = fuzz.message(splitter_pb2.ProfileModelRequest)
    if fuzz.rng.random() < 0.05:
        request.model_dir = env.model
    elif fuzz.rng.random() < 0.3:
        request.config_json = fuzz.rng.choice(
            [
                "{",
                "[]",
                "null",
                '{"model_type": "llama"}',
                '{"model_type": "llama", "num_hidden_layers": -1, "hidden_size": 0}',
                '{"model_type": "llama", "num_hidden_layers": 100000000, "hidden_size": 4096,'
                ' "vocab_size": 1e30}',
                '{"model_type": "gpt2", "n_layer": "x"}',
                '{"model_type": "bert", "num_hidden_layers": 2, "hidden_size": NaN}',
                "x" * 100_000,
            ]
        )
    return request


# -- orchestrator ------------------------------------------------------------


def _orchestrator_unary(env: Env, rpc: str, request_type, good: Callable[[], Call], **fuzz_args: Any) -> None:
    method = getattr(env.orchestrator, rpc)
    _fuzz_unary(f"orchestrator.{rpc}", lambda f: (method, f.message(request_type)), good=good, **fuzz_args)


def test_orchestrator_deploy(env):
    _orchestrator_unary(
        env, "Deploy", orchestrator_pb2.DeployRequest, good=lambda: _good_deployment(env), owned=True
    )


def test_orchestrator_undeploy(env):
    _orchestrator_unary(
        env, "Undeploy", orchestrator_pb2.UndeployRequest, good=lambda: _good_deployment(env), owned=True
    )


def test_orchestrator_list_deployments(env):
    listed = lambda r: LIVE in {d.name for d in r.deployments}  # noqa: E731
    request = orchestrator_pb2.ListDeploymentsRequest()
    good = lambda: _unary_ok(env.orchestrator.ListDeployments, request, listed)  # noqa: E731
    _orchestrator_unary(env, "ListDeployments", orchestrator_pb2.ListDeploymentsRequest, good=good)


def test_orchestrator_get_route(env):
    request = orchestrator_pb2.GetRouteRequest(deployment=LIVE)
    good = lambda: _unary_ok(env.orchestrator.GetRoute, request, lambda r: r == env.route)  # noqa: E731
    _orchestrator_unary(env, "GetRoute", orchestrator_pb2.GetRouteRequest, good=good)


def test_orchestrator_watch_route(env):
    request = orchestrator_pb2.WatchRouteRequest(deployment=LIVE)
    _fuzz_watch(
        "orchestrator.WatchRoute",
        env.orchestrator.WatchRoute,
        orchestrator_pb2.WatchRouteRequest,
        good=lambda: _good_watch(env.orchestrator.WatchRoute, request, lambda r: r == env.route),
    )


def test_orchestrator_get_plan(env):
    request = orchestrator_pb2.GetPlanRequest(deployment=LIVE)
    same = lambda r: r.epoch == env.route.epoch and len(r.segments) == 3  # noqa: E731
    good = lambda: _unary_ok(env.orchestrator.GetPlan, request, same)  # noqa: E731
    _orchestrator_unary(env, "GetPlan", orchestrator_pb2.GetPlanRequest, good=good)


def test_orchestrator_apply_plan(env):
    good = lambda: _good_deployment(env, then=lambda name: _apply_two_segments(env, name))  # noqa: E731
    _orchestrator_unary(env, "ApplyPlan", orchestrator_pb2.ApplyPlanRequest, good=good, owned=True)


def _swap_one_block(env: Env, name: str) -> None:
    """Block 1 from the same checkpoint under another path (a link): a real swap, same weights."""
    link = Path(env.model).parent / "llama-swap-link"
    if not link.exists():
        link.symlink_to(env.model, target_is_directory=True)
    request = orchestrator_pb2.SwapLayersRequest(
        deployment=name,
        units=[common_pb2.UnitRange(start=1, end=2)],
        source_dir=str(link),
        requested_by="fuzz",
    )
    reply = env.orchestrator.SwapLayers(request, timeout=60)
    assert list(reply.units) == [1] and reply.plan.epoch == 2, reply


def test_orchestrator_swap_layers(env):
    def request_for(fuzz: Fuzz):
        request = fuzz.message(orchestrator_pb2.SwapLayersRequest)
        if fuzz.rng.random() < 0.05:  # a real checkpoint: the checks behind the path's
            request.source_dir = env.model
        return env.orchestrator.SwapLayers, request

    good = lambda: _good_deployment(env, then=lambda name: _swap_one_block(env, name))  # noqa: E731
    _fuzz_unary("orchestrator.SwapLayers", request_for, good=good, owned=True)


def test_orchestrator_list_events(env):
    request = orchestrator_pb2.ListEventsRequest(deployment=LIVE)
    good = lambda: _unary_ok(env.orchestrator.ListEvents, request)  # noqa: E731
    _orchestrator_unary(env, "ListEvents", orchestrator_pb2.ListEventsRequest, good=good)


def test_orchestrator_report_failure(env):
    """Made-up nodes, and now and then the stack's real (healthy) workers: a false report
    is checked and changes nothing (the final test sees the same workers serving)."""

    def request_for(fuzz: Fuzz):
        request = fuzz.message(orchestrator_pb2.ReportFailureRequest)
        if fuzz.rng.random() < 0.1:
            request.node_ids[:] = [f"worker-{fuzz.rng.randrange(3)}"]
        return env.orchestrator.ReportFailure, request

    _fuzz_unary("orchestrator.ReportFailure", request_for, good=lambda: _good_report(env))


# -- broadcaster -------------------------------------------------------------


def test_broadcaster_rollout(env):
    def request_for(fuzz: Fuzz):
        request = fuzz.message(broadcaster_pb2.RolloutRequest)
        # Prepare and drain deadlines are what a rollout waits; keep them short.
        request.prepare_deadline_s = (
            min(request.prepare_deadline_s, 2.0) if request.prepare_deadline_s > 0 else 0.0
        )
        request.drain_deadline_s = min(request.drain_deadline_s, 0.5) if request.drain_deadline_s > 0 else 0.0
        return env.broadcaster.Rollout, request

    good = lambda: _good_deployment(env, then=lambda name: _roll_two_segments(env, name))  # noqa: E731
    _fuzz_unary("broadcaster.Rollout", request_for, good=good, owned=True)


def test_broadcaster_release(env):
    _fuzz_unary(
        "broadcaster.Release",
        lambda f: (env.broadcaster.Release, f.message(broadcaster_pb2.ReleaseRequest)),
        good=lambda: _good_deployment(env),  # its Undeploy releases through the broadcaster
        owned=True,
    )


def test_broadcaster_get_rollout(env):
    _fuzz_unary(
        "broadcaster.GetRollout",
        lambda f: (env.broadcaster.GetRollout, f.message(broadcaster_pb2.GetRolloutRequest)),
        good=lambda: _unary_ok(
            env.broadcaster.GetRollout,
            broadcaster_pb2.GetRolloutRequest(deployment=LIVE),
            lambda r: r.deployment == LIVE,
        ),
    )


# -- afterwards --------------------------------------------------------------


def _alive_and_serving(env: Env) -> None:
    for proc in (env.monitor_proc, env.splitter_proc, *env.stack.control(), *env.stack.worker_procs):
        assert proc.proc.poll() is None, f"{proc.name} died: {''.join(tap(proc).lines[-30:])}"
        assert proc.health() == "SERVING", proc.name


@pytest.fixture(autouse=True)
def _survived_each_rpc(request):
    """After every fuzzed RPC, whatever order they run in (or alone): every process alive
    and serving, and the live deployment still generates exactly its tokens."""
    yield
    if "env" in request.fixturenames:
        env = request.getfixturevalue("env")
        _alive_and_serving(env)
        assert _generate(env.stack.orchestrator.address) == env.expected


def test_everything_survived_and_still_serves_exactly(env):
    elapsed = time.perf_counter() - env.started
    summary = "\n".join(
        f"{rpc:32s} {TIMES[rpc]:6.1f} s  {dict(codes)}" for rpc, codes in sorted(CODES.items())
    )
    print(f"\nfuzzing took {elapsed:.1f} s\n{summary}")
    _alive_and_serving(env)
    env.release_owned()
    # Sessions close when their stream ends; give the workers a moment to notice.
    deadline = time.monotonic() + 10
    while env.status() != env.baseline and time.monotonic() < deadline:
        time.sleep(0.2)
    assert env.status() == env.baseline
    for pid, before in env.rss.items():
        after = _rss_kib(pid)
        assert after < before * 1.5 + 200_000, f"worker {pid}: RSS {before} KiB -> {after} KiB"
    assert _generate(env.stack.orchestrator.address) == env.expected
