"""Swapping and merging single blocks of a live deployment (SwapLayers, ``resplit layers``),
with real processes: a tiny Llama split three ways over the shared stack's workers.

Each session is paused at a token boundary while the swap commits, so every one of
them crosses it, whatever the machine's speed. The references are transformers'
``generate`` on whole models: the deployment's own model, and the same model with
the swapped (or merged) blocks put in by hand. Drain (the default): a session in
flight ends on the old weights, new sessions run the new ones. Replay: a session's
tokens are the old model's up to its switching point and, after it, the new model's
continuation of the same history.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from support import WORKER_DEVICE, greedy
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from resplit.cli.app import app
from resplit.models.tiny import build_tiny
from resplit.rpc.channels import sync_channel
from resplit.sdk import AsyncClient, Client, Sampling
from resplit.sdk.exchange import GenerateExchange
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc
from services.orchestrator.core.policy import default_policy

pytestmark = pytest.mark.integration

BLOCKS = 8  # 10 units; worker-0 and worker-1 are trusted
SPLIT = [(0, 3, 0), (3, 7, 2), (7, 10, 0)]
NEW_TOKENS, PAUSE_AT = 20, 6
PROMPTS = [[5, 6, 7, 8], [9, 40, 41], [100, 7, 250, 33, 12], [17, 18]]  # no pad (3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("layer-models")
    base = build_tiny("llama", root / "base", num_hidden_layers=BLOCKS, max_shard_size="100KB")
    other = build_tiny("llama", root / "other", seed=1, num_hidden_layers=BLOCKS)
    return {"root": root, "base": base, "other": other}


def _assembled(base, sources: dict[int, object], out):
    """The whole model at ``base`` with block unit u's weights taken from ``sources[u]``."""
    model = AutoModelForCausalLM.from_pretrained(base)
    for unit, source in sources.items():
        donor = AutoModelForCausalLM.from_pretrained(source)
        model.model.layers[unit - 1].load_state_dict(donor.model.layers[unit - 1].state_dict())
    model.save_pretrained(out)
    return out


def _stub(stack, channel):
    return orchestrator_pb2_grpc.OrchestratorServiceStub(channel)


def _swap(stack, name: str, units: tuple[int, int], source, sessions: int = 0):
    request = orchestrator_pb2.SwapLayersRequest(
        deployment=name,
        units=[common_pb2.UnitRange(start=units[0], end=units[1])],
        source_dir=str(source),
        sessions=sessions,
        requested_by="pytest",
    )
    with sync_channel(stack.orchestrator.address) as channel:
        return _stub(stack, channel).SwapLayers(request, timeout=120)


def _events(stack, name: str) -> list[common_pb2.DecisionEvent]:
    with sync_channel(stack.orchestrator.address) as channel:
        request = orchestrator_pb2.ListEventsRequest(deployment=name)
        return list(_stub(stack, channel).ListEvents(request, timeout=30).events)


def _fresh(stack, name: str) -> list[list[int]]:
    """Greedy tokens of new sessions (the server loop: the default)."""
    with Client(stack.orchestrator.address) as client:
        return [
            [t.token_id for t in client.generate_ids(p, client.route(name), Sampling(NEW_TOKENS))]
            for p in PROMPTS
        ]


def _across(stack, name: str, swap) -> tuple[list[list[tuple[int, int]]], list[GenerateExchange], object]:
    """Sessions that each pause after PAUSE_AT tokens until ``swap()`` has committed:
    ((token, epoch) per session, their exchanges, what swap returned)."""

    async def main():
        async with AsyncClient(stack.orchestrator.address) as client:
            route = await client.route(name)
            exchanges = [
                GenerateExchange(route, p, Sampling(max_new_tokens=NEW_TOKENS), server_loop=False)
                for p in PROMPTS
            ]
            paused = asyncio.Semaphore(0)
            committed = asyncio.Event()

            async def session(exchange):
                tokens = []
                async for token in client._run(exchange):
                    tokens.append((token.token_id, token.epoch))
                    if len(tokens) == PAUSE_AT:
                        paused.release()
                        await committed.wait()
                return tokens

            async def swapping():
                for _ in PROMPTS:
                    await paused.acquire()
                answer = await asyncio.to_thread(swap)
                committed.set()
                return answer

            *tokens, answer = await asyncio.gather(*(session(e) for e in exchanges), swapping())
            return tokens, exchanges, answer

    return asyncio.run(main())


def _deploy(stack, name: str, model) -> common_pb2.Plan:
    policy = default_policy()
    policy.private_depth = 1  # block unit 1 is privacy-critical: only trusted workers load it
    return stack.deploy(name, model, SPLIT, policy=policy)


