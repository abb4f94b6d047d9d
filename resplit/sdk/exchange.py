"""The client side of a session, as a message exchange without transport.

Both the blocking and the asyncio client drive these: they send what
``opening()`` returns, feed every reply to ``handle()``, and send what it
returns, until it says the session is done. One place decides what a step
is, so the two clients cannot drift apart.

A session can also leave its route at a token boundary: ``moved()`` says a
hop reported a newer epoch, ``migrate(route)`` opens the session there with
its cache pulled from the old hops, and ``replay(route)`` rebuilds it from
the token history (the fallback when the old hops are gone). All three keep
the step count and the sampler's position, so the tokens do not change.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..v1 import common_pb2, worker_pb2

if TYPE_CHECKING:  # torch comes with the first logits or embeddings, not with the SDK
    import torch

    from ..core.tensors import Assembler


def _new_assembler() -> Assembler:
    from ..core.tensors import Assembler

    return Assembler()


@dataclass
class Sampling:
    """How the head chooses tokens. temperature 0 = greedy."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 0.0
    seed: int = 0
    stop_token_ids: Sequence[int] = ()

    def to_proto(self) -> worker_pb2.SamplingParams:
        return worker_pb2.SamplingParams(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            seed=self.seed,
            stop_token_ids=list(self.stop_token_ids),
            max_new_tokens=self.max_new_tokens,
        )


@dataclass
class GeneratedToken:
    """One generated token as the client sees it."""

    token_id: int
    step: int
    logprob: float
    finished: bool
    finish_reason: str = ""
    #: Incremental text (filled by the client when it has a tokenizer).
    text: str = ""
    #: Raw head logits for this step, when requested.
    logits: torch.Tensor | None = None
    #: Seconds from sending the step to receiving its token.
    latency_s: float = 0.0
    #: The plan epoch the token was computed under (it changes when the session moves).
    epoch: int = 0


class ExchangeError(RuntimeError):
    """The workers answered something the protocol does not allow."""


def new_session_id() -> str:
    return uuid.uuid4().hex


def _open(route: common_pb2.Route, session_id: str, task: int, **extra) -> worker_pb2.ForwardRequest:
    if not route.hops:
        raise ExchangeError(f"route of {route.deployment!r} has no hops")
    first = route.hops[0]
    return worker_pb2.ForwardRequest(
        open=worker_pb2.OpenSession(
            session_id=session_id,
            deployment=route.deployment,
            epoch=route.epoch,
            task=task,
            units=first.units,
            downstream=list(route.hops[1:]),
            **extra,
        )
    )


