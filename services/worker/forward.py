"""The data plane: one Forward stream per session per hop.

A hop reads its session's steps from upstream (the client or the previous
worker), runs its units, and either forwards the activation on its own stream
to the next hop or, holding the head, samples the token (or pools the
embedding). Results come back along the same streams. Every refusal aborts
only this session's stream, with a status code and a message; a downstream
hop's refusal is passed up unchanged, prefixed with where it happened.

A session may open mid-generation on a new epoch (``start_step`` > 0): with
``migrate_from`` its cache is pulled from the old route first (see
migration.py), otherwise the next step replays the whole token history.
Every token carries the newest epoch any hop on the way knows of, which is
how a client learns, at a token boundary, that its route has changed.

With ``server_loop`` the first hop feeds each token back as the next step
itself (see :func:`fed_back`): the client only reads, which saves one
client round trip per token.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter

from resplit.core.tensors import Assembler, TensorError, encode
from resplit.models.sampling import Sampler
from resplit.v1 import worker_pb2

from .core import errors
from .core.hosting import Hosted, Hosting
from .core.inputs import activation, token_input
from .core.passive import PassiveLinks
from .core.privacy import check_trusted
from .core.sessions import Session, SessionTable
from .core.shortcut import LocalTokens
from .hops import Channels, Downstream, HopError
from .migration import Migrator
from .replies import Replies

log = logging.getLogger(__name__)
TOKENS_PASSED = Counter(
    "resplit_worker_tokens_passed_total",
    "Tokens a hop passed up from later segments, by where it took them: sampled in this "
    "worker (the route's head runs here) or relayed over the network",
    ["source"],
)
_FROM_HERE, _FROM_NETWORK = TOKENS_PASSED.labels("here"), TOKENS_PASSED.labels("network")

STATUS = {
    errors.BadInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotHosted: grpc.StatusCode.NOT_FOUND,
    errors.StaleEpoch: grpc.StatusCode.FAILED_PRECONDITION,
    errors.OutOfOrder: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Exhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Duplicate: grpc.StatusCode.ALREADY_EXISTS,
    errors.LoadFailed: grpc.StatusCode.FAILED_PRECONDITION,
    errors.MigrationFailed: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotTrusted: grpc.StatusCode.PERMISSION_DENIED,
}


_ADDRESS = re.compile(r"(?:[A-Za-z0-9_.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):(\d{1,5})")


def _valid_address(address: str) -> bool:
    """host:port or [v6]:port, the form routes carry; anything else would fail in the
    channel with an unhelpful UNKNOWN."""
    match = _ADDRESS.fullmatch(address)
    return match is not None and 0 < int(match.group(1)) < 65536


def _add(assembler: Assembler, chunk) -> bool:
    """One more chunk of an activation; a malformed one is the caller's error."""
    try:
        return assembler.add(chunk)
    except TensorError as exc:
        raise errors.BadInput(str(exc)) from None


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


def _refusal(exc: errors.WorkerError | HopError | TimeoutError) -> tuple[grpc.StatusCode, str]:
    """The status a Forward stream ends with: a downstream hop's unchanged, an idle
    session's DEADLINE_EXCEEDED, else this worker's own refusal."""
    if isinstance(exc, HopError):
        return exc.code, exc.details
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
    return status_of(exc), str(exc)


def status_of(exc: errors.WorkerError) -> grpc.StatusCode:
    for cls, code in STATUS.items():
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.INTERNAL


