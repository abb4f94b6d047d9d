"""The client side of a session, as a message exchange without transport.

Both the blocking and the asyncio client drive these: they send what
``opening()`` returns, feed every reply to ``handle()``, and send what it
returns, until it says the session is done. One place decides what a step
is, so the two clients cannot drift apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..core.tensors import Assembler
from ..v1 import common_pb2, worker_pb2


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


class ExchangeError(RuntimeError):
    """The workers answered something the protocol does not allow."""


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
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    step: int = 0
    _logits: Assembler | None = None
    _pending_logits: torch.Tensor | None = None

    def opening(self) -> list[worker_pb2.ForwardRequest]:
        if not self.prompt_ids:
            raise ExchangeError("the prompt is empty")
        opened = _open(
            self.route,
            self.session_id,
            worker_pb2.TASK_GENERATE,
            sampling=self.sampling.to_proto(),
            return_logits=self.return_logits,
        )
        tokens = worker_pb2.TokenInput(step=0, input_ids=list(self.prompt_ids), rows=1)
        return [opened, worker_pb2.ForwardRequest(tokens=tokens)]

    def handle(
        self, reply: worker_pb2.ForwardResponse
    ) -> tuple[GeneratedToken | None, list[worker_pb2.ForwardRequest], bool]:
        """(token produced, requests to send next, session done)."""
        if reply.HasField("opened"):
            return None, [], False
        if reply.HasField("result"):
            if self._logits is None:
                self._logits = Assembler()
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
        )
        self._pending_logits = None
        if out.finished:
            close = worker_pb2.ForwardRequest(close=worker_pb2.CloseSession(session_id=self.session_id))
            return token, [close], True
        self.step += 1
        nxt = worker_pb2.TokenInput(step=self.step, input_ids=[token.token_id], rows=1)
        return token, [worker_pb2.ForwardRequest(tokens=nxt)], False


@dataclass
class EmbedExchange:
    route: common_pb2.Route
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    result: torch.Tensor | None = None
    _assembler: Assembler = field(default_factory=Assembler)

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
