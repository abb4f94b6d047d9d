"""Many sessions at once, each exactly right; limits refuse clearly and free memory."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import torch
from support import LocalStack, batch_rows, greedy, lane_rows, make_plan, spread, wait_for, worker_sessions
from transformers import AutoModelForCausalLM, AutoTokenizer

from resplit.models import Checkpoint, num_units
from resplit.rpc.channels import sync_channel
from resplit.sdk import AsyncClient, Client, Sampling
from resplit.sdk.exchange import GenerateExchange
from resplit.v1 import worker_pb2, worker_pb2_grpc

pytestmark = pytest.mark.integration


def _greedy(model_dir, prompt: list[int], new_tokens: int) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and each step's raw logits [new_tokens, vocab] of the whole model."""
    return greedy(model_dir, prompt, new_tokens)


def _reference(model_dir, prompt: list[int], new_tokens: int) -> list[int]:
    return _greedy(model_dir, prompt, new_tokens)[0]


def _text_reference(model_dir, text: str, new_tokens: int) -> list[int]:
    """``text`` through the model's tokenizer and the whole model (transformers), stopping
    at EOS as the SDK does by default."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    whole = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = tokenizer(text, return_tensors="pt")["input_ids"]
    out = whole.generate(
        prompt,
        max_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id or 0,
    )
    return out[0, prompt.shape[1] :].tolist()


def _all_closed(procs) -> None:
    """Every worker drops its sessions once the clients are done. Closing travels hop by
    hop after the client's stream ends, so it lands a moment after the last token."""
    wait_for(lambda: all(worker_sessions(p) == 0 for p in procs), timeout=5, what="every session closed")


def _counted(procs, counter: str, label: str, values: tuple[str, ...]) -> dict[str, float]:
    """A labelled counter of every worker, summed, by label value (0 where not yet counted)."""
    totals = dict.fromkeys(values, 0.0)
    for proc in procs:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                for value in totals:
                    if line.startswith(f'{counter}{{{label}="{value}"}}'):
                        totals[value] += float(line.rsplit(" ", 1)[1])
    return totals


def _gauge(proc, name: str) -> float:
    """One worker's unlabelled gauge ``name``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in the worker's metrics")


def _steps(procs) -> dict[str, float]:
    """resplit_worker_steps_total by the thread that ran the step."""
    return _counted(procs, "resplit_worker_steps_total", "thread", ("loop", "compute"))


def _tokens_returned(procs) -> dict[str, float]:
    """resplit_worker_tokens_returned_total by the link the head hop returned the token on."""
    return _counted(procs, "resplit_worker_tokens_returned_total", "link", ("local", "network"))


def test_a_lone_sessions_steps_run_on_the_event_loop_and_concurrent_ones_on_the_compute_thread(
    stack, tiny_models
):
    """--inline-decode (on by default; these workers decode with one thread): a worker serving
    one session runs its steps on the event loop; with eight sessions at once, every step that
    finds another session open goes to the compute thread. Both give the whole model's tokens."""
    model_dir = tiny_models["llama"]
    stack.deploy("inline", model_dir, spread(num_units(Checkpoint(model_dir).config), 3))
    prompt = [10, 20, 30, 40, 50]  # 5 tokens: a prefill this short is memory-bound too
    expected = _reference(model_dir, prompt, 8)
    together = threading.Barrier(8)

    def run(sessions: int) -> list[int]:
        with Client(stack.orchestrator.address) as client:
            route = client.route("inline")
            if sessions > 1:
                together.wait(30)  # every session opens at once, so they overlap
            return [t.token_id for t in client.generate_ids(prompt, route, Sampling(max_new_tokens=8))]

    _all_closed(stack.worker_procs)
    before = _steps(stack.worker_procs)
    assert run(1) == expected
    lone = _steps(stack.worker_procs)
    # 8 steps (the prompt, then 7 decode steps) on each of 3 hops, all on the loop.
    assert (lone["loop"] - before["loop"], lone["compute"] - before["compute"]) == (24, 0)
    _all_closed(stack.worker_procs)
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(run, [8] * 8)) == [expected] * 8
    crowded = _steps(stack.worker_procs)
    assert crowded["loop"] + crowded["compute"] - lone["loop"] - lone["compute"] == 8 * 24
    assert crowded["compute"] - lone["compute"] > 0, crowded
    _all_closed(stack.worker_procs)


