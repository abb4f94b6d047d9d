"""One step of one session on one hop: the tensor work, with no stream in sight.

The transport (services/worker/transport.py) reads a step's input off the
wire and hands it here; what comes back is either the activation to send to
the next hop (chunks) or, on the head hop, the replies for the client
(a token, logits on request, or an embedding). Everything with tensors runs
in :func:`run`, in one call, so a step costs at most one thread handoff
(core/threads.py decides where it runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from resplit.core.tensors import Assembler, TensorError, encode
from resplit.v1 import tensor_pb2, worker_pb2

from .errors import BadInput, NotHosted
from .inputs import activation, token_input
from .sessions import Session


@dataclass
class StepInput:
    """A step as it came off the wire: token ids, or a whole activation's chunks."""

    step: int
    #: New tokens per row (the sequence length of this step).
    tokens: int
    rows: int
    ids: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    assembler: Assembler | None = None
    #: An attention mask came with it (padding): it runs alone, as one forward.
    padded: bool = False


def tokens_step(session: Session, tokens: worker_pb2.TokenInput) -> StepInput:
    """A step given as token ids (the hop holding the embedding)."""
    ids, mask = token_input(session.hosted, tokens)
    return StepInput(tokens.step, ids.shape[1], ids.shape[0], ids=ids, mask=mask, padded=mask is not None)


def add_chunk(assembler: Assembler, chunk: tensor_pb2.TensorChunk) -> bool:
    """One more chunk of an activation (True once it is whole); a malformed one is the
    caller's error."""
    try:
        return assembler.add(chunk)
    except TensorError as exc:
        raise BadInput(str(exc)) from None


def activation_step(assembler: Assembler) -> StepInput:
    """A step given as a whole activation from the previous hop."""
    header = assembler.header
    if header is None:  # add_chunk refuses a first chunk without one; kept for type narrowing
        raise BadInput("no tensor header")
    # A malformed shape counts 0 here and is refused with the full check in activation().
    shaped = len(header.shape) == 3
    return StepInput(
        header.step,
        header.shape[1] if shaped else 0,
        header.shape[0] if shaped else 0,
        assembler=assembler,
        padded=bool(header.attention_mask),
    )


def run(
    session: Session,
    given: StepInput,
    next_units: tuple[int, int] | None,
    chunk_bytes: int,
    latest_epoch: int,
) -> list[Any]:
    """Run the session's segment on ``given``: the activation's chunks for the next hop
    (``next_units``), or, on the head hop, the replies (``latest_epoch``: the newest
    epoch of the deployment this worker knows, stamped on the token)."""
    hosted = session.hosted
    hidden, mask = None, given.mask
    if given.assembler is not None:
        _, hidden, mask = activation(hosted, given.assembler, hosted.epoch)
    output = hosted.segment.step(session.state, input_ids=given.ids, hidden=hidden, attention_mask=mask)
    if next_units is not None:
        return forwarded(session, given.step, output.hidden, next_units, mask, chunk_bytes)
    if hosted.generative:
        return sample(session, given.step, output.logits[0], chunk_bytes, latest_epoch)
    return results(session, given.step, output.embeddings.float(), chunk_bytes)


def chunkable(session: Session, given: StepInput, chunk_tokens: int) -> bool:
    """Whether this step is a prompt to run in chunks of ``chunk_tokens`` (:class:`Prefill`):
    one row longer than a chunk, unpadded, on a generative segment with blocks (and a
    cache to carry one chunk's keys and values to the next)."""
    hosted = session.hosted
    return (
        chunk_tokens > 0
        and given.rows == 1
        and given.tokens > chunk_tokens
        and not given.padded
        and hosted.generative
        and len(hosted.segment.block_range) > 0
    )


