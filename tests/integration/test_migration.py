"""Live session migration across reconfigurations, with real workers and real models.

Sessions keep generating while the broadcaster rolls out new plans (moved
segments, moved boundaries, a different number of segments): each session
crosses to the new epoch at a token boundary with its KV cache pulled by the
new hops, and every token equals the whole model's. When the old hop is gone
the session is rebuilt by replaying its token history instead.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request

import pytest
import torch
from support import LocalStack, batch_rows, make_plan
from transformers import AutoModelForCausalLM

from resplit.models.tiny import build_tiny
from resplit.sdk import AsyncClient, Client
from resplit.sdk.exchange import GenerateExchange, Sampling

pytestmark = pytest.mark.integration

NEW_TOKENS = 48
SESSIONS = 16
# 10 units (embedding, 8 blocks, head); worker-0 and worker-1 are trusted.
START = [(0, 3, 0), (3, 7, 2), (7, 10, 0)]
RECONFIGURATIONS = [
    [(0, 3, 0), (3, 7, 3), (7, 10, 0)],  # migrate the middle segment
    [(0, 5, 0), (5, 8, 2), (8, 10, 1)],  # re-split: new boundaries, head moves
    [(0, 5, 1), (5, 8, 3), (8, 10, 1)],  # migrate the first hop too
    [(0, 2, 0), (2, 9, 2), (9, 10, 0)],  # re-split again
    [(0, 4, 1), (4, 6, 3), (6, 8, 2), (8, 10, 0)],  # four segments
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("migration-models")
    return {
        "llama": build_tiny("llama", root / "llama", num_hidden_layers=8),
        "sliding": build_tiny("qwen2-sliding", root / "sliding", num_hidden_layers=8),
        # the generic decoder: sliding and global layers with a tied head, and MoE blocks
        "gemma2": build_tiny("gemma2", root / "gemma2", num_hidden_layers=8),
        "mixtral": build_tiny("mixtral", root / "mixtral", num_hidden_layers=8),
    }


def _reference(model_dir, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    whole = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    for prompt in prompts:
        ids = whole.generate(
            torch.tensor([prompt]),
            max_new_tokens=new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=3,
        )
        out.append(ids[0, len(prompt) :].tolist())
    return out


def _prompts(count: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(11)
    return [torch.randint(4, 300, (int(3 + i % 9),), generator=generator).tolist() for i in range(count)]


def _migrated_on_workers(stack: LocalStack) -> float:
    total = 0.0
    for proc in stack.worker_procs:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith("resplit_sessions_migrated_total{"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def test_16_sessions_through_5_reconfigurations_lose_nothing_and_change_no_token(stack, models):
    """16 sessions decoding in batches (the workers run their steps as batched forwards:
    more rows than forwards) go through migrations, re-splits and 3 -> 4 segments: each
    moves its cache at every switch, none fails or replays, every token is exact."""
    stack.deploy("moving", models["llama"], START)
    rows_before, forwards_before = batch_rows(stack.worker_procs)
    prompts = _prompts(SESSIONS)
    expected = _reference(models["llama"], prompts, NEW_TOKENS)
    epochs = []
    every = 6  # a session pauses after every 6th token until the next plan is committed

    async def main():
        async with AsyncClient(stack.orchestrator.address) as client:
            route = await client.route("moving")
            exchanges = [
                GenerateExchange(route, p, Sampling(max_new_tokens=NEW_TOKENS), server_loop=False)
                for p in prompts
            ]
            progress = asyncio.Condition()
            reached = [0] * len(RECONFIGURATIONS)
            committed = [asyncio.Event() for _ in RECONFIGURATIONS]

            async def session(exchange):
                """Generates; at tokens 6, 12, ... 30 it waits for reconfiguration 1..5, so every
                session is mid-generation at every switch, whatever the machine's speed."""
                tokens = []
                async for token in client._run(exchange):
                    tokens.append(token.token_id)
                    gate = len(tokens) // every - 1
                    if len(tokens) % every == 0 and 0 <= gate < len(RECONFIGURATIONS):
                        async with progress:
                            reached[gate] += 1
                            progress.notify_all()
                        await committed[gate].wait()
                return tokens

            async def reconfigure():
                for i, segments in enumerate(RECONFIGURATIONS):
                    async with progress:
                        await progress.wait_for(lambda i=i: reached[i] == SESSIONS)
                    answer = await asyncio.to_thread(stack.rollout, make_plan("moving", segments))
                    epochs.append(answer.committed.epoch)
                    committed[i].set()

            results = await asyncio.gather(*(session(e) for e in exchanges), reconfigure())
            return results[:SESSIONS], exchanges

    results, exchanges = asyncio.run(main())
    assert epochs == sorted(epochs) and len(set(epochs)) == len(RECONFIGURATIONS)
    for prompt, got, want in zip(prompts, results, expected, strict=True):
        assert got == want, f"prompt {prompt}"
    assert all(e.replays == 0 for e in exchanges), [e.recovered_from for e in exchanges]  # none replayed
    crossings = sum(e.migrations for e in exchanges)
    assert all(e.migrations == len(RECONFIGURATIONS) for e in exchanges), [e.migrations for e in exchanges]
    assert _migrated_on_workers(stack) >= crossings  # every crossing moved at least one segment's cache
    rows, forwards = batch_rows(stack.worker_procs)
    assert rows - rows_before > forwards - forwards_before > 0, "the sessions never shared a forward"