def test_the_head_hop_returns_each_token_straight_to_the_first_hop(stack, tiny_models):
    """The ring: the paper's placement (S1 and S3 on worker-0, S2 on worker-2) hands each
    token to the first hop inside worker-0; over four workers (head on worker-1) each token
    crosses the lane from worker-1 to worker-0, never the middle hops. Either way
    the client sees the whole model's tokens, each once, and every stream is closed after."""
    model_dir = tiny_models["llama"]
    units = num_units(Checkpoint(model_dir).config)
    stack.deploy("ring-paper", model_dir, spread(units, 3))
    stack.deploy("ring-four", model_dir, spread(units, 4))
    prompt = [10, 20, 30, 40, 50]
    expected = _reference(model_dir, prompt, 12)
    with Client(stack.orchestrator.address) as client:
        for deployment, local, network in (("ring-paper", 12, 0), ("ring-four", 0, 12)):
            for server_loop in (True, False):
                client.server_loop = server_loop
                _all_closed(stack.worker_procs)
                before = _tokens_returned(stack.worker_procs)
                route = client.route(deployment)
                got = [t.token_id for t in client.generate_ids(prompt, route, Sampling(max_new_tokens=12))]
                assert got == expected, (deployment, server_loop)
                _all_closed(stack.worker_procs)
                after = _tokens_returned(stack.worker_procs)
                returned = (after["local"] - before["local"], after["network"] - before["network"])
                assert returned == (local, network), (deployment, server_loop)


@pytest.mark.parametrize(
    ("family", "pieces"), [("llama", 3), ("qwen2-sliding", 2), ("qwen3", 1), ("mistral", 3), ("gpt2", 2)]
)
def test_sixteen_sessions_joining_and_leaving_decode_in_batches_each_exactly_right(
    stack, tiny_models, family, pieces
):
    """16 sessions of different prompt lengths and lengths of generation, started at
    different times, through a split: the workers run their steps as batched forwards
    where the family batches (more rows than forwards), every greedy session's tokens are
    the whole model's for its own prompt and its logits within 1e-4 of them (fp32), and
    the seeded sampling sessions among them draw the tokens they draw alone."""
    model_dir = tiny_models[family]
    name = f"batched-{family}-{pieces}"
    stack.deploy(name, model_dir, spread(num_units(Checkpoint(model_dir).config), pieces))
    generator = torch.Generator().manual_seed(5)
    prompts = [torch.randint(4, 300, (2 + i % 7,), generator=generator).tolist() for i in range(16)]
    lengths = [8 + (5 * i) % 17 for i in range(16)]
    seeded = {3: 11, 10: 12}  # session -> its sampling seed; the others are greedy

    def sampling(i: int) -> Sampling:
        if i in seeded:
            return Sampling(max_new_tokens=lengths[i], temperature=1.3, top_k=40, seed=seeded[i])
        return Sampling(max_new_tokens=lengths[i])

    logits: dict[int, torch.Tensor] = {}

    def run(i: int) -> list[int]:
        time.sleep(0.02 * (i % 5))  # joins at different times
        with Client(stack.orchestrator.address) as client:
            route = client.route(name)
            tokens = list(client.generate_ids(prompts[i], route, sampling(i), return_logits=i not in seeded))
        if i not in seeded:
            logits[i] = torch.stack([t.logits for t in tokens])
        return [t.token_id for t in tokens]

    references = {i: greedy(model_dir, prompts[i], lengths[i]) for i in range(16) if i not in seeded}
    expected = [run(i) if i in seeded else references[i][0] for i in range(16)]  # seeded: alone first
    _all_closed(stack.worker_procs)
    rows_before, forwards_before = batch_rows(stack.worker_procs)
    lane_before = lane_rows(stack.worker_procs)
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(run, range(16)))
    assert got == expected
    worst = max((logits[i] - references[i][1]).abs().max().item() for i in references)
    assert worst <= 1e-4, worst
    rows, forwards = batch_rows(stack.worker_procs)
    if family not in ("gpt2", "mistral", "qwen2-sliding"):  # these step row by row (no lean step)
        assert rows - rows_before > forwards - forwards_before > 0, (rows, forwards)
    if pieces > 1:  # a batch's rows leave for the next worker together: fewer messages than rows
        sent_rows, messages = (
            after - before for after, before in zip(lane_rows(stack.worker_procs), lane_before, strict=True)
        )
        assert sent_rows > messages > 0, (sent_rows, messages)
    _all_closed(stack.worker_procs)