def test_a_swap_drains_sessions_in_flight_and_new_sessions_run_the_swapped_blocks(stack, models):
    """Blocks 4 and 5 (one segment, on an untrusted worker) from another checkpoint, the
    default policy: sessions paused mid-generation end on the old weights, exactly the
    old model's tokens, neither moved nor replayed; new sessions equal the assembled model."""
    old_epoch = _deploy(stack, "swap-drain", models["base"]).epoch
    new_model = _assembled(models["base"], {4: models["other"], 5: models["other"]}, models["root"] / "a")
    sessions, exchanges, answer = _across(
        stack, "swap-drain", lambda: _swap(stack, "swap-drain", (4, 6), models["other"])
    )

    assert list(answer.units) == [4, 5] and answer.plan.epoch > old_epoch
    assert answer.plan.layers.epoch == answer.plan.epoch and answer.plan.layers.first_unit == 4
    assert answer.plan.layers.sessions == common_pb2.SESSION_POLICY_DRAIN
    for prompt, got, exchange in zip(PROMPTS, sessions, exchanges, strict=True):
        assert [t for t, _ in got] == greedy(models["base"], prompt, NEW_TOKENS, WORKER_DEVICE)[0]
        assert {e for _, e in got} == {old_epoch}, "a draining session moved to the new weights"
        assert (exchange.migrations, exchange.replays, exchange.recovered_from) == (0, 0, [])
    fresh = _fresh(stack, "swap-drain")
    assert fresh == [greedy(new_model, p, NEW_TOKENS, WORKER_DEVICE)[0] for p in PROMPTS]
    assert fresh != [greedy(models["base"], p, NEW_TOKENS, WORKER_DEVICE)[0] for p in PROMPTS]
    event = _events(stack, "swap-drain")[0]
    assert event.requested_by.startswith("pytest (") and "swap blocks 4-5 from" in event.reason
    assert event.chosen.epoch == answer.plan.epoch

    # A later plan change (S2 moves to worker-3, which never held it) keeps the swapped blocks.
    moved = [
        common_pb2.Segment(units=common_pb2.UnitRange(start=a, end=b), node_id=f"worker-{w}")
        for a, b, w in SPLIT
    ]
    moved[1].node_id = "worker-3"
    with sync_channel(stack.orchestrator.address) as channel:
        request = orchestrator_pb2.ApplyPlanRequest(deployment="swap-drain", segments=moved, reason="move S2")
        plan = _stub(stack, channel).ApplyPlan(request, timeout=120)
    assert plan.layers == answer.plan.layers
    assert _fresh(stack, "swap-drain") == fresh


def test_replay_moves_sessions_at_their_next_token_and_a_swap_back_restores_the_model(stack, models):
    """Half the blocks (1-4: two segments, block 1 privacy-critical on a trusted worker)
    with REPLAY: each session's tokens are the old model's up to its switching point and
    the new model's continuation of that history after it. Swapping back to the model's
    own directory gives the original model again; a swap to where it already is changes nothing."""
    name = "swap-replay"
    _deploy(stack, name, models["base"])
    sources = dict.fromkeys(range(1, 5), models["other"])
    new_model = _assembled(models["base"], sources, models["root"] / "b")
    replay = common_pb2.SESSION_POLICY_REPLAY
    sessions, exchanges, answer = _across(
        stack, name, lambda: _swap(stack, name, (1, 5), models["other"], replay)
    )

    new_epoch = answer.plan.epoch
    assert list(answer.units) == [1, 2, 3, 4] and answer.plan.layers.sessions == replay
    for prompt, got, exchange in zip(PROMPTS, sessions, exchanges, strict=True):
        tokens = [t for t, _ in got]
        switch = next(i for i, (_, epoch) in enumerate(got) if epoch == new_epoch)
        assert switch >= PAUSE_AT
        assert tokens[:switch] == greedy(models["base"], prompt, NEW_TOKENS, WORKER_DEVICE)[0][:switch]
        history = prompt + tokens[:switch]
        assert tokens[switch:] == greedy(new_model, history, NEW_TOKENS - switch, WORKER_DEVICE)[0]
        assert (exchange.replays, exchange.migrations, exchange.recovered_from) == (1, 0, [])
    fresh = _fresh(stack, name)
    assert fresh == [greedy(new_model, p, NEW_TOKENS, WORKER_DEVICE)[0] for p in PROMPTS]
    assert fresh != [greedy(models["base"], p, NEW_TOKENS, WORKER_DEVICE)[0] for p in PROMPTS]

    back = _swap(stack, name, (1, 5), models["base"])
    assert list(back.units) == [1, 2, 3, 4] and back.plan.epoch > new_epoch
    assert _fresh(stack, name) == [greedy(models["base"], p, NEW_TOKENS, WORKER_DEVICE)[0] for p in PROMPTS]
    same = _swap(stack, name, (2, 3), models["base"])
    assert list(same.units) == [] and same.plan.epoch == back.plan.epoch


