"""The asyncio client: ``resplit.AsyncClient``, same API with ``async``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence

import grpc
import torch

from ..rpc.channels import aio_channel
from ..v1 import (
    common_pb2,
    monitor_pb2_grpc,
    orchestrator_pb2,
    orchestrator_pb2_grpc,
    worker_pb2_grpc,
)
from .client import DEFAULT_ORCHESTRATOR
from .exchange import EmbedExchange, GeneratedToken, GenerateExchange, Sampling
from .requests import latency_sample, pick_deployment, prompt_and_sampling
from .tokens import TextStream, tokenizer_for


class AsyncClient:
    """asyncio client of a resplit deployment."""

    def __init__(
        self, orchestrator: str = DEFAULT_ORCHESTRATOR, *, timeout_s: float = 300.0, monitor: str = ""
    ) -> None:
        """``monitor``: as for :class:`resplit.Client`, latency reports go there when set."""
        self.orchestrator = orchestrator
        self.timeout_s = timeout_s
        self.monitor = monitor
        self._reports: set[asyncio.Task] = set()
        self._channels: dict[str, grpc.aio.Channel] = {}

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
            self._channels[address] = aio_channel(address)
        return self._channels[address]

    def _orchestrator(self) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel(self.orchestrator))

    async def route(self, deployment: str) -> common_pb2.Route:
        request = orchestrator_pb2.GetRouteRequest(deployment=deployment)
        return await self._orchestrator().GetRoute(request, timeout=30)

    async def deployment(self, name: str) -> common_pb2.Deployment:
        listed = await self._orchestrator().ListDeployments(
            orchestrator_pb2.ListDeploymentsRequest(), timeout=30
        )
        return pick_deployment(listed.deployments, name)

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

    async def _drive(self, address: str, exchange) -> AsyncIterator[GeneratedToken]:
        call = worker_pb2_grpc.WorkerServiceStub(self._channel(address)).Forward(timeout=self.timeout_s)
        try:
            for message in exchange.opening():
                await call.write(message)
            sent_at = time.perf_counter()
            while True:
                reply = await call.read()
                if reply is grpc.aio.EOF:
                    raise RuntimeError(f"worker {address} ended the session early: {await call.details()}")
                token, following, done = exchange.handle(reply)
                for message in following:
                    await call.write(message)
                if token is not None:
                    now = time.perf_counter()
                    token.latency_s, sent_at = now - sent_at, now
                    yield token
                if done:
                    await call.done_writing()
                    return
        finally:
            call.cancel()

    async def generate_ids(
        self,
        prompt_ids: Sequence[int],
        route: common_pb2.Route,
        sampling: Sampling | None = None,
        return_logits: bool = False,
    ) -> AsyncIterator[GeneratedToken]:
        exchange = GenerateExchange(route, list(prompt_ids), sampling or Sampling(), return_logits)
        started, tokens = time.perf_counter(), 0
        async for token in self._drive(route.hops[0].address, exchange):
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
        async for _ in self._drive(route.hops[0].address, exchange):
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