def test_eight_concurrent_sessions_each_exactly_right(stack, tiny_models):
    model_dir = tiny_models["qwen2"]
    stack.deploy("concurrent", model_dir, spread(num_units(Checkpoint(model_dir).config), 3))
    prompts = [[10 + i, 20 + 3 * i, 30, 40 + i, 7 * (i + 1)] for i in range(8)]
    expected = [_reference(model_dir, p, 24) for p in prompts]

    def run(prompt: list[int]) -> list[int]:
        with Client(stack.orchestrator.address) as client:
            route = client.route("concurrent")
            return [t.token_id for t in client.generate_ids(prompt, route, Sampling(max_new_tokens=24))]

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(run, prompts))
    assert got == expected
    _all_closed(stack.worker_procs)


def test_async_client_streams_the_same_tokens(stack, tiny_models):
    model_dir = tiny_models["gpt2"]
    stack.deploy("async-gpt2", model_dir, spread(num_units(Checkpoint(model_dir).config), 2))
    prompt = [11, 12, 13, 14]
    expected = _reference(model_dir, prompt, 16)

    async def go() -> list[list[int]]:
        async with AsyncClient(stack.orchestrator.address) as client:
            route = await client.route("async-gpt2")

            async def one() -> list[int]:
                return [
                    t.token_id async for t in client.generate_ids(prompt, route, Sampling(max_new_tokens=16))
                ]

            return await asyncio.gather(one(), one(), one())

    assert asyncio.run(go()) == [expected] * 3


def test_text_generation_with_the_models_tokenizer(stack, tiny_models):
    model_dir = tiny_models["llama"]
    stack.deploy("text-llama", model_dir, spread(num_units(Checkpoint(model_dir).config), 3))
    with Client(stack.orchestrator.address) as client:
        tokens = list(client.generate("The edge node keeps", deployment="text-llama", max_new_tokens=12))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = [t.token_id for t in tokens]
    assert "".join(t.text for t in tokens) == tokenizer.decode(ids, skip_special_tokens=True)
    assert 1 <= len(tokens) <= 12
    assert all(t.latency_s > 0 for t in tokens)
    assert ids == _text_reference(model_dir, "The edge node keeps", 12)


def test_seeded_sampling_is_reproducible_and_differs_across_seeds(stack, tiny_models):
    model_dir = tiny_models["mistral"]
    stack.deploy("sampled", model_dir, spread(num_units(Checkpoint(model_dir).config), 2))
    with Client(stack.orchestrator.address) as client:
        route = client.route("sampled")

        def draw(seed: int) -> list[int]:
            sampling = Sampling(max_new_tokens=16, temperature=1.5, top_k=50, top_p=0.95, seed=seed)
            return [t.token_id for t in client.generate_ids([5, 6, 7], route, sampling)]

        first, again, other = draw(1), draw(1), draw(2)
    assert first == again
    assert first != other


def test_stop_token_ends_the_generation(stack, tiny_models):
    model_dir = tiny_models["llama"]
    stack.deploy("stops", model_dir, spread(num_units(Checkpoint(model_dir).config), 2))
    with Client(stack.orchestrator.address) as client:
        route = client.route("stops")
        free = [t.token_id for t in client.generate_ids([5, 6, 7], route, Sampling(max_new_tokens=10))]
        stop_at = free[3]
        stopped = list(
            client.generate_ids([5, 6, 7], route, Sampling(max_new_tokens=10, stop_token_ids=[stop_at]))
        )
    assert [t.token_id for t in stopped] == free[: free.index(stop_at) + 1]
    assert stopped[-1].finished and stopped[-1].finish_reason == "stop_token"


