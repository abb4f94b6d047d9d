"""The blocking client: ``resplit.Client``.

Ask the orchestrator for a deployment's route, open a session on the first
hop, and stream tokens (or get embeddings) back. Errors from the workers come
back as ``grpc.RpcError`` with their status code and message.

Sessions follow reconfigurations: when a token reports a newer epoch, the
client moves the session to the route that token carries (or, when the first
hop did not know it, the orchestrator's) before the next step, its cache pulled
by the new hops while the old session stays open; when a hop fails, or the
cache cannot be moved, it replays the token history on the current route. The
caller sees the same tokens either way.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import grpc

from ..rpc.channels import sync_channel
from ..v1 import (
    common_pb2,
    monitor_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    worker_pb2_grpc,
)
from .base import DOWN_RECHECK_S, REPORT_TIMEOUT_S, ROUTE_POLL_S, ClientBase, down_in, still_down
from .exchange import EmbedExchange, ExchangeError, GeneratedToken, Sampling
from .requests import (
    HopTimeout,
    hop_timeout_details,
    latency_sample,
    pick_deployment,
    prompt_and_sampling,
)
from .tokens import TextStream, tokenizer_for

if TYPE_CHECKING:
    import torch


T = TypeVar("T")


class Client(ClientBase):
    """Blocking client of a resplit deployment."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for report in self._reports:  # let queued latency reports go out (bounded wait)
            with contextlib.suppress(grpc.RpcError, grpc.FutureTimeoutError, grpc.FutureCancelledError):
                report.result(timeout=0.5)
        self._reports.clear()
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def _channel(self, address: str) -> grpc.Channel:
        if address not in self._channels:
            self._channels[address] = sync_channel(address, security=self.security)
        return self._channels[address]

    # -- control plane -------------------------------------------------------
    def _orchestrator(self) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel(self.orchestrator))

    def _retried(self, call: Callable[[], T]) -> T:
        """``call()``, tried again with jittered backoff while the service refuses it as
        overloaded (RESOURCE_EXHAUSTED with a retry hint), within ``timeout_s``."""
        started, attempt = time.monotonic(), 0
        while True:
            try:
                return call()
            except grpc.RpcError as error:
                attempt += 1
                wait = self._overload_wait_s(error, attempt, started)
                if wait is None:
                    raise
                time.sleep(wait)

    def route(self, deployment: str) -> common_pb2.Route:
        request = orchestrator_pb2.GetRouteRequest(deployment=deployment)
        return self._retried(lambda: self._orchestrator().GetRoute(request, timeout=30))

    def deployment(self, name: str) -> common_pb2.Deployment:
        """The deployment ``name`` (asked once per client, then cached)."""
        cached = self._cached_deployment(name)
        if cached is not None:
            return cached
        request = orchestrator_pb2.ListDeploymentsRequest()
        listed = self._retried(lambda: self._orchestrator().ListDeployments(request, timeout=30))
        self._deployments[name] = found = pick_deployment(listed.deployments, name)
        return found

    def _report_latency(self, deployment: str, started: float, tokens: int) -> None:
        """Feed the monitor's per-deployment latency EWMA without waiting for it."""
        if not self.monitor or not deployment:
            return
        sample = latency_sample(deployment, started, tokens)
        stub = monitor_pb2_grpc.MonitorServiceStub(self._channel(self.monitor))
        self._reports = {r for r in self._reports if not r.done()}
        self._reports.add(stub.ReportLatency.future(sample, timeout=2.0))  # not awaited here

    # -- data plane ----------------------------------------------------------
    def _newer_route(self, exchange) -> common_pb2.Route | None:
        """Where to move the session: the route its last token carried, else (throttled)
        the orchestrator's, when newer."""
        route = exchange.route
        pushed = self._pushed_route(exchange)
        if pushed is not None:
            return pushed
        if not self._route_check_due():
            return None
        try:
            latest = self.route(route.deployment)
        except grpc.RpcError:
            latest = None
        return self._route_answer(route, latest)

    def _recover(self, exchange, attempt: int, error: grpc.RpcError) -> list:
        """Back off, report a lost hop, and replay on a route the orchestrator gives
        (waiting, while the session's deadline allows, for one without a node it found down)."""
        wait, since = self._recovery_wait_s(exchange, attempt, error), time.monotonic()
        down = self._report_failure(exchange.route, error)
        time.sleep(max(0.0, wait - (time.monotonic() - since)))
        checked = time.monotonic()
        while True:
            try:
                latest = self.route(exchange.route.deployment)
            except grpc.RpcError as exc:
                latest = exc
            if down and time.monotonic() - checked >= DOWN_RECHECK_S:
                down, checked = self._recheck_down(exchange.route.deployment, down), time.monotonic()
            route = self._recovery_route(exchange, latest, down, error, since)
            if route is not None:
                return exchange.replay(route)
            time.sleep(ROUTE_POLL_S)

    def _recheck_down(self, deployment: str, down: set[str]) -> set[str]:
        """Those of ``down`` still down by the orchestrator's word (all of them when it does
        not answer)."""
        try:
            reply = self._orchestrator().ReportFailure(
                self._recheck_report(deployment, down), timeout=REPORT_TIMEOUT_S
            )
        except grpc.RpcError:
            return down
        return still_down(down, reply)

    def _report_failure(self, route: common_pb2.Route, error: grpc.RpcError) -> set[str]:
        """The nodes the orchestrator found down after hearing of ``error`` (best effort)."""
        report = self._failure_report(route, error)
        if report is None:
            return set()
        try:
            reply = self._orchestrator().ReportFailure(report, timeout=REPORT_TIMEOUT_S)
        except grpc.RpcError:
            return set()  # the orchestrator is away or busy: the heartbeat TTL still catches it
        return down_in(reply)

    def _run(self, exchange) -> Iterator[GeneratedToken]:
        """Drive ``exchange`` to the end across route changes and failures."""
        messages, previous, attempt = exchange.opening(), None, 0
        while True:
            try:
                switch = yield from self._stream(exchange, messages, previous)
            except grpc.RpcError as error:
                if previous is not None:  # the new hops refused the cache: give up the old session too
                    previous.close()
                    previous = None
                attempt += 1
                messages = self._recover(exchange, attempt, error)
                continue
            if switch is None:
                return
            previous, route = switch
            messages = exchange.move(route, self.move_cache)

    def _stream(self, exchange, messages: list, previous: _Call | None):
        """One Forward stream: yields tokens; returns None when the session is done, or
        (this stream, newer route) to move at this token boundary."""
        address = exchange.route.hops[0].address
        self._throttle_check(address, exchange)
        call = _Call(
            self._channel(address), messages, self.timeout_s, self.step_timeout_s, self.prefill_timeout_s
        )
        sent_at = time.perf_counter()
        moving, admitted = False, False
        try:
            for reply in call:
                if not admitted:
                    admitted = exchange.admitted = True
                    self._throttle_outcome(address, None)
                if previous is not None and reply.HasField("opened"):
                    previous.close()  # the new hops hold the cache now
                    previous = None
                token, following, done = exchange.handle(reply)
                if token is not None:
                    now = time.perf_counter()
                    token.latency_s, sent_at = now - sent_at, now
                    yield token
                if done:
                    call.send(following)
                    return None
                if token is not None and exchange.moved():
                    route = self._newer_route(exchange)
                    if route is not None:
                        moving = True
                        return call, route
                call.send(following, awaiting=True)
            raise ExchangeError("the first hop ended the session before its last token")
        except grpc.RpcError as error:
            if not admitted:  # refused at its open (or lost before it): what the throttle counts
                self._throttle_outcome(address, error)
            raise
        finally:
            if not moving:
                call.close()
            if previous is not None:
                previous.close()

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        route: common_pb2.Route,
        sampling: Sampling | None = None,
        return_logits: bool = False,
    ) -> Iterator[GeneratedToken]:
        """Generate from token ids along an explicit route."""
        exchange = self._generate_exchange(prompt_ids, route, sampling, return_logits)
        started, tokens = time.perf_counter(), 0
        for token in self._run(exchange):
            tokens += 1
            yield token
        self._report_latency(route.deployment, started, tokens)

    def generate(
        self,
        prompt: str | Sequence[int],
        *,
        deployment: str,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 0.0,
        seed: int = 0,
        stop_token_ids: Sequence[int] | None = None,
        return_logits: bool = False,
    ) -> Iterator[GeneratedToken]:
        """Stream tokens (with incremental ``text``) for ``prompt``.

        Stops at ``max_new_tokens`` or a stop token (default: the tokenizer's EOS).
        """
        tokenizer = tokenizer_for(self.deployment(deployment).model_dir)
        ids, sampling = prompt_and_sampling(
            tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop_token_ids
        )
        text = TextStream(tokenizer)
        for token in self.generate_ids(ids, self.route(deployment), sampling, return_logits):
            token.text = text.push(token.token_id)
            yield token

    def embed_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, route: common_pb2.Route
    ) -> torch.Tensor:
        """Embeddings [rows, H] of a padded batch along an explicit route."""
        exchange = EmbedExchange(route, input_ids, attention_mask)
        started = time.perf_counter()
        for _ in self._run(exchange):
            pass
        self._report_latency(route.deployment, started, int(input_ids.shape[0]))
        if exchange.result is None:
            raise RuntimeError("the session ended without a result")
        return exchange.result

    def embed(self, texts: Sequence[str], *, deployment: str, max_length: int = 256) -> torch.Tensor:
        """Mean-pooled, normalized embeddings of ``texts`` [len(texts), H]."""
        tokenizer = tokenizer_for(self.deployment(deployment).model_dir)
        batch = tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return self.embed_ids(batch["input_ids"], batch["attention_mask"], self.route(deployment))