class ForwardHandler:
    """Runs the Forward stream of one session on this hop."""

    def __init__(
        self,
        hosting: Hosting,
        sessions: SessionTable,
        channels: Channels,
        compute: Callable[[Callable[[], Any], str, int], Awaitable[Any]],
        chunk_bytes: int,
        migrator: Migrator,
        *,
        trusted: bool = False,
        passive: PassiveLinks | None = None,
        node_id: str = "",
    ) -> None:
        #: Started with --trusted: may run privacy-critical units.
        self.trusted = trusted
        self.hosting = hosting
        self.sessions = sessions
        self.channels = channels
        self.compute = compute
        self.chunk_bytes = chunk_bytes
        self.migrator = migrator
        #: Bytes and seconds of the activations sent on, for the agent's link estimates.
        self.passive = passive or PassiveLinks()
        #: This worker's node id: a route whose last hop is here has its head here
        #: ("": never take tokens from here, --no-local-tokens).
        self.node_id = node_id
        #: Tokens sampled here for a session whose first segment also runs here.
        self.local_tokens = LocalTokens()

    async def _next(
        self, requests: AsyncIterator[worker_pb2.ForwardRequest]
    ) -> worker_pb2.ForwardRequest | None:
        timeout = self.sessions.limits.idle_timeout_s
        try:
            async with asyncio.timeout(timeout):  # no extra task per message, unlike wait_for
                return await anext(requests)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise TimeoutError(
                f"no request for {timeout:g} s; the session is closed and its memory freed"
            ) from None

    async def run(
        self, requests: AsyncIterator[worker_pb2.ForwardRequest], context: grpc.aio.ServicerContext
    ) -> None:
        session: Session | None = None
        downstream: Downstream | None = None
        replies = Replies(context)
        try:
            first = await self._next(requests)
            if first is None:
                return
            if not first.HasField("open"):
                raise errors.NotHosted("unknown session: a Forward stream must start with `open`")
            session, downstream = await self._open(first.open)
            await replies.send(
                worker_pb2.ForwardResponse(
                    opened=worker_pb2.SessionOpened(session_id=session.session_id, epoch=session.hosted.epoch)
                )
            )
            server_loop = first.open.server_loop and session.hosted.generative
            request: worker_pb2.ForwardRequest | None = None
            while True:
                if request is None:
                    request = await self._next(requests)
                    if request is None or request.HasField("close"):
                        await replies.flush()
                        return
                token = None
                async for reply in self._step(session, downstream, request, requests):
                    if reply.HasField("token"):
                        token = reply.token
                    await replies.send(reply)
                request = fed_back(session, request, token) if server_loop else None
        except (errors.WorkerError, HopError, TimeoutError) as exc:
            await replies.settle()
            await context.abort(*_refusal(exc))
        finally:
            replies.discard()
            if session is not None:
                self.sessions.close(session)
            if downstream is not None:
                await downstream.close()

    async def _open(self, request: worker_pb2.OpenSession) -> tuple[Session, Downstream | None]:
        if not request.session_id or not request.deployment:
            raise errors.BadInput("open needs a session_id and a deployment")
        if request.migrate_from and not request.migrate_epoch < request.epoch:
            raise errors.BadInput(
                f"a session migrates to a newer epoch: from {request.migrate_epoch} to {request.epoch}"
            )
        # Whatever path loaded the segment, an untrusted worker never runs critical units:
        # the embedding (unit 0) is refused before any lookup, the rest once the segment
        # (its private depth, its head) is known.
        self._check_trusted(request, request.deployment, request.units.start, request.units.end, 0, False)
        hosted = self.hosting.for_session(
            request.deployment, request.epoch, request.units.start, request.units.end
        )
        self._check_trusted(
            request,
            hosted.deployment,
            hosted.start,
            hosted.end,
            hosted.private_depth,
            hosted.segment.has_head,
        )
        sampler = None
        if hosted.segment.has_head and hosted.generative:
            params = request.sampling
            try:
                sampler = Sampler(
                    temperature=params.temperature,
                    top_k=params.top_k,
                    top_p=params.top_p,
                    seed=params.seed,
                    stop_token_ids=frozenset(params.stop_token_ids),
                    max_new_tokens=params.max_new_tokens,
                )
            except ValueError as exc:
                raise errors.BadInput(str(exc)) from None
        session = Session(
            session_id=request.session_id,
            hosted=hosted,
            state=hosted.segment.new_state(),
            sampler=sampler,
            return_logits=request.return_logits,
            next_step=request.start_step,
            generated=request.generated,
        )
        self.sessions.open(session)
        downstream = None
        try:
            if request.migrate_from:  # pull this hop's cache while the next hop pulls its own
                opening = [self.migrator.pull(session, request)]
                if not hosted.segment.has_head:
                    opening.append(self._open_downstream(request, hosted))
                results = await asyncio.gather(*opening, return_exceptions=True)
                if len(results) > 1 and not isinstance(results[1], BaseException):
                    downstream = results[1]
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            elif not hosted.segment.has_head:
                downstream = await self._open_downstream(request, hosted)
        except BaseException:
            self.sessions.close(session)
            if downstream is not None:
                await downstream.close()
            raise
        return session, downstream

    def _check_trusted(self, request: worker_pb2.OpenSession, *units) -> None:
        try:
            check_trusted(self.trusted, *units)
        except errors.NotTrusted as exc:
            log.warning("session %r refused: %s", request.session_id[:64], exc)
            raise

    async def _open_downstream(self, request: worker_pb2.OpenSession, hosted: Hosted) -> Downstream:
        if not request.downstream:
            raise errors.BadInput(
                f"units [{hosted.start}, {hosted.end}) need a next hop, but the route ends here"
            )
        hop = request.downstream[0]
        if not _valid_address(hop.address):
            raise errors.BadInput(f"next hop address {hop.address[:128]!r} is not host:port")
        if hop.units.start != hosted.end:
            raise errors.BadInput(f"next hop starts at unit {hop.units.start}, this hop ends at {hosted.end}")
        downstream = Downstream(
            self.channels.stub(hop.address), hop.address, (hop.units.start, hop.units.end), hop.node_id
        )
        opened = worker_pb2.OpenSession()
        opened.CopyFrom(request)
        opened.units.CopyFrom(hop.units)
        del opened.downstream[:]
        opened.downstream.extend(request.downstream[1:])
        try:
            await downstream.write(worker_pb2.ForwardRequest(open=opened))
            reply = await downstream.read()
        except BaseException:
            await downstream.close()
            raise
        if not reply.HasField("opened"):
            await downstream.close()
            raise HopError(grpc.StatusCode.INTERNAL, f"next hop {hop.address} did not confirm the session")
        # Tokens only, so a step's replies are its token alone: logits travel the network way.
        head = request.downstream[-1]
        downstream.local_head = (
            hosted.generative
            and not request.return_logits
            and bool(self.node_id)
            and head.node_id == self.node_id
        )
        return downstream

    async def _step(
        self,
        session: Session,
        downstream: Downstream | None,
        request: worker_pb2.ForwardRequest,
        requests: AsyncIterator[worker_pb2.ForwardRequest],
    ) -> AsyncIterator[worker_pb2.ForwardResponse]:
        hosted = session.hosted
        assembler: Assembler | None = None
        ids = mask = None
        if request.HasField("tokens"):
            ids, mask = token_input(hosted, request.tokens)
            step, tokens, rows = request.tokens.step, ids.shape[1], ids.shape[0]
        elif request.HasField("activation"):
            assembler = Assembler()
            chunk = request.activation
            while not _add(assembler, chunk):
                more = await self._next(requests)
                if more is None or not more.HasField("activation"):
                    raise errors.BadInput("tensor truncated: the stream moved on before its last chunk")
                chunk = more.activation
            header = assembler.header
            if header is None:  # _add refuses a first chunk without one; kept for type narrowing
                raise errors.BadInput("no tensor header")
            # A malformed shape counts 0 here and is refused with the full check in activation().
            step, tokens = header.step, header.shape[1] if len(header.shape) == 3 else 0
            rows = header.shape[0] if len(header.shape) == 3 else 0
        else:
            raise errors.BadInput("expected tokens or an activation")
        self.sessions.begin_step(session, step, tokens if hosted.generative else 0)

        def work() -> list[Any]:
            """Everything this step does with tensors, in one call: decoding the activation,
            the segment, encoding what goes on or sampling. ``compute`` runs it on the
            thread with the process's OpenMP team, or inline (see core/threads.py), and
            a step costs one thread handoff at most."""
            hidden, step_mask = None, mask
            if assembler is not None:
                _, hidden, step_mask = activation(hosted, assembler, hosted.epoch)
            output = hosted.segment.step(
                session.state, input_ids=ids, hidden=hidden, attention_mask=step_mask
            )
            if downstream is not None:
                return encode(
                    output.hidden,
                    session_id=session.session_id,
                    step=step,
                    epoch=hosted.epoch,
                    units=downstream.units,
                    compression=hosted.compression,
                    attention_mask=[] if step_mask is None else step_mask.flatten().tolist(),
                    chunk_bytes=self.chunk_bytes,
                )
            if hosted.generative:
                return self._sample(session, step, output.logits[0])
            return [
                worker_pb2.ForwardResponse(result=chunk)
                for chunk in encode(
                    output.embeddings.float(),
                    session_id=session.session_id,
                    step=step,
                    epoch=hosted.epoch,
                    chunk_bytes=self.chunk_bytes,
                )
            ]

        produced = await self.compute(work, f"{hosted.start}-{hosted.end}", rows * tokens)
        if downstream is not None:
            waiter = None
            if downstream.local_head:  # before the write: the token may be sampled before it returns
                waiter = self.local_tokens.expect(session.session_id, hosted.epoch, step)
            try:
                started = time.perf_counter()
                for chunk in produced:
                    await downstream.write(worker_pb2.ForwardRequest(activation=chunk))
                sent = sum(len(c.data) for c in produced)
                self.passive.record(downstream.node_id, sent, time.perf_counter() - started)
                async for reply in self._relay(downstream, hosted, waiter):
                    yield reply
            finally:
                if waiter is not None:
                    self.local_tokens.forget(session.session_id, hosted.epoch, step)
        else:
            for reply in produced:
                if reply.HasField("token"):
                    self.local_tokens.deliver(session.session_id, hosted.epoch, step, reply.token)
                yield reply
        self.sessions.end_step(session)

    async def _relay(
        self, downstream: Downstream, hosted: Hosted, waiter: asyncio.Future | None = None
    ) -> AsyncIterator[worker_pb2.ForwardResponse]:
        """Pass the next hop's replies for one step back up, through the step's last one.

        With ``waiter`` (the head runs here, see core/shortcut.py) the step's token is
        whichever comes first, from here or over the network; the other copy is dropped."""
        while True:
            reply = await (downstream.read() if waiter is None else downstream.read_or(waiter))
            source = _FROM_NETWORK
            if reply is None:  # sampled here first
                reply = worker_pb2.ForwardResponse(token=waiter.result())
                downstream.delivered_step = reply.token.step
                source = _FROM_HERE
            elif reply.HasField("token") and reply.token.step <= downstream.delivered_step:
                downstream.relayed_epoch = max(downstream.relayed_epoch, reply.token.latest_epoch)
                continue  # the copy of a token taken from here
            if reply.HasField("token"):
                latest = max(self.hosting.latest_epoch(hosted.deployment), downstream.relayed_epoch)
                if latest > reply.token.latest_epoch:
                    reply.token.latest_epoch = latest
                source.inc()
                yield reply
                return
            yield reply
            if not hosted.generative and reply.HasField("result") and reply.result.last:
                return

    def _sample(self, session: Session, step: int, logits) -> list[worker_pb2.ForwardResponse]:
        replies = []
        if session.return_logits:
            replies += [
                worker_pb2.ForwardResponse(result=chunk)
                for chunk in encode(
                    logits.float(),
                    session_id=session.session_id,
                    step=step,
                    epoch=session.hosted.epoch,
                    chunk_bytes=self.chunk_bytes,
                )
            ]
        if session.sampler is None:  # only head segments of generative models get here
            raise errors.BadInput("this session does not generate")
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
                    latest_epoch=self.hosting.latest_epoch(session.hosted.deployment),
                )
            )
        )
        return replies