def _stack_with(name: str, workers: int, args: list[str], model_dir) -> Iterator[LocalStack]:
    """A stack whose workers run with ``args``, ``model_dir`` deployed as ``name`` over them."""
    local = LocalStack(workers=workers, worker_args=args)
    try:
        local.start()
        local.deploy(name, model_dir, spread(num_units(Checkpoint(model_dir).config), workers))
        local.deployed_model = model_dir  # type: ignore[attr-defined]
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def limited(tiny_models):
    args = ["--torch-threads", "1", "--max-sessions", "2", "--max-tokens", "20", "--idle-timeout-s", "1"]
    args += ["--chunk-bytes", "1024"]  # every prefill activation and logits tensor goes in several chunks
    yield from _stack_with("limited", 2, args, tiny_models["llama"])


def test_session_limit_answers_resource_exhausted_with_a_hint_the_sdk_retries_within_its_deadline(limited):
    """A full worker refuses a session RESOURCE_EXHAUSTED with a retry hint: the SDK retries
    it until its deadline (an impatient client then fails with the refusal); a patient one
    gets in once a held session ends, with the whole model's tokens."""
    expected = _reference(limited.deployed_model, [5, 6], 2)  # type: ignore[attr-defined]
    with (
        Client(limited.orchestrator.address) as client,
        Client(limited.orchestrator.address, timeout_s=1.0) as impatient,
    ):
        route = client.route("limited")
        held = [client._run(GenerateExchange(route, [5, 6], Sampling(max_new_tokens=5))) for _ in range(2)]
        for session in held:
            next(session)
        with pytest.raises(grpc.RpcError) as info:
            list(impatient.generate_ids([5, 6], route, Sampling(max_new_tokens=2)))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit 2" in info.value.details() and "retry after 100 ms" in info.value.details()
        assert "its deadline (timeout_s=1) passed" in info.value.details()
        with ThreadPoolExecutor(1) as pool:
            patient = pool.submit(
                lambda: [t.token_id for t in client.generate_ids([5, 6], route, Sampling(2))]
            )
            time.sleep(0.5)  # it is being refused meanwhile
            for session in held:
                assert len(list(session)) == 4  # the held sessions finish untouched
            assert patient.result(timeout=60) == expected
    _all_closed(limited.worker_procs)


def test_a_full_worker_refuses_a_new_session_before_its_stream_handler_runs(limited):
    """A Forward stream that names a new session in its metadata is refused
    RESOURCE_EXHAUSTED with the hint without its handler looking at it (bench/overload.py:
    a refusal in the handler cost a task and a segment lookup on the cores the admitted
    sessions compute on). Its open names a deployment nobody hosts: the handler would have
    answered NOT_FOUND."""
    with Client(limited.orchestrator.address) as client:
        route = client.route("limited")
        held = [client._run(GenerateExchange(route, [5, 6], Sampling(max_new_tokens=5))) for _ in range(2)]
        for session in held:
            next(session)
        never = threading.Event()

        def requests():
            yield worker_pb2.ForwardRequest(open=worker_pb2.OpenSession(session_id="new", deployment="nope"))
            never.wait(10)

        with sync_channel(route.hops[0].address) as channel:
            call = worker_pb2_grpc.WorkerServiceStub(channel).Forward(
                requests(), timeout=10, metadata=(("resplit-session", "new"),)
            )
            with pytest.raises(grpc.RpcError) as info:
                next(iter(call))
            never.set()
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
        assert "limit 2" in info.value.details()
        assert ("retry-after-ms", "100") in tuple(info.value.trailing_metadata())
        for session in held:
            assert len(list(session)) == 4  # the held sessions finish untouched
    _all_closed(limited.worker_procs)


def test_a_burst_of_refused_sessions_each_gets_its_refusal_not_a_broken_stream(limited):
    """200 sessions opened at once at a full worker, as the SDK opens them (the open
    message and the first step written back to back): every one is refused
    RESOURCE_EXHAUSTED. A refusal sent while the second message was still being written
    reached the caller as a broken stream (INTERNAL, "Internal error from Core"), which
    the SDK treats as a lost hop: at 4x capacity (bench/overload.py) those recoveries
    took served throughput down to 0.16-0.31 of the maximum. ``recoveries=0`` shows a
    broken stream as such instead of recovering from it."""
    with Client(limited.orchestrator.address) as client:
        route = client.route("limited")
        held = [client._run(GenerateExchange(route, [5, 6], Sampling(max_new_tokens=5))) for _ in range(2)]
        for session in held:
            next(session)

        async def burst() -> list[tuple[str, str]]:
            address = limited.orchestrator.address
            async with AsyncClient(address, retry_overload=False, recoveries=0) as opener:

                async def one() -> tuple[str, str]:
                    try:
                        async for _ in opener.generate_ids([5, 6], route, Sampling(max_new_tokens=2)):
                            pass
                    except grpc.RpcError as exc:
                        return exc.code().name, exc.details()
                    return "served", ""

                return await asyncio.gather(*(one() for _ in range(200)))

        outcomes = asyncio.run(burst())
        others = [o for o in outcomes if o[0] != "RESOURCE_EXHAUSTED"]
        assert not others, f"{len(others)} of 200 not refused cleanly, e.g. {others[:3]}"
        for session in held:
            assert len(list(session)) == 4  # the held sessions finish untouched
    _all_closed(limited.worker_procs)


