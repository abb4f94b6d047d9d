"""A prompt run in chunks (core/step.py ``Prefill``) against the same prompt in one forward.

Real tiny models of every generative family, split three ways, each hop fed what
the one before it sent on the wire (the encoded activation). Chunks of 5 tokens
cross the sliding windows of Qwen2, Gemma 2 and 3 (8) and Mistral (16): the activations each hop
sends on are within 1e-4 of the whole prompt's (fp32), the token is the same, and
the decode steps after it read the same cache.
"""

from __future__ import annotations

import pytest
import torch

from resplit.core.tensors import Assembler
from resplit.models import Checkpoint, load_segment
from resplit.models.sampling import Sampler
from resplit.models.tiny import GENERIC_FAMILIES, build_tiny
from services.worker.core import step
from services.worker.core.errors import NotHosted
from services.worker.core.hosting import Hosted
from services.worker.core.sessions import Session

PROMPT = [(7 * i + 3) % 200 for i in range(37)]
CHUNK = 5


def _sessions(model_dir) -> list[Session]:
    checkpoint = Checkpoint(model_dir)
    blocks = checkpoint.config.num_hidden_layers
    sessions = []
    for a, b in [(0, 2), (2, 4), (4, blocks + 2)]:
        segment = load_segment(checkpoint, a, b, torch.device("cpu"), torch.float32)
        hosted = Hosted(
            "d", 1, a, b, segment, str(model_dir), 0, torch.float32, torch.device("cpu"), True,
            int(checkpoint.config.hidden_size),
        )  # fmt: skip
        sessions.append(Session("s", hosted, segment.new_state(), sampler=Sampler()))
    return sessions


def _through(sessions: list[Session], ids: list[int], chunk: int) -> tuple[list[torch.Tensor], int]:
    """One step of ``ids`` through every hop (whole, or in chunks of ``chunk``): the
    activations the hops sent on, and the head's token."""
    given = step.StepInput(0, len(ids), 1, ids=torch.tensor([ids]))
    sent = []
    for k, session in enumerate(sessions):
        units = None if k == len(sessions) - 1 else (sessions[k + 1].hosted.start, sessions[k + 1].hosted.end)
        if chunk and step.chunkable(session, given, chunk):
            prefill = step.Prefill(session, given, chunk, units, 1 << 20, 1)
            produced = [prefill.run_chunk(i) for i in range(len(prefill.chunks))]
            assert produced[:-1] == [None] * (len(prefill.chunks) - 1)
            produced = produced[-1]
        else:
            produced = step.run(session, given, units, 1 << 20, 1)
        if units is None:
            return sent, produced[-1].token.token_id
        assembler = Assembler()
        assert [assembler.add(c) for c in produced][-1]
        sent.append(assembler.tensor())
        given = step.activation_step(assembler)
    raise AssertionError("no head hop")


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory) -> dict[str, object]:
    """The tiny models, and those of the generic decoder's families."""
    root = tmp_path_factory.mktemp("chunked-generic")
    return {**tiny_models, **{family: build_tiny(family, root / family) for family in GENERIC_FAMILIES}}


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen2-sliding", "mistral", "gpt2", *GENERIC_FAMILIES])
def test_a_prompt_in_chunks_gives_what_the_whole_prompt_gives(models, family):
    whole, chunked = _sessions(models[family]), _sessions(models[family])
    sent_whole, token_whole = _through(whole, PROMPT, 0)
    sent_chunked, token_chunked = _through(chunked, PROMPT, CHUNK)
    assert (
        [t.shape for t in sent_chunked]
        == [t.shape for t in sent_whole]
        == [(1, len(PROMPT), t.shape[2]) for t in sent_whole]
    )
    for a, b in zip(sent_whole, sent_chunked, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=0), family
    assert token_chunked == token_whole
    for _ in range(4):  # decode steps over the chunked cache: the same tokens
        _, token_whole = _through(whole, [token_whole], CHUNK)
        _, token_chunked = _through(chunked, [token_chunked], CHUNK)
        assert token_chunked == token_whole, family
    assert [s.state.seq_len for s in chunked] == [s.state.seq_len for s in whole]


def test_only_a_long_unpadded_prompt_of_one_row_is_cut(tiny_models):
    session = _sessions(tiny_models["llama"])[0]
    long = step.StepInput(0, 37, 1, ids=torch.zeros(1, 37, dtype=torch.long))
    assert step.chunkable(session, long, 36) and not step.chunkable(session, long, 37)
    assert not step.chunkable(session, long, 0)  # 0: chunking off
    rows = step.StepInput(0, 37, 2, ids=torch.zeros(2, 37, dtype=torch.long))
    padded = step.StepInput(
        0, 37, 1, ids=torch.zeros(1, 37, dtype=torch.long), mask=torch.ones(1, 37), padded=True
    )
    assert not step.chunkable(session, rows, 8) and not step.chunkable(session, padded, 8)
    assert step.Prefill(session, long, 8, None, 1, 1).chunks == [8, 8, 8, 8, 5]
    # a prompt up to the batch's limit shares a packed forward instead; never a padded one
    assert step.batchable(session, long, 37) and not step.batchable(session, long, 36)
    assert not step.batchable(session, padded, 64) and not step.batchable(session, rows, 64)


def test_a_session_closed_between_two_chunks_stops_its_prefill(tiny_models):
    session = _sessions(tiny_models["llama"])[0]
    given = step.StepInput(0, 37, 1, ids=torch.tensor([PROMPT]))
    prefill = step.Prefill(session, given, CHUNK, (2, 4), 1 << 20, 1)
    assert prefill.run_chunk(0) is None
    session.state.cache = None  # what closing a session does (core/sessions.py)
    with pytest.raises(NotHosted, match="was closed"):
        prefill.run_chunk(1)