@dataclass
class GenerateExchange:
    route: common_pb2.Route
    prompt_ids: Sequence[int]
    sampling: Sampling
    return_logits: bool = False
    #: The first hop runs the decode loop (one round trip less per token); False:
    #: the client sends every step, so a consumer that pauses pauses the session.
    server_loop: bool = True
    session_id: str = field(default_factory=new_session_id)
    step: int = 0
    #: Tokens generated so far (the last one is not yet in any cache).
    generated: list[int] = field(default_factory=list)
    #: The newest epoch a hop reported with the last token.
    latest_epoch: int = 0
    #: That epoch's route, when the first hop sent it with the token.
    pushed_route: common_pb2.Route | None = None
    #: How many times the session crossed to a new epoch, by cache move and by replay.
    migrations: int = 0
    replays: int = 0
    #: Why each recovery happened ("UNAVAILABLE: ..."), oldest first.
    recovered_from: list[str] = field(default_factory=list)
    #: When the session began (time.monotonic()): it recovers until timeout_s after this.
    started: float = field(default_factory=time.monotonic)
    #: A first hop admitted it once: a move or a replay is not a new session for the
    #: client's throttle (sdk/throttle.py), which never refuses it.
    admitted: bool = False
    _logits: Assembler | None = None
    _pending_logits: torch.Tensor | None = None

    def _open(self, **resume) -> worker_pb2.ForwardRequest:
        return _open(
            self.route,
            self.session_id,
            worker_pb2.TASK_GENERATE,
            sampling=self.sampling.to_proto(),
            return_logits=self.return_logits,
            server_loop=self.server_loop,
            **resume,
        )

    def opening(self) -> list[worker_pb2.ForwardRequest]:
        if not self.prompt_ids:
            raise ExchangeError("the prompt is empty")
        tokens = worker_pb2.TokenInput(step=0, input_ids=list(self.prompt_ids), rows=1)
        return [self._open(), worker_pb2.ForwardRequest(tokens=tokens)]

    def moved(self) -> bool:
        """The last token reports a newer epoch than the one this session runs on (the
        first hop's server loop stops at exactly such a token, so the session can move)."""
        return self.latest_epoch > self.route.epoch

    def move(self, route: common_pb2.Route, move_cache: bool = True) -> list[worker_pb2.ForwardRequest]:
        """Cross to ``route`` at this token boundary: with the cache pulled (``move_cache``)
        unless the weights changed since this session's epoch (a layer swap: its cache of
        the changed units and every later one is invalid), else by replaying its history."""
        changed = route.HasField("layers") and route.layers.epoch > self.route.epoch
        return self.migrate(route) if move_cache and not changed else self.replay(route)

    def migrate(self, route: common_pb2.Route) -> list[worker_pb2.ForwardRequest]:
        """Open on ``route`` at this token boundary, pulling the cache from the old hops."""
        if not self.generated:
            return self.replay(route)
        old = self.route
        self.route = route
        self.migrations += 1
        opened = self._open(
            start_step=self.step,
            generated=len(self.generated),
            context_tokens=len(self.prompt_ids) + len(self.generated) - 1,
            migrate_from=list(old.hops),
            migrate_epoch=old.epoch,
        )
        nxt = worker_pb2.TokenInput(step=self.step, input_ids=[self.generated[-1]], rows=1)
        return [opened, worker_pb2.ForwardRequest(tokens=nxt)]

    def replay(self, route: common_pb2.Route) -> list[worker_pb2.ForwardRequest]:
        """Rebuild the session on ``route`` from its token history (no cache needed)."""
        self.route = route
        self.session_id = new_session_id()
        self._logits, self._pending_logits = None, None
        if not self.generated:
            return self.opening()
        self.replays += 1
        opened = self._open(start_step=self.step, generated=len(self.generated))
        history = [*self.prompt_ids, *self.generated]
        tokens = worker_pb2.TokenInput(step=self.step, input_ids=history, rows=1)
        return [opened, worker_pb2.ForwardRequest(tokens=tokens)]

    def closing(self) -> worker_pb2.ForwardRequest:
        return worker_pb2.ForwardRequest(close=worker_pb2.CloseSession(session_id=self.session_id))

    def handle(
        self, reply: worker_pb2.ForwardResponse
    ) -> tuple[GeneratedToken | None, list[worker_pb2.ForwardRequest], bool]:
        """(token produced, requests to send next, session done)."""
        if reply.HasField("opened"):
            return None, [], False
        if reply.HasField("result"):
            if self._logits is None:
                self._logits = _new_assembler()
            if self._logits.add(reply.result):
                self._pending_logits = self._logits.tensor().clone()
                self._logits = None
            return None, [], False
        if not reply.HasField("token"):
            raise ExchangeError(f"unexpected reply {reply.WhichOneof('kind')!r}")
        out = reply.token
        if out.step != self.step:
            raise ExchangeError(f"token for step {out.step} while at step {self.step}")
        token = GeneratedToken(
            token_id=int(out.token_id),
            step=int(out.step),
            logprob=out.logprob,
            finished=out.finished,
            finish_reason=out.finish_reason,
            logits=self._pending_logits,
            epoch=self.route.epoch,
        )
        self._pending_logits = None
        self.latest_epoch = out.latest_epoch
        if out.HasField("route"):
            self.pushed_route = out.route
        self.generated.append(token.token_id)
        if out.finished:
            return token, [self.closing()], True
        self.step += 1
        if self.server_loop and not self.moved():
            return token, [], False  # the first hop runs this step itself
        nxt = worker_pb2.TokenInput(step=self.step, input_ids=[token.token_id], rows=1)
        return token, [worker_pb2.ForwardRequest(tokens=nxt)], False


@dataclass
class EmbedExchange:
    route: common_pb2.Route
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    session_id: str = field(default_factory=new_session_id)
    result: torch.Tensor | None = None
    #: Why each recovery happened ("UNAVAILABLE: ..."), oldest first.
    recovered_from: list[str] = field(default_factory=list)
    #: When the session began (time.monotonic()): it recovers until timeout_s after this.
    started: float = field(default_factory=time.monotonic)
    #: A first hop admitted it once: a move or a replay is not a new session for the
    #: client's throttle (sdk/throttle.py), which never refuses it.
    admitted: bool = False
    _assembler: Assembler = field(default_factory=_new_assembler)

    def opening(self) -> list[worker_pb2.ForwardRequest]:
        rows = int(self.input_ids.shape[0])
        tokens = worker_pb2.TokenInput(
            step=0,
            input_ids=self.input_ids.flatten().tolist(),
            attention_mask=self.attention_mask.flatten().tolist(),
            rows=rows,
        )
        return [
            _open(self.route, self.session_id, worker_pb2.TASK_EMBED),
            worker_pb2.ForwardRequest(tokens=tokens),
        ]

    def moved(self) -> bool:
        return False  # one step: nothing to carry across epochs

    def replay(self, route: common_pb2.Route) -> list[worker_pb2.ForwardRequest]:
        self.route, self.session_id, self._assembler = route, new_session_id(), _new_assembler()
        return self.opening()

    def handle(self, reply: worker_pb2.ForwardResponse) -> tuple[None, list[worker_pb2.ForwardRequest], bool]:
        if reply.HasField("opened"):
            return None, [], False
        if not reply.HasField("result"):
            raise ExchangeError(f"unexpected reply {reply.WhichOneof('kind')!r} to an embedding request")
        if self._assembler.add(reply.result):
            self.result = self._assembler.tensor().clone()
            close = worker_pb2.ForwardRequest(close=worker_pb2.CloseSession(session_id=self.session_id))
            return None, [close], True
        return None, [], False