@pytest.fixture(scope="module")
def waiting(tiny_models):
    """One worker with one slot and a waiting room of one that waits long enough for any
    machine: what the room does, not how fast."""
    args = ["--torch-threads", "1", "--max-sessions", "1", "--max-waiting-sessions", "1"]
    args += ["--admission-wait-ms", "30000"]
    yield from _stack_with("waiting", 1, args, tiny_models["llama"])


def test_a_new_session_at_a_full_worker_waits_for_a_slot_and_one_over_the_room_is_refused(waiting):
    """A session arriving while the only slot is taken waits in the room (not refused), and
    starts once the slot frees, with the whole model's tokens; the next one finds the room
    full and is refused at once, RESOURCE_EXHAUSTED with the hint. Counted by outcome."""
    expected = _reference(waiting.deployed_model, [5, 6], 3)  # type: ignore[attr-defined]
    admissions = ("admitted", "waited", "refused", "refused_after_wait")
    before = _counted(waiting.worker_procs, "resplit_worker_admissions_total", "outcome", admissions)
    with Client(waiting.orchestrator.address) as client:
        route = client.route("waiting")
        held = client._run(GenerateExchange(route, [5, 6], Sampling(max_new_tokens=5)))
        next(held)

        async def waiter() -> list[int]:
            async with AsyncClient(waiting.orchestrator.address, retry_overload=False) as opener:
                return [t.token_id async for t in opener.generate_ids([5, 6], route, Sampling(3))]

        async def late() -> grpc.RpcError:
            async with AsyncClient(waiting.orchestrator.address, retry_overload=False) as opener:
                with pytest.raises(grpc.RpcError) as info:
                    async for _ in opener.generate_ids([5, 6], route, Sampling(3)):
                        pass
                return info.value

        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(asyncio.run, waiter())
            wait_for(lambda: _gauge(waiting.worker_procs[0], "resplit_worker_sessions_waiting") == 1, 30,
                     what="the new session waiting in the room")  # fmt: skip
            time.sleep(0.3)
            assert not first.done(), "the waiting session was answered while the slot was taken"
            refused = asyncio.run(late())
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.details()
            assert "limit 1" in refused.details() and "waited" not in refused.details()
            assert not first.done()
            assert len(list(held)) == 4  # the held session finishes untouched, freeing the slot
            assert first.result(timeout=60) == expected
    after = _counted(waiting.worker_procs, "resplit_worker_admissions_total", "outcome", admissions)
    assert {k: after[k] - before[k] for k in admissions} == {
        "admitted": 0,  # the blocking Client names no session: its handler admits it
        "waited": 1,
        "refused": 1,
        "refused_after_wait": 0,
    }
    _all_closed(waiting.worker_procs)


def test_sessions_at_the_session_limit_move_to_a_new_split_on_the_same_workers(limited):
    """Both workers hold their limit of 2 sessions when the plan re-splits over the same
    workers: each session opens its next epoch's segment beside its old one (counted once,
    as the session it is), moves its cache and finishes with the tokens it would have."""
    model_dir = limited.deployed_model  # type: ignore[attr-defined]
    units = num_units(Checkpoint(model_dir).config)
    expected = _reference(model_dir, [5, 6], 5)
    with Client(limited.orchestrator.address) as client:
        client.server_loop = False  # each step waits for the client: the sessions are mid-way
        route = client.route("limited")
        held = [client._run(client._generate_exchange([5, 6], route, Sampling(5), False)) for _ in range(2)]
        firsts = [next(session).token_id for session in held]
        cut = route.hops[0].units.end
        moved = limited.rollout(make_plan("limited", [(0, cut + 1, 0), (cut + 1, units, 1)]))
        assert moved.committed.epoch > route.epoch
        got = [[first] + [t.token_id for t in session] for first, session in zip(firsts, held, strict=True)]
    assert got == [expected, expected]
    _all_closed(limited.worker_procs)