class _Call:
    """One Forward stream fed from a queue, so replies and requests interleave.

    A step that gets no reply within ``step_timeout_s`` (``prefill_timeout_s`` before
    the stream's first answer; a hop alive but silent: stopped, swapping, partitioned)
    cancels the stream, which then fails with :class:`HopTimeout`, so the session
    recovers like after any other hop loss.
    Time the caller spends between tokens does not count: only a step that was
    sent and is not answered yet.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        messages: list,
        timeout_s: float,
        step_timeout_s: float,
        prefill_timeout_s: float,
    ) -> None:
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.step_timeout_s = step_timeout_s
        self.prefill_timeout_s = prefill_timeout_s
        #: Whether the stream has answered a step yet (its first answer may take longer).
        self.answered = False
        self._pending: float | None = None
        self._closed = threading.Event()
        self.timed_out = False
        self.send(messages)

        def requests():
            while (message := self._outbox.get()) is not None:
                yield message

        self._call = worker_pb2_grpc.WorkerServiceStub(channel).Forward(requests(), timeout=timeout_s)
        if step_timeout_s > 0:
            threading.Thread(target=self._watch, name="resplit-step-watchdog", daemon=True).start()

    def _watch(self) -> None:
        while not self._closed.wait(min(0.1, self.step_timeout_s / 4)):
            pending = self._pending
            limit = self.step_timeout_s if self.answered else self.prefill_timeout_s
            if pending is not None and time.monotonic() - pending > limit:
                self.timed_out = True
                self._call.cancel()
                return

    def __iter__(self):
        try:
            for reply in self._call:
                if reply.HasField("token") or reply.HasField("result"):
                    self._pending, self.answered = None, True
                yield reply
        except grpc.RpcError:
            if self.timed_out:
                limit = self.step_timeout_s if self.answered else self.prefill_timeout_s
                raise HopTimeout(hop_timeout_details(limit, self.answered)) from None
            raise

    def send(self, messages: list, awaiting: bool = False) -> None:
        """Queue ``messages``; the step clock starts when a step is sent or, with
        ``awaiting``, when the caller is ready for the next reply (the server loop's
        steps are sent by the first hop, not from here)."""
        if awaiting or any(m.HasField("tokens") for m in messages):
            self._pending = time.monotonic()
        for message in messages:
            self._outbox.put(message)

    def close(self) -> None:
        self._closed.set()
        self._outbox.put(None)
        self._call.cancel()