def test_swaps_that_cannot_work_are_refused_naming_why(stack, models):
    name = "swap-refused"
    epoch = _deploy(stack, name, models["base"]).epoch
    wider = build_tiny("llama", models["root"] / "wider", num_hidden_layers=BLOCKS, intermediate_size=96)
    model = AutoModelForCausalLM.from_pretrained(models["other"])
    model.model.layers[2].self_attn.o_proj.weight.data = model.model.layers[2].self_attn.o_proj.weight.half()
    model.save_pretrained(models["root"] / "half")
    cases = [
        (
            (3, 4),
            models["root"] / "half",
            grpc.StatusCode.INVALID_ARGUMENT,
            "model.layers.2.self_attn.o_proj.weight",
        ),
        ((2, 3), wider, grpc.StatusCode.INVALID_ARGUMENT, "intermediate_size"),
        ((0, 2), models["other"], grpc.StatusCode.INVALID_ARGUMENT, "not all transformer blocks"),
        ((8, 10), models["other"], grpc.StatusCode.INVALID_ARGUMENT, "not all transformer blocks"),
        ((2, 3), "relative/dir", grpc.StatusCode.INVALID_ARGUMENT, "absolute"),
        ((2, 3), models["root"] / "missing", grpc.StatusCode.NOT_FOUND, "does not exist"),
        ((2, 3), "/" + "x" * 5000, grpc.StatusCode.NOT_FOUND, "does not exist"),
        ((2, 3), "/a\0b", grpc.StatusCode.INVALID_ARGUMENT, "absolute"),
        ((5, 2**32 - 1), models["other"], grpc.StatusCode.INVALID_ARGUMENT, "not all transformer blocks"),
        ((5, 5), models["other"], grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ]
    for units, source, code, says in cases:
        with pytest.raises(grpc.RpcError) as refused:
            _swap(stack, name, units, source)
        assert refused.value.code() == code and says in refused.value.details(), refused.value.details()
    with pytest.raises(grpc.RpcError) as refused:
        _swap(stack, "no-such-deployment", (2, 3), models["other"])
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as refused:
        _swap(stack, name, (2, 3), models["other"], sessions=99)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "policy" in refused.value.details()
    cli = [
        "layers",
        "swap",
        name,
        "--from",
        str(models["other"]),
        "--orchestrator",
        stack.orchestrator.address,
    ]
    refused_cli = CliRunner().invoke(app, [*cli, "--units", "0:2"])
    assert refused_cli.exit_code == 1 and "INVALID_ARGUMENT" in refused_cli.output, refused_cli.output
    assert CliRunner().invoke(app, [*cli, "--units", "2-3"]).exit_code == 2  # not A:B: a usage error
    with sync_channel(stack.orchestrator.address) as channel:
        plan = _stub(stack, channel).GetPlan(orchestrator_pb2.GetPlanRequest(deployment=name), timeout=30)
    assert plan.epoch == epoch and not _events(stack, name)  # nothing rolled out, nothing logged


def test_resplit_layers_merge_picks_the_pushed_blocks_and_applies_them_with_yes(stack, models, tmp_path):
    """The CLI end to end: base -> aligned (every block moved along its first output row)
    -> the deployed fine-tuned model (blocks 3 and 6 moved along the second row: out of the
    safety subspace). The table names blocks 3 and 6; --yes swaps exactly those in, and
    new sessions equal the fine-tuned model with those two blocks merged by hand."""
    import torch

    def shifted(src, out, units, row, seed):
        model = AutoModelForCausalLM.from_pretrained(src)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for unit in units:
                for p in model.model.layers[unit - 1].parameters():
                    if p.dim() == 2:
                        p[row] += torch.randn(p.shape[1], generator=g)
        model.save_pretrained(out)
        return out

    aligned = shifted(models["base"], tmp_path / "aligned", range(1, BLOCKS + 1), 0, 1)
    tuned = shifted(aligned, tmp_path / "tuned", [3, 6], 1, 2)
    name = "safemerge"
    _deploy(stack, name, tuned)
    runner = CliRunner()
    args = ["layers", "merge", name, "--from", str(aligned), "--base", str(models["base"])]
    args += ["--orchestrator", stack.orchestrator.address, "--out", str(tmp_path / "merged")]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    decided = [
        line.split("│")[1].strip() for line in shown.output.splitlines() if "merge" in line and "│" in line
    ]
    assert decided == ["3", "6"], shown.output
    assert "--yes" in shown.output and not (tmp_path / "merged").exists()

    applied = runner.invoke(app, [*args, "--yes", "--weight", "0.25"])
    assert applied.exit_code == 0, applied.output
    model = AutoModelForCausalLM.from_pretrained(tuned)
    safe = AutoModelForCausalLM.from_pretrained(aligned)
    with torch.no_grad():
        for unit in (3, 6):
            for (_, p), (_, q) in zip(
                model.model.layers[unit - 1].named_parameters(),
                safe.model.layers[unit - 1].named_parameters(),
                strict=True,
            ):
                p.copy_(0.25 * p.double() + 0.75 * q.double())
    model.save_pretrained(tmp_path / "reference")
    assert _fresh(stack, name) == [
        greedy(tmp_path / "reference", p, NEW_TOKENS, WORKER_DEVICE)[0] for p in PROMPTS
    ]
    assert "SafeMERGE" in _events(stack, name)[0].reason