def test_token_limit_answers_resource_exhausted_and_frees_the_session(limited):
    with Client(limited.orchestrator.address) as client:
        route = client.route("limited")
        got = []
        with pytest.raises(grpc.RpcError) as info:
            for token in client.generate_ids(list(range(5, 17)), route, Sampling(max_new_tokens=30)):
                got.append(token)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit of 20" in info.value.details()
    assert len(got) == 20 - 12 + 1  # 12 prompt tokens + 8 decoded reach 20; the 9th step is refused
    time.sleep(0.2)
    _all_closed(limited.worker_procs)


def test_idle_session_answers_deadline_exceeded_and_frees_the_session(limited):
    with Client(limited.orchestrator.address) as client:
        route = client.route("limited")
        session = client._run(GenerateExchange(route, [5, 6], Sampling(max_new_tokens=5), server_loop=False))
        next(session)
        time.sleep(1.6)
        with pytest.raises(grpc.RpcError) as info:
            list(session)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "memory freed" in info.value.details()
    _all_closed(limited.worker_procs)


def test_chunked_activations_and_logits_are_exact(limited, tiny_models):
    prompt = list(range(5, 17))  # 12 tokens x 64 x 4 bytes = 3 KiB per activation: 3 chunks
    expected, expected_logits = _greedy(tiny_models["llama"], prompt, 8)
    with Client(limited.orchestrator.address) as client:
        route = client.route("limited")
        tokens = list(client.generate_ids(prompt, route, Sampling(max_new_tokens=8), return_logits=True))
    assert [t.token_id for t in tokens] == expected
    assert tokens[0].logits.shape == (320,)  # 1280 bytes of logits: 2 chunks
    # The token is chosen on the head worker before its logits are chunked for the client:
    # only the values show that the chunks were put back together in order.
    got = torch.stack([t.logits for t in tokens])
    assert (got - expected_logits).abs().max().item() <= 1e-5


def test_async_client_generate_and_embed_by_deployment_name(stack, tiny_models):
    stack.deploy("async-text", tiny_models["llama"], spread(6, 2))
    stack.deploy("async-bert", tiny_models["bert"], spread(6, 2))

    async def go():
        async with AsyncClient(stack.orchestrator.address) as client:
            tokens = [t async for t in client.generate("The edge", deployment="async-text", max_new_tokens=6)]
            vectors = await client.embed(["hello edge", "hello cloud"], deployment="async-bert")
            with pytest.raises(LookupError, match="'nope' is not deployed"):
                await client.deployment("nope")
            return tokens, vectors

    tokens, vectors = asyncio.run(go())
    with Client(stack.orchestrator.address) as client:
        expected = [
            t.token_id for t in client.generate("The edge", deployment="async-text", max_new_tokens=6)
        ]
        expected_vectors = client.embed(["hello edge", "hello cloud"], deployment="async-bert")
    assert [t.token_id for t in tokens] == expected == _text_reference(tiny_models["llama"], "The edge", 6)
    assert torch.equal(vectors, expected_vectors)
    assert torch.allclose(vectors.norm(dim=1), torch.ones(2), atol=1e-5)