class Prefill:
    """A long prompt's step cut into chunks, each one call of :meth:`run_chunk`.

    Why: one forward over a 2,048-token prompt holds the compute thread for seconds,
    and every other session's decode step on this worker waits behind it. Run chunk
    by chunk (each over the cache the chunks before it filled, as one forward would
    see them), the steps of other sessions run between chunks, so their streams stall
    for one chunk at most per hop. The hop's output is the same: every position's
    hidden state for the next hop (sent as one activation once the last chunk ran), or
    the last position's token at the head. The transport awaits each chunk on its own.
    """

    def __init__(
        self,
        session: Session,
        given: StepInput,
        chunk_tokens: int,
        next_units: tuple[int, int] | None,
        chunk_bytes: int,
        latest_epoch: int,
    ) -> None:
        self.session, self.given, self.chunk_tokens = session, given, chunk_tokens
        self.next_units, self.chunk_bytes, self.latest_epoch = next_units, chunk_bytes, latest_epoch
        #: (new tokens) of each chunk, in order.
        self.chunks = [
            min(chunk_tokens, given.tokens - start) for start in range(0, given.tokens, chunk_tokens)
        ]
        self._input: torch.Tensor | None = given.ids
        self._hidden: list[torch.Tensor] = []

    def run_chunk(self, index: int) -> list[Any] | None:
        """Run chunk ``index`` (in order, one call each) through the segment; after the
        last one, what :func:`run` returns for the whole prompt."""
        session = self.session
        hosted = session.hosted
        if session.state.cache is None:
            raise NotHosted(f"session {session.session_id[:64]!r} was closed")
        if self._input is None:  # an activation, decoded on the first chunk's compute call
            assert self.given.assembler is not None
            _, self._input, _ = activation(hosted, self.given.assembler, hosted.epoch)
        start = index * self.chunk_tokens
        part = self._input[:, start : start + self.chunk_tokens]
        from_ids = self.given.assembler is None
        output = hosted.segment.step(
            session.state, input_ids=part if from_ids else None, hidden=None if from_ids else part
        )
        if self.next_units is not None:
            self._hidden.append(output.hidden)
        if index < len(self.chunks) - 1:
            return None
        if self.next_units is not None:
            hidden = torch.cat(self._hidden, dim=1)
            return forwarded(session, self.given.step, hidden, self.next_units, None, self.chunk_bytes)
        return sample(session, self.given.step, output.logits[0], self.chunk_bytes, self.latest_epoch)


def batchable(session: Session, given: StepInput, max_tokens: int) -> bool:
    """Whether this step may share a batched forward with other sessions' steps: one row,
    unpadded, of a generative segment, either one new token (a decode step, on a segment
    with a batched step) or a prompt of at most ``max_tokens`` (on a segment that packs
    prompts; a longer one runs in chunks, :class:`Prefill`)."""
    hosted = session.hosted
    if given.rows != 1 or given.padded or not hosted.generative:
        return False
    if given.tokens == 1:
        return hosted.segment.batches_decode()
    return 1 < given.tokens <= max_tokens and hosted.segment.batches_prompts()


@dataclass
class Row:
    """One session's step in a batch."""

    session: Session
    given: StepInput
    next_units: tuple[int, int] | None