def _drive_with_rollouts(stack, name, exchange, plans, every: int) -> list[int]:
    tokens = []
    with Client(stack.orchestrator.address) as client:
        for i, token in enumerate(client._run(exchange)):
            tokens.append(token.token_id)
            if plans and i % every == every - 1:
                stack.rollout(make_plan(name, plans.pop(0)))
    return tokens


@pytest.mark.parametrize("kind", ["sliding", "gemma2", "mixtral"])
def test_sliding_window_layers_migrate_with_more_context_than_their_window(stack, models, kind):
    """qwen2-sliding and gemma2 keep 8 positions per sliding layer; the session holds far
    more. Mixtral's MoE blocks (the generic decoder, as gemma2) move their cache the same way."""
    name = "sliding" if kind == "sliding" else f"sliding-{kind}"
    stack.deploy(name, models[kind], START)
    prompt = _prompts(1)[0] * 3
    with Client(stack.orchestrator.address) as client:
        exchange = GenerateExchange(
            client.route(name), prompt, Sampling(max_new_tokens=40), server_loop=False
        )
    plans = [RECONFIGURATIONS[1], RECONFIGURATIONS[3]]
    tokens = _drive_with_rollouts(stack, name, exchange, plans, every=12)
    assert tokens == _reference(models[kind], [prompt], 40)[0]
    assert (exchange.migrations, exchange.replays) == (2, 0), exchange.recovered_from


def test_seeded_sampling_draws_the_same_tokens_across_a_migration(stack, models):
    stack.deploy("seeded", models["llama"], START)
    prompt = [7, 8, 9, 10]
    sampling = dict(max_new_tokens=30, temperature=1.3, top_k=40, top_p=0.95, seed=1234)
    with Client(stack.orchestrator.address) as client:
        still = [
            t.token_id for t in client.generate_ids(prompt, client.route("seeded"), Sampling(**sampling))
        ]
        exchange = GenerateExchange(client.route("seeded"), prompt, Sampling(**sampling), server_loop=False)
    plans = [RECONFIGURATIONS[0], RECONFIGURATIONS[1]]
    moved = _drive_with_rollouts(stack, "seeded", exchange, plans, every=10)
    assert moved == still
    assert exchange.migrations == 2