def test_a_kv_budget_admits_the_sessions_that_fit_refuses_the_next_and_frees_room_as_they_end(tiny_models):
    """--kv-budget-tokens 100 on the one worker: two sessions of a 10-token prompt and up to 40
    new tokens reserve 50 each; a third is refused with RESOURCE_EXHAUSTED naming the budget
    while the two go on, each exactly the whole model's tokens; once they end, it fits."""
    model_dir = tiny_models["llama"]
    local = LocalStack(workers=1, worker_args=["--torch-threads", "1", "--kv-budget-tokens", "100"])
    try:
        local.start()
        local.deploy("budget", model_dir, spread(num_units(Checkpoint(model_dir).config), 1))
        prompt = list(range(10, 20))
        expected = _reference(model_dir, prompt, 40)
        with Client(local.orchestrator.address, server_loop=False) as client:
            route = client.route("budget")
            first, second = (
                iter(client.generate_ids(prompt, route, Sampling(max_new_tokens=40))) for _ in "ab"
            )
            got = [[next(first).token_id], [next(second).token_id]]  # both hold their room now
            client.retry_overload = False  # the refusal as it is (the SDK would retry it)
            with pytest.raises(grpc.RpcError) as refused:
                list(client.generate_ids(prompt, route, Sampling(max_new_tokens=40)))
            client.retry_overload = True
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (
                "KV budget is 100 tokens (--kv-budget-tokens) and 100 are reserved" in refused.value.details()
            )
            got[0] += [t.token_id for t in first]
            got[1] += [t.token_id for t in second]
            assert got == [expected, expected]
            _all_closed(local.worker_procs)
            assert [
                t.token_id for t in client.generate_ids(prompt, route, Sampling(max_new_tokens=40))
            ] == expected
    finally:
        local.stop()


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _peak_rss_mib(pid: int, stop: threading.Event, peak: list[float]) -> None:
    """Samples the process's resident memory every 10 ms until ``stop``; the highest in peak[0]."""
    while not stop.is_set():
        peak[0] = max(peak[0], _rss_mib(pid))
        stop.wait(0.01)


@pytest.mark.timeout(300)
def test_a_kv_budget_bounds_the_workers_memory_under_more_long_prompts_than_fit(tmp_path):
    """12 sessions with 1,000-token prompts at once on a worker whose KV budget holds 2 of them
    (a session's cache: 4 blocks x 2 x 4 KV heads x 64 x 4 bytes = 8 KiB a token, 8 MB each):
    each one is admitted or refused RESOURCE_EXHAUSTED naming the budget, the admitted ones
    are exactly the whole model's, and the worker's resident memory grows by less than
    what the caches of all 12 would take (96 MB): the budget, not the offered load, bounds it."""
    from resplit.models.tiny import build_tiny

    model_dir = build_tiny(
        "llama",
        tmp_path / "llama",
        hidden_size=512,
        intermediate_size=1024,
        num_attention_heads=8,
        num_key_value_heads=4,
        num_hidden_layers=4,
        max_position_embeddings=2048,
    )
    generator = torch.Generator().manual_seed(7)
    prompts = [torch.randint(4, 300, (1000,), generator=generator).tolist() for _ in range(12)]
    budget = ["--kv-budget-tokens", "2100"]  # two sessions of 1,000 + 8 new tokens, not three
    local = LocalStack(workers=1, worker_args=["--torch-threads", "1", *budget])
    try:
        local.start()
        local.deploy("kv-rss", model_dir, spread(num_units(Checkpoint(model_dir).config), 1))
        with Client(local.orchestrator.address) as client:
            route = client.route("kv-rss")
            warm = [t.token_id for t in client.generate_ids(prompts[0], route, Sampling(max_new_tokens=8))]
            assert warm == _reference(model_dir, prompts[0], 8)
            _all_closed(local.worker_procs)
            pid = local.worker_procs[0].proc.pid
            baseline = _rss_mib(pid)  # the warm-up's cache freed, its allocator pools kept
            stop, peak = threading.Event(), [baseline]
            sampler = threading.Thread(target=_peak_rss_mib, args=(pid, stop, peak))
            sampler.start()
            client.retry_overload = False  # each refusal as it is (the SDK would retry it)

            def run(prompt: list[int]) -> list[int] | str:
                try:
                    return [
                        t.token_id for t in client.generate_ids(prompt, route, Sampling(max_new_tokens=8))
                    ]
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                    assert "(--kv-budget-tokens)" in exc.details(), exc.details()
                    return "refused"

            try:
                with ThreadPoolExecutor(12) as pool:
                    got = list(pool.map(run, prompts))
            finally:
                stop.set()
                sampler.join()
        admitted = [i for i, g in enumerate(got) if g != "refused"]
        assert 1 <= len(admitted) < 12, got
        for i in admitted:
            assert got[i] == _reference(model_dir, prompts[i], 8), i
        growth = peak[0] - baseline
        print(f"admitted {len(admitted)} of 12, grew {growth:.0f} MiB")
        assert growth < 60, f"the worker grew {growth:.0f} MiB from {baseline:.0f}; 12 caches take 96 MB"
    finally:
        local.stop()