def run_rows(rows: list[Row], chunk_bytes: int, latest_epoch: int) -> list[Any]:
    """Several sessions' steps on one segment as one batched forward: one-token steps
    (``Segment.step_rows``), or, when prompts are among them, every step's tokens packed
    along the sequence (``Segment.step_packed``). Per row what :func:`run` returns, or the
    row's own refusal (a malformed activation fails its session, never its batch mates)."""
    out: list[Any] = [None] * len(rows)
    ready: list[int] = []
    inputs: list[torch.Tensor] = []
    for i, row in enumerate(rows):
        hosted = row.session.hosted
        if row.session.state.cache is None and len(hosted.segment.block_range):
            out[i] = NotHosted(f"session {row.session.session_id[:64]!r} was closed")
            continue
        try:
            if row.given.assembler is not None:
                _, hidden, _ = activation(hosted, row.given.assembler, hosted.epoch)
                inputs.append(hidden)
            else:
                inputs.append(row.given.ids)
        except BadInput as exc:
            out[i] = exc
            continue
        ready.append(i)
    if not ready:
        return out
    segment = rows[ready[0]].session.hosted.segment
    states = [rows[i].session.state for i in ready]
    lengths = [rows[i].given.tokens for i in ready]
    from_ids = rows[ready[0]].given.assembler is None
    if max(lengths) == 1:
        stacked = torch.cat(inputs)  # [N, 1] ids or [N, 1, H]
        output = segment.step_rows(
            states, input_ids=stacked if from_ids else None, hidden=None if from_ids else stacked
        )
        spans = [(slice(j, j + 1), slice(None)) for j in range(len(ready))]
    else:
        packed = torch.cat(inputs, dim=1)  # [1, T] ids or [1, T, H]
        output = segment.step_packed(
            states, lengths, input_ids=packed if from_ids else None, hidden=None if from_ids else packed
        )
        ends = torch.tensor(lengths).cumsum(0).tolist()
        spans = [(slice(None), slice(end - n, end)) for n, end in zip(lengths, ends, strict=True)]
    for j, i in enumerate(ready):
        row = rows[i]
        session, step_no = row.session, row.given.step
        if row.next_units is None:
            try:
                out[i] = sample(session, step_no, output.logits[j], chunk_bytes, latest_epoch)
            except BadInput as exc:
                out[i] = exc
        else:
            hidden = output.hidden[spans[j]]
            out[i] = forwarded(session, step_no, hidden, row.next_units, None, chunk_bytes)
    return out


def forwarded(
    session: Session,
    step: int,
    hidden: torch.Tensor,
    next_units: tuple[int, int],
    mask: torch.Tensor | None,
    chunk_bytes: int,
) -> list[Any]:
    """A step's activation as the chunks the next hop (``next_units``) receives."""
    return encode(
        hidden,
        session_id=session.session_id,
        step=step,
        epoch=session.hosted.epoch,
        units=next_units,
        compression=session.hosted.compression,
        attention_mask=[] if mask is None else mask.flatten().tolist(),
        chunk_bytes=chunk_bytes,
    )


def results(session: Session, step: int, tensor: torch.Tensor, chunk_bytes: int) -> list[Any]:
    """A tensor for the client (an embedding, or logits), as result replies."""
    return [
        worker_pb2.ForwardResponse(result=chunk)
        for chunk in encode(
            tensor,
            session_id=session.session_id,
            step=step,
            epoch=session.hosted.epoch,
            chunk_bytes=chunk_bytes,
        )
    ]


def sample(
    session: Session, step: int, logits: torch.Tensor, chunk_bytes: int, latest_epoch: int
) -> list[Any]:
    """The step's token (and its logits first, when the session asked for them)."""
    replies = results(session, step, logits.float(), chunk_bytes) if session.return_logits else []
    if session.sampler is None:  # only head segments of generative models get here
        raise BadInput("this session does not generate")
    token, logprob = session.sampler.choose(logits, session.generated)
    session.generated += 1
    reason = session.sampler.finish_reason(token, session.generated)
    replies.append(
        worker_pb2.ForwardResponse(
            token=worker_pb2.TokenOutput(
                step=step,
                token_id=token,
                logprob=logprob,
                finished=bool(reason),
                finish_reason=reason,
                latest_epoch=latest_epoch,
            )
        )
    )
    return replies


def fed_back(
    session: Session, request: worker_pb2.ForwardRequest, token: worker_pb2.TokenOutput | None
) -> worker_pb2.ForwardRequest | None:
    """The server loop's next step on the first hop: the token just passed up, as input.

    None (wait for the client) after a step that did not come as tokens from the
    client, when the session finished, or when the token reports a newer epoch:
    the client moves the session at exactly that token, and the cache it pulls
    must not have run ahead. The client decides from the same token, so both
    ends agree on where the loop stopped.
    """
    if token is None or token.finished or not request.HasField("tokens"):
        return None
    if token.latest_epoch > session.hosted.epoch:
        return None
    return worker_pb2.ForwardRequest(
        tokens=worker_pb2.TokenInput(step=token.step + 1, input_ids=[token.token_id], rows=1)
    )