def test_a_rollout_racing_a_new_session_never_fails_it(stack, models):
    """Sessions opened from a route fetched just before a commit still succeed."""
    stack.deploy("racing", models["llama"], START)
    prompt = [5, 6, 7]
    expected = _reference(models["llama"], [prompt], 6)[0]
    errors: list[BaseException] = []
    outputs: list[list[int]] = []

    def generate():
        try:
            with Client(stack.orchestrator.address) as client:
                for _ in range(6):
                    outputs.append(
                        [t.token_id for t in client.generate_ids(prompt, client.route("racing"), Sampling(6))]
                    )
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=generate)
    thread.start()
    for segments in ([(0, 5, 0), (5, 8, 2), (8, 10, 0)], START):
        stack.rollout(make_plan("racing", segments))
    thread.join(120)
    assert not errors, errors
    assert outputs and all(out == expected for out in outputs)


def test_replay_rebuilds_a_session_whose_old_hop_died(stack, models):
    """It kills worker-3 (and starts it again after). The new plan no longer uses worker-3;
    the session learns of it at a token boundary, but by then its old middle hop is
    gone, so the cache cannot be pulled and the client replays the history."""
    stack.deploy("orphan", models["llama"], [(0, 3, 0), (3, 7, 3), (7, 10, 0)])
    prompt = _prompts(2)[1]
    expected = _reference(models["llama"], [prompt], 30)[0]
    with Client(stack.orchestrator.address) as client:
        exchange = GenerateExchange(
            client.route("orphan"), prompt, Sampling(max_new_tokens=30), server_loop=False
        )
        tokens, stream = [], client._run(exchange)
        for token in stream:
            tokens.append(token.token_id)
            if len(tokens) == 10:
                stack.rollout(make_plan("orphan", [(0, 3, 0), (3, 7, 2), (7, 10, 0)]))
            if len(tokens) == 11:  # this token came from the old route and names the new epoch
                assert exchange.moved()
                stack.worker_procs[3].kill()
    stack.worker_procs[3].start().wait_health("SERVING", timeout=60)  # the stack is shared
    assert tokens == expected
    assert exchange.replays == 1 and exchange.migrations == 1  # the move was tried, then replayed
    assert len(exchange.recovered_from) == 1 and exchange.recovered_from[0].startswith("FAILED_PRECONDITION")


def test_a_server_loop_session_stops_at_the_new_epoch_and_moves_its_cache(stack, models):
    """The first hop runs the decode loop itself (the client only reads): when a plan
    commits mid-session, the loop stops at the first token that names the new epoch,
    the client moves the cache there, and the new first hop loops again. The new route
    comes with that token (the first hop's worker learned it with the commit): the
    client never asks the orchestrator for it."""
    stack.deploy("looping", models["llama"], START)
    prompt, new_tokens = [9, 10, 11, 12], 480  # long enough to outlast a rollout
    expected = _reference(models["llama"], [prompt], new_tokens)[0]
    started, committed = threading.Event(), threading.Event()

    def roll_out():
        started.wait(60)
        stack.rollout(make_plan("looping", RECONFIGURATIONS[0]))
        committed.set()

    thread = threading.Thread(target=roll_out)
    thread.start()
    tokens, after_commit = [], 0
    with Client(stack.orchestrator.address) as client:
        exchange = GenerateExchange(client.route("looping"), prompt, Sampling(max_new_tokens=new_tokens))
        assert exchange.server_loop  # the default

        def asked(deployment: str):
            raise AssertionError(f"the session asked the orchestrator for the route of {deployment!r}")

        client.route = asked
        for token in client._run(exchange):
            tokens.append(token.token_id)
            started.set()
            after_commit += committed.is_set()
    thread.join(60)
    assert after_commit > 0, "the session ended before the rollout committed: nothing was tested"
    assert tokens == expected
    assert (exchange.migrations, exchange.replays) == (1, 0), exchange.recovered_from
    with Client(stack.orchestrator.address) as other:  # the pushed route is the orchestrator's
        assert exchange.route == other.route("looping")
