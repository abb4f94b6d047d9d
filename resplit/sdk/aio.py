"""The asyncio client: ``resplit.AsyncClient``, same API with ``async``, and the
same behaviour across reconfigurations and failures (see client.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import grpc

from ..core.limits import SESSION_METADATA_KEY
from ..rpc.channels import aio_channel
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


class AsyncClient(ClientBase):
    """asyncio client of a resplit deployment."""

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reports:  # let queued latency reports go out (bounded wait)
            await asyncio.wait(self._reports, timeout=0.5)
        self._reports.clear()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = aio_channel(address, security=self.security)
        return self._channels[address]

    def _orchestrator(self) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel(self.orchestrator))

    async def _retried(self, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()``, tried again with jittered backoff while the service refuses it as
        overloaded (RESOURCE_EXHAUSTED with a retry hint), within ``timeout_s``."""
        started, attempt = time.monotonic(), 0
        while True:
            try:
                return await call()
            except grpc.RpcError as error:
                attempt += 1
                wait = self._overload_wait_s(error, attempt, started)
                if wait is None:
                    raise
                await asyncio.sleep(wait)

    async def route(self, deployment: str) -> common_pb2.Route:
        request = orchestrator_pb2.GetRouteRequest(deployment=deployment)
        return await self._retried(lambda: self._orchestrator().GetRoute(request, timeout=30))

    async def deployment(self, name: str) -> common_pb2.Deployment:
        """The deployment ``name`` (asked once per client, then cached)."""
        cached = self._cached_deployment(name)
        if cached is not None:
            return cached
        request = orchestrator_pb2.ListDeploymentsRequest()
        listed = await self._retried(lambda: self._orchestrator().ListDeployments(request, timeout=30))
        self._deployments[name] = found = pick_deployment(listed.deployments, name)
        return found

    def _report_latency(self, deployment: str, started: float, tokens: int) -> None:
        """Feed the monitor's latency EWMA in the background; never an error here."""
        if not self.monitor or not deployment:
            return
        sample = latency_sample(deployment, started, tokens)
        stub = monitor_pb2_grpc.MonitorServiceStub(self._channel(self.monitor))

        async def send() -> None:
            with contextlib.suppress(grpc.RpcError, asyncio.TimeoutError):
                await stub.ReportLatency(sample, timeout=2.0)

        task = asyncio.create_task(send())
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _newer_route(self, exchange) -> common_pb2.Route | None:
        """Where to move the session: the route its last token carried, else (throttled)
        the orchestrator's, when newer."""
        route = exchange.route
        pushed = self._pushed_route(exchange)
        if pushed is not None:
            return pushed
        if not self._route_check_due():
            return None
        try:
            latest = await self.route(route.deployment)
        except grpc.RpcError:
            latest = None
        return self._route_answer(route, latest)

    async def _recover(self, exchange, attempt: int, error: grpc.RpcError) -> list:
        """Back off, report a lost hop, and replay on a route the orchestrator gives
        (waiting, while the session's deadline allows, for one without a node it found down)."""
        wait, since = self._recovery_wait_s(exchange, attempt, error), time.monotonic()
        down = await self._report_failure(exchange.route, error)
        await asyncio.sleep(max(0.0, wait - (time.monotonic() - since)))
        checked = time.monotonic()
        while True:
            try:
                latest = await self.route(exchange.route.deployment)
            except grpc.RpcError as exc:
                latest = exc
            if down and time.monotonic() - checked >= DOWN_RECHECK_S:
                down, checked = await self._recheck_down(exchange.route.deployment, down), time.monotonic()
            route = self._recovery_route(exchange, latest, down, error, since)
            if route is not None:
                return exchange.replay(route)
            await asyncio.sleep(ROUTE_POLL_S)

    async def _recheck_down(self, deployment: str, down: set[str]) -> set[str]:
        """Those of ``down`` still down by the orchestrator's word (all of them when it does
        not answer)."""
        try:
            reply = await self._orchestrator().ReportFailure(
                self._recheck_report(deployment, down), timeout=REPORT_TIMEOUT_S
            )
        except grpc.RpcError:
            return down
        return still_down(down, reply)

    async def _report_failure(self, route: common_pb2.Route, error: grpc.RpcError) -> set[str]:
        """The nodes the orchestrator found down after hearing of ``error`` (best effort)."""
        report = self._failure_report(route, error)
        if report is None:
            return set()
        try:
            reply = await self._orchestrator().ReportFailure(report, timeout=REPORT_TIMEOUT_S)
        except grpc.RpcError:
            return set()  # the orchestrator is away or busy: the heartbeat TTL still catches it
        return down_in(reply)

    async def _run(self, exchange) -> AsyncIterator[GeneratedToken]:
        """Drive ``exchange`` to the end across route changes and failures."""
        messages, previous, attempt = exchange.opening(), None, 0
        while True:
            outcome: list = []
            try:
                async for token in self._stream(exchange, messages, previous, outcome):
                    yield token
            except grpc.RpcError as error:
                if previous is not None:
                    previous.cancel()
                    previous = None
                attempt += 1
                messages = await self._recover(exchange, attempt, error)
                continue
            if not outcome:
                return
            previous, route = outcome
            messages = exchange.move(route, self.move_cache)

    @staticmethod
    async def _write(call, message) -> None:
        """Write one request; a stream that already ended fails with the status it ended
        with (grpc.aio reports a write to a dead stream as a bare INTERNAL)."""
        try:
            await call.write(message)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            try:
                code = await asyncio.wait_for(call.code(), 5.0)
                details = await call.details()
            except TimeoutError:
                code, details = grpc.StatusCode.UNAVAILABLE, str(exc)
            if code in (grpc.StatusCode.OK, grpc.StatusCode.INTERNAL):
                code = grpc.StatusCode.UNAVAILABLE  # the hop went away mid-stream
            empty = grpc.aio.Metadata()
            raise grpc.aio.AioRpcError(code, empty, empty, details=f"stream ended: {details}") from None

    async def _read(self, call, answered: bool):
        """The next reply; one that takes longer than the step timeout (the prefill
        timeout before the stream's first answer) is a lost hop."""
        if self.step_timeout_s <= 0:
            return await call.read()
        timeout_s = self.step_timeout_s if answered else self.prefill_timeout_s
        try:
            return await asyncio.wait_for(call.read(), timeout_s)
        except TimeoutError:
            raise HopTimeout(hop_timeout_details(timeout_s, answered)) from None

    async def _stream(
        self, exchange, messages: list, previous, outcome: list
    ) -> AsyncIterator[GeneratedToken]:
        """One Forward stream; on a move, fills ``outcome`` with (this call, newer route)."""
        address = exchange.route.hops[0].address
        self._throttle_check(address, exchange)
        call = worker_pb2_grpc.WorkerServiceStub(self._channel(address)).Forward(
            timeout=self.timeout_s, metadata=((SESSION_METADATA_KEY, exchange.session_id),)
        )
        moving, answered, admitted = False, False, False
        try:
            for message in messages:
                await self._write(call, message)
            sent_at = time.perf_counter()
            while True:
                reply = await self._read(call, answered)
                if not admitted and reply is not grpc.aio.EOF:
                    admitted = exchange.admitted = True
                    self._throttle_outcome(address, None)
                if reply is grpc.aio.EOF:
                    code = await call.code()
                    if code != grpc.StatusCode.OK:
                        empty = grpc.aio.Metadata()
                        raise grpc.aio.AioRpcError(code, empty, empty, details=await call.details())
                    raise ExchangeError("the first hop ended the session before its last token")
                answered = answered or reply.HasField("token") or reply.HasField("result")
                if previous is not None and reply.HasField("opened"):
                    previous.cancel()  # the new hops hold the cache now
                    previous = None
                token, following, done = exchange.handle(reply)
                if token is not None:
                    now = time.perf_counter()
                    token.latency_s, sent_at = now - sent_at, now
                    yield token
                if done:
                    for message in following:
                        await self._write(call, message)
                    await call.done_writing()
                    return
                if token is not None and exchange.moved():
                    route = await self._newer_route(exchange)
                    if route is not None:
                        moving = True
                        outcome.extend((call, route))
                        return
                for message in following:
                    await self._write(call, message)
        except grpc.RpcError as error:
            if not admitted:  # refused at its open (or lost before it): what the throttle counts
                self._throttle_outcome(address, error)
            raise
        finally:
            if not moving:
                call.cancel()
            if previous is not None:
                previous.cancel()

    async def generate_ids(
        self,
        prompt_ids: Sequence[int],
        route: common_pb2.Route,
        sampling: Sampling | None = None,
        return_logits: bool = False,
    ) -> AsyncIterator[GeneratedToken]:
        exchange = self._generate_exchange(prompt_ids, route, sampling, return_logits)
        started, tokens = time.perf_counter(), 0
        async for token in self._run(exchange):
            tokens += 1
            yield token
        self._report_latency(route.deployment, started, tokens)

    async def generate(
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
    ) -> AsyncIterator[GeneratedToken]:
        tokenizer = tokenizer_for((await self.deployment(deployment)).model_dir)
        ids, sampling = prompt_and_sampling(
            tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop_token_ids
        )
        text = TextStream(tokenizer)
        async for token in self.generate_ids(ids, await self.route(deployment), sampling, return_logits):
            token.text = text.push(token.token_id)
            yield token

    async def embed_ids(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, route: common_pb2.Route
    ) -> torch.Tensor:
        exchange = EmbedExchange(route, input_ids, attention_mask)
        started = time.perf_counter()
        async for _ in self._run(exchange):
            pass
        self._report_latency(route.deployment, started, int(input_ids.shape[0]))
        if exchange.result is None:
            raise RuntimeError("the session ended without a result")
        return exchange.result

    async def embed(self, texts: Sequence[str], *, deployment: str, max_length: int = 256) -> torch.Tensor:
        tokenizer = tokenizer_for((await self.deployment(deployment)).model_dir)
        batch = tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        return await self.embed_ids(batch["input_ids"], batch["attention_mask"], await self.route(deployment))
