"""The data plane's streams: one Forward stream per session per hop, the lanes, and the ring.

A token's path (the ring): the client sends token ids to the first hop; each
hop runs its segment (core/step.py) and sends the activation to the next hop
on the lane between the two workers (lanes.py: what one batched step produced
leaves as one message), and moves on; the head hop samples the token and
returns it straight to the session's first hop, in-process when the first hop
runs in the same worker, else on the lane to it (core/ring.py). The first
hop passes it to the client and, with ``server_loop``, runs the next step
with it at once. A session's Forward stream to each hop opens it there (the
hop answers with the key its lane rows must carry) and ends it with a status.
Middle hops never wait for a token; a later hop's refusal or
loss ends its Forward stream with a status, which each hop passes up at once
(core/inbox.py), prefixed with where it happened. Every refusal aborts only
this session's stream.

A session may open mid-generation on a new epoch (``start_step`` > 0): with
``migrate_from`` its cache is pulled from the old route first (see
migration.py), otherwise the next step replays the whole token history. A
token carries the newest epoch the head and first hop know of, and the first
hop adds that epoch's route when its worker knows it: that is how a client
learns, at a token boundary, that its route has changed and where it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from resplit.core.tensors import Assembler
from resplit.models.sampling import Sampler
from resplit.rpc.limits import FOLLOWING_REQUEST_WAIT_S
from resplit.v1 import common_pb2, worker_pb2

from .core import errors, step
from .core.batch import Batcher
from .core.hosting import Hosted, Hosting
from .core.inbox import ENDED, Inbox
from .core.latency import FirstHopLatency
from .core.passive import PassiveLinks
from .core.privacy import check_trusted
from .core.ring import HopTable, RingTable
from .core.sessions import Session, SessionTable
from .lanes import Lanes, receive
from .migration import Migrator
from .replies import ReaderStalled, Replies
from .statuses import HopError, refusal
from .streams import Channels, Downstream, ReturnLink

log = logging.getLogger(__name__)
TOKENS_RETURNED = Counter(
    "resplit_worker_tokens_returned_total",
    "Tokens a head hop returned to its session's first hop, by link: in this worker (local) "
    "or on the lane to the first hop's worker (network)",
    ["link"],
)
_LOCAL, _NETWORK = TOKENS_RETURNED.labels("local"), TOKENS_RETURNED.labels("network")
BATCH_ROWS = Histogram(
    "resplit_worker_batch_rows",
    "Sessions' one-token steps run as one batched forward (1: a step alone)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
BATCH_GATHER = Histogram(
    "resplit_worker_batch_gather_seconds",
    "How long a batch waited for the sessions that stepped on its segment lately to come back "
    "before it ran (--batch-gather-ms; 0: none was missing)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2),
)
PREFILL_CHUNKS = Histogram(
    "resplit_worker_prefill_chunks",
    "Chunks a prompt longer than --prefill-chunk-tokens was cut into on this worker",
    buckets=(2, 4, 8, 16, 32, 64, 128),
)

#: With chunked prefill off, prompts up to this many tokens still share a batched forward.
PROMPT_TOKENS_UNCHUNKED = 256

_ADDRESS = re.compile(r"(?:[A-Za-z0-9_.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):(\d{1,5})")

Compute = Callable[..., Awaitable[Any]]  # compute.Compute: (work, segment, tokens, session_steps=1)


class Closed(Exception):
    """The client closed its session (or went away) while a step was in flight."""


def _check_address(address: str, what: str) -> None:
    """host:port or [v6]:port, the form routes carry; anything else would fail in the
    channel with an unhelpful UNKNOWN."""
    match = _ADDRESS.fullmatch(address)
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise errors.BadInput(f"{what} address {address[:128]!r} is not host:port")


@dataclass
class OpenHop:
    """One session on this hop, and its streams to other hops."""

    session: Session
    #: This hop answers the client (the open message came without a ring).
    first: bool
    inbox: Inbox[Any, Any]
    downstream: Downstream | None = None
    #: Head hop past the first: where the session's replies go.
    ring: ReturnLink | None = None
    #: A hop past the first: the key its lane rows carry (drawn here, sent with the confirmation).
    lane_key: str = ""


async def _pump(requests: AsyncIterator[worker_pb2.ForwardRequest], inbox: Inbox[Any, Any]) -> None:
    """The caller's requests into the hop's inbox, then their end (also when the stream
    breaks: the hop then ends the session instead of waiting out its idle timeout)."""
    try:
        async for request in requests:
            await inbox.offer(request)
    finally:
        inbox.end()


async def _take_following(inbox: Inbox[Any, Any]) -> None:
    """Wait a moment for what the caller wrote right after its open message (the SDK's first
    step): a status sent while it still writes is lost to it (resplit/rpc/limits.py
    take_opening), and a session refused at its open would reach it as a broken stream."""
    with contextlib.suppress(Exception):  # whatever it is, the refusal stands
        await inbox.get(FOLLOWING_REQUEST_WAIT_S, "the step after the open message")


class Forwarding:
    """Runs the Forward streams (one per session) and the lanes of this worker."""

    def __init__(
        self,
        hosting: Hosting,
        sessions: SessionTable,
        channels: Channels,
        compute: Compute,
        chunk_bytes: int,
        migrator: Migrator,
        *,
        trusted: bool = False,
        passive: PassiveLinks | None = None,
        node: common_pb2.Node | None = None,
        max_batch: int = 64,
        prefill_chunk_tokens: int = 0,
        batch_gather_ms: float = 200.0,
        max_queued_requests: int = 64,
        stalled_write_timeout_s: float = 0.0,
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
        #: This worker as other hops reach it: where a head hop returns its tokens.
        self.node = node or common_pb2.Node()
        #: The sessions whose first hop runs here, waiting for their head hop's replies.
        self.ring = RingTable()
        #: The hops after the first: where the lanes' activation rows land, by a key each
        #: hop drew and returned with the session's confirmation.
        self.hops = HopTable()
        #: This worker's lanes to the others: every session's activations and replies.
        self.lanes = Lanes(channels.stub, chunk_bytes)
        #: The readers of the peers' lanes to this worker, ended at shutdown.
        self._receiving: set[asyncio.Future[Any]] = set()
        #: Decode steps of many sessions on one segment, run as one forward (core/batch.py).
        #: A prompt of at most this many tokens joins a batched forward whole (a longer one
        #: runs in chunks of prefill_chunk_tokens, core/step.py); a batch takes prompts up
        #: to this many new tokens in all (and max_batch decode steps).
        self.prompt_tokens = prefill_chunk_tokens or PROMPT_TOKENS_UNCHUNKED
        self.batcher: Batcher[step.Row] = Batcher(
            self._run_batch,
            max_batch,
            batch_gather_ms / 1000,
            max(max_batch, self.prompt_tokens),
            on_gather=BATCH_GATHER.observe,
        )
        #: Prompts longer than this run chunk by chunk (core/step.py Prefill); 0: whole.
        self.prefill_chunk_tokens = prefill_chunk_tokens
        #: TTFT / TPOT / request latency of the sessions answered here (core/latency.py).
        self.latency = FirstHopLatency()
        #: A session's requests read ahead of its steps (core/inbox.py ``offer``).
        self.max_queued_requests = max_queued_requests
        #: A reply unsent this long (its caller stopped reading) cuts the session off (replies.py).
        self.stalled_write_timeout_s = stalled_write_timeout_s

    # -- the Forward stream ------------------------------------------------------
    async def run(
        self, requests: AsyncIterator[worker_pb2.ForwardRequest], context: grpc.aio.ServicerContext
    ) -> None:
        inbox: Inbox[Any, Any] = Inbox(self.max_queued_requests)
        pump = asyncio.create_task(_pump(requests, inbox))
        hop: OpenHop | None = None
        replies = Replies(context, self.stalled_write_timeout_s)
        try:
            first = await self._request(inbox)
            if first is None:
                return
            if not first.HasField("open"):
                raise errors.NotHosted("unknown session: a Forward stream must start with `open`")
            hop = await self._open(first.open, inbox)
            hosted = hop.session.hosted
            if not hop.first:
                hop.lane_key = self.hops.open(*_slot(hop.session), inbox).key
            await replies.send(
                worker_pb2.ForwardResponse(
                    opened=worker_pb2.SessionOpened(
                        session_id=hop.session.session_id, epoch=hosted.epoch, lane_key=hop.lane_key
                    )
                )
            )
            server_loop = first.open.server_loop and hosted.generative and hop.first
            request: worker_pb2.ForwardRequest | None = None
            finished = False
            while True:
                if request is None:
                    # After its last token a session only waits for the caller's close: one that
                    # never comes (a caller that stopped reading) frees the slot after the stall
                    # timeout, not the idle timeout.
                    request = await self._request(inbox, self._closing_s if finished else None)
                    if request is None or request.HasField("close"):
                        await replies.flush()
                        return
                token = None
                began = time.perf_counter()
                async for reply in self._step(hop, request):
                    if reply.HasField("token"):
                        token = reply.token
                    await replies.send(reply)
                if hop.first:
                    self._observe(hop.session, request, began)
                finished = token is not None and token.finished
                if finished:  # no step of it comes back: no batch waits for it while it closes
                    self.batcher.leave(hop.session.key)
                request = step.fed_back(hop.session, request, token) if server_loop else None
        except Closed:
            await replies.settle()
        except ReaderStalled as exc:
            # A status would queue behind the unsent replies and never leave either: the call
            # is dropped instead (gRPC resets the stream once the handler ends unanswered).
            log.warning("session %s cut off: %s", hop.session.session_id[:64] if hop else "?", exc)
            raise asyncio.CancelledError(str(exc)) from None
        except (errors.WorkerError, HopError, TimeoutError) as exc:
            if hop is None:  # refused at its open: the caller's first step may still be on its way
                await _take_following(inbox)
            await replies.settle()
            await context.abort(*refusal(exc))
        except Exception as exc:  # a bug here: this session ends with a clear status, the rest go on
            log.exception("session stream failed")
            await replies.settle()
            await context.abort(grpc.StatusCode.INTERNAL, f"worker error: {type(exc).__name__}: {exc}"[:1000])
        finally:
            pump.cancel()
            replies.discard()
            if hop is not None:
                await self._close(hop)

    def _observe(self, session: Session, request: worker_pb2.ForwardRequest, began: float) -> None:
        """A step this first hop answered: a latency sample (core/latency.py)."""
        prompt = request.HasField("tokens") and request.tokens.step == 0
        ms = (time.perf_counter() - began) * 1000
        hosted = session.hosted
        self.latency.step(hosted.deployment, hosted.generative, prompt, ms, time.time(), session.session_id)

    @property
    def _closing_s(self) -> float | None:
        """How long a finished session waits for its caller's close (None: the idle timeout)."""
        return self.stalled_write_timeout_s or None

    async def _request(
        self, inbox: Inbox[Any, Any], timeout_s: float | None = None
    ) -> worker_pb2.ForwardRequest | None:
        """The caller's next request (None: it ended the stream) within ``timeout_s`` (None:
        the idle timeout)."""
        while True:
            item = await inbox.get(timeout_s or self.sessions.limits.idle_timeout_s, "request")
            if item is ENDED:
                return None
            if isinstance(item, worker_pb2.ForwardRequest):
                return item
            log.debug("a reply came back between steps; dropped")

    async def _open(self, request: worker_pb2.OpenSession, inbox: Inbox[Any, Any]) -> OpenHop:
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
        session = Session(
            session_id=request.session_id,
            hosted=hosted,
            state=hosted.segment.new_state(),
            sampler=_sampler(request.sampling) if hosted.segment.has_head and hosted.generative else None,
            return_logits=request.return_logits,
            next_step=request.start_step,
            generated=request.generated,
            max_new_tokens=request.sampling.max_new_tokens if hosted.generative else 1,
        )
        self.sessions.open(session)
        hop = OpenHop(session, first=not request.HasField("ring"), inbox=inbox)
        try:
            opening = []
            if request.migrate_from:  # pull this hop's cache while the next hop pulls its own
                opening.append(self.migrator.pull(session, request))
            if not hosted.segment.has_head:
                opening.append(self._open_downstream(hop, request, hosted))
            elif not hop.first:
                hop.ring = self._return_link(request, hosted)
            outcomes = await asyncio.gather(*opening, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        except BaseException:
            await self._close(hop)
            raise
        if hop.downstream is not None:
            hop.downstream.watch(inbox)
        return hop

    def _check_trusted(self, request: worker_pb2.OpenSession, *units) -> None:
        try:
            check_trusted(self.trusted, *units)
        except errors.NotTrusted as exc:
            log.warning("session %r refused: %s", request.session_id[:64], exc)
            raise

    async def _open_downstream(self, hop: OpenHop, request: worker_pb2.OpenSession, hosted: Hosted) -> None:
        if not request.downstream:
            raise errors.BadInput(
                f"units [{hosted.start}, {hosted.end}) need a next hop, but the route ends here"
            )
        next_hop = request.downstream[0]
        _check_address(next_hop.address, "next hop")
        if next_hop.units.start != hosted.end:
            raise errors.BadInput(
                f"next hop starts at unit {next_hop.units.start}, this hop ends at {hosted.end}"
            )
        opened = worker_pb2.OpenSession()
        opened.CopyFrom(request)
        opened.units.CopyFrom(next_hop.units)
        del opened.downstream[:]
        opened.downstream.extend(request.downstream[1:])
        if hop.first:  # the ring closes here: the head hop returns the session's replies to this worker
            slot = self.ring.open(request.session_id, hosted.deployment, hosted.epoch, hop.inbox)
            opened.ring.CopyFrom(common_pb2.Hop(node_id=self.node.node_id, address=self.node.address))
            opened.ring_key = slot.key
        units = (next_hop.units.start, next_hop.units.end)
        hop.downstream = Downstream(
            self.channels.stub(next_hop.address),
            next_hop.address,
            units,
            next_hop.node_id,
            request.session_id,
            lanes=self.lanes,
            slot=(request.session_id, hosted.deployment, hosted.epoch),
        )
        await hop.downstream.open(worker_pb2.ForwardRequest(open=opened))

    def _return_link(self, request: worker_pb2.OpenSession, hosted: Hosted) -> ReturnLink:
        """The head hop's way back to the first hop: in-process when the first hop's slot
        is in this worker, else the lane to its address."""
        identity = worker_pb2.LaneRow(
            session_id=request.session_id,
            deployment=hosted.deployment,
            epoch=hosted.epoch,
            key=request.ring_key,
        )
        address = request.ring.address
        try:
            slot = self.ring.find(request.session_id, hosted.deployment, hosted.epoch, request.ring_key)
        except errors.NotHosted:
            slot = None
        if slot is None:
            _check_address(address, "ring (first hop)")
        return ReturnLink(identity, address, slot, self.lanes)

    async def _close(self, hop: OpenHop) -> None:
        session = hop.session
        self.sessions.close(session)
        self.batcher.leave(session.key)
        if hop.first:
            self.ring.close(*_slot(session))
        elif hop.lane_key:
            self.hops.close(hop.lane_key)
        if hop.downstream is not None:
            await hop.downstream.close()

    # -- one step ----------------------------------------------------------------
    async def _step(self, hop: OpenHop, request: worker_pb2.ForwardRequest) -> AsyncIterator[Any]:
        """Run one step: forward its activation, or return or yield its replies."""
        session, downstream = hop.session, hop.downstream
        hosted = session.hosted
        given = await self._input(hop, request)
        self.sessions.begin_step(session, given.step, given.tokens if hosted.generative else 0)
        units = downstream.units if downstream is not None else None
        if step.batchable(session, given, self.prompt_tokens):
            key = (hosted.key, given.assembler is None)
            # Only a decode step's session comes back to this segment for its next step.
            member = session.key if given.tokens == 1 else None
            row = step.Row(session, given, units)
            produced = await self.batcher.submit(key, row, member, cost=given.tokens)
        elif step.chunkable(session, given, self.prefill_chunk_tokens):
            produced = await self._prefill(session, given, units)
        else:
            latest = self.hosting.epoch_for(hosted.deployment, hosted.epoch)
            produced = await self.compute(
                lambda: step.run(session, given, units, self.chunk_bytes, latest),
                f"{hosted.start}-{hosted.end}",
                given.rows * given.tokens,
                deployment=hosted.deployment,
            )
        self.sessions.end_step(session)
        if downstream is not None:
            started = time.perf_counter()
            for chunk in produced:
                await downstream.send(chunk)
            sent = sum(len(c.data) for c in produced)
            self.passive.record(downstream.node_id, sent, time.perf_counter() - started)
            if hop.first:
                async for reply in self._returned(hop):
                    yield reply
        elif hop.ring is not None:
            for reply in produced:
                if reply.HasField("token"):
                    # Counted as handed over: the first hop may have the last token, close the
                    # session and so cancel this task while the lane write still completes.
                    (_LOCAL if hop.ring.local else _NETWORK).inc()
                    if reply.token.finished:  # as on the first hop: its last step here
                        self.batcher.leave(session.key)
                await hop.ring.send(reply)
        else:
            for reply in produced:
                if reply.HasField("token"):
                    self._stamp(session, reply.token)
                yield reply

    async def _prefill(
        self, session: Session, given: step.StepInput, units: tuple[int, int] | None
    ) -> list[Any]:
        """A long prompt, one compute call per chunk (core/step.py ``Prefill``): other
        sessions' steps queue for the compute thread between two chunks."""
        hosted = session.hosted
        prefill = step.Prefill(
            session,
            given,
            self.prefill_chunk_tokens,
            units,
            self.chunk_bytes,
            self.hosting.epoch_for(hosted.deployment, hosted.epoch),
        )
        label = f"{hosted.start}-{hosted.end}"
        produced = None
        for index, tokens in enumerate(prefill.chunks):
            produced = await self.compute(
                lambda index=index: prefill.run_chunk(index), label, tokens, deployment=hosted.deployment
            )
        PREFILL_CHUNKS.observe(len(prefill.chunks))
        assert produced is not None
        return produced

    async def _run_batch(self, key: object, rows: list[step.Row]) -> list[Any]:
        """One batched forward of several sessions' steps (decode steps, prompts) on one segment."""
        hosted = rows[0].session.hosted
        latest = self.hosting.epoch_for(hosted.deployment, hosted.epoch)
        BATCH_ROWS.observe(len(rows))
        return await self.compute(
            lambda: step.run_rows(rows, self.chunk_bytes, latest),
            f"{hosted.start}-{hosted.end}",
            sum(row.given.tokens for row in rows),
            session_steps=len(rows),
            deployment=hosted.deployment,
        )

    async def _input(self, hop: OpenHop, request: worker_pb2.ForwardRequest) -> step.StepInput:
        """The step's input: token ids, or an activation read chunk by chunk."""
        if request.HasField("tokens"):
            return step.tokens_step(hop.session, request.tokens)
        if not request.HasField("activation"):
            raise errors.BadInput("expected tokens or an activation")
        assembler = Assembler()
        chunk = request.activation
        while not step.add_chunk(assembler, chunk):
            more = await self._request(hop.inbox)
            if more is None or not more.HasField("activation"):
                raise errors.BadInput("tensor truncated: the stream moved on before its last chunk")
            chunk = more.activation
        return step.activation_step(assembler)

    async def _returned(self, hop: OpenHop) -> AsyncIterator[worker_pb2.ForwardResponse]:
        """The step's replies as the head hop returns them over the ring, through its token
        (or an embedding's last chunk); a later hop's failure is raised from the inbox."""
        generative = hop.session.hosted.generative
        while True:
            item = await hop.inbox.get(self.sessions.limits.idle_timeout_s, "token from the head hop")
            if item is ENDED or (isinstance(item, worker_pb2.ForwardRequest) and item.HasField("close")):
                raise Closed
            if isinstance(item, worker_pb2.ForwardRequest):
                raise errors.BadInput("a request came before the previous step's token")
            if item.HasField("token"):
                self._stamp(hop.session, item.token)
                yield item
                return
            yield item
            if not generative and item.HasField("result") and item.result.last:
                return

    def _stamp(self, session: Session, token: worker_pb2.TokenOutput) -> None:
        """The newest epoch this worker knows, with its route when the session is behind it."""
        deployment = session.hosted.deployment
        token.latest_epoch = max(token.latest_epoch, self.hosting.epoch_for(deployment, session.hosted.epoch))
        if token.latest_epoch > session.hosted.epoch:
            route = self.hosting.route(deployment)
            if route is not None and route.epoch == token.latest_epoch:
                token.route.CopyFrom(route)

    # -- the lanes, receiving side ----------------------------------------------------
    async def receive_lane(self, messages: AsyncIterator[worker_pb2.LaneMessage]) -> worker_pb2.LaneAck:
        """Another worker's lane: activations for the sessions' hops here, replies for the
        sessions whose first hop is here (lanes.py). It reads in a task of its own, which
        :meth:`end_lanes_when_idle` cancels to answer the lane OK at shutdown (cancelling
        the RPC's own task would leave its call open until the peer closed it)."""
        reading = asyncio.ensure_future(receive(messages, self.hops, self.ring))
        self._receiving.add(reading)
        try:
            return await reading
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if reading.cancelled() and current is not None and not current.cancelling():
                return worker_pb2.LaneAck()  # ended here at shutdown, not by the peer
            raise
        finally:
            self._receiving.discard(reading)

    async def end_lanes_when_idle(self, poll_s: float = 0.05) -> None:
        """At shutdown: once no session is open here, close this worker's lanes and end its
        peers'. A lane is no RPC a client finishes: without this, gRPC's graceful stop waits
        out its whole grace for every peer's lane (5 s for each `resplit down` after a split
        generation), while the peer waits on this worker's. A session still running keeps
        its lanes until it ends or the grace does."""
        while len(self.sessions):  # noqa: ASYNC110 (once, at shutdown: no event to keep for it)
            await asyncio.sleep(poll_s)
        self.lanes.close()
        for reading in list(self._receiving):
            reading.cancel()


def _slot(session: Session) -> tuple[str, str, int]:
    """A session's place in the ring's and the lanes' tables on this hop."""
    return session.session_id, session.hosted.deployment, session.hosted.epoch


def _sampler(params: worker_pb2.SamplingParams) -> Sampler:
    try:
        return Sampler(
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            seed=params.seed,
            stop_token_ids=frozenset(params.stop_token_ids),
            max_new_tokens=params.max_new_tokens,
        )
    except ValueError as exc:
        raise errors.BadInput(str(exc)) from None
