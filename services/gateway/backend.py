"""The gateway's side of the SDK: deployments, prompts and sessions through ``AsyncClient``.

Every generation and embedding goes through the SDK, so a gateway session follows
re-splits, moves its cache and recovers from lost hops exactly as an SDK session
does. A gRPC failure becomes an :class:`~.core.errors.ApiError` here (by status
name); closing the token iterator early (a stop string, a client gone) ends the
session on the workers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from resplit.rpc.channels import aio_channel
from resplit.sdk import AsyncClient, GeneratedToken, Sampling
from resplit.sdk.requests import prompt_and_sampling
from resplit.sdk.tokens import TextStream, tokenizer_for
from resplit.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

from .config import GatewaySettings
from .core.errors import ApiError, bad_request, from_status, unknown_model
from .core.requests import EmbeddingRequest, GenerationRequest
from .core.responses import TokenLogprob

#: The deployment list is asked for again at most this often (a miss asks at once).
LIST_TTL_S = 2.0
#: Longest input of an embedding, in tokens (the SDK's ``embed`` default).
EMBED_MAX_LENGTH = 256


def api_error(exc: grpc.RpcError) -> ApiError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return from_status(code.name if code is not None else "UNKNOWN", details or "")


@dataclass
class Prepared:
    """A generation ready to run: the deployment, the prompt's ids and the sampling."""

    deployment: common_pb2.Deployment
    ids: list[int]
    sampling: Sampling
    #: Whether the answer carries logprobs, and how many alternatives per token.
    logprobs: bool
    top_logprobs: int
    tokenizer: Any


class Backend:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.client: AsyncClient | None = None
        self._orchestrator: orchestrator_pb2_grpc.OrchestratorServiceStub | None = None
        self._channel: grpc.aio.Channel | None = None
        self._listed: dict[str, common_pb2.Deployment] = {}
        self._listed_at = -LIST_TTL_S

    def start(self) -> None:
        """Open the channels (on the running event loop)."""
        s = self.settings
        self.client = AsyncClient(
            s.orchestrator_address,
            monitor=s.monitor_address,
            timeout_s=s.session_timeout_s,
            step_timeout_s=s.step_timeout_s,
            retry_overload=False,  # a full worker is a 429 at once: the HTTP client retries
        )
        self._channel = aio_channel(s.orchestrator_address)
        self._orchestrator = orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self._channel is not None:
            await self._channel.close()

    async def deployments(self, fresh: bool = False) -> dict[str, common_pb2.Deployment]:
        """The deployments by name (cached for LIST_TTL_S unless ``fresh``)."""
        if fresh or time.monotonic() - self._listed_at >= LIST_TTL_S:
            assert self._orchestrator is not None, "start() first"
            try:
                listed = await self._orchestrator.ListDeployments(
                    orchestrator_pb2.ListDeploymentsRequest(), timeout=10
                )
            except grpc.RpcError as exc:
                raise api_error(exc) from None
            self._listed = {d.name: d for d in listed.deployments}
            self._listed_at = time.monotonic()
        return self._listed

    async def find(self, name: str, generative: bool) -> common_pb2.Deployment:
        """The deployment ``name``; 404 if none, 400 if it is the wrong kind for the endpoint."""
        found = (await self.deployments()).get(name) or (await self.deployments(fresh=True)).get(name)
        if found is None:
            raise unknown_model(name, list(self._listed))
        if found.generative != generative:
            use = "/v1/completions or /v1/chat/completions" if found.generative else "/v1/embeddings"
            raise bad_request(f"the model {name!r} cannot serve this endpoint: use {use}", "model")
        return found

    async def ready(self) -> tuple[bool, str]:
        try:
            await self.deployments(fresh=True)
        except ApiError as exc:
            return False, f"orchestrator at {self.settings.orchestrator_address}: {exc.message}"
        return True, f"orchestrator at {self.settings.orchestrator_address} answers"

    async def prepare(self, request: GenerationRequest) -> Prepared:
        """Tokenize the prompt (a chat through the tokenizer's own chat template)."""
        deployment = await self.find(request.model, generative=True)
        tokenizer = await asyncio.to_thread(tokenizer_for, deployment.model_dir)
        prompt: str | list[int] = request.prompt if request.prompt is not None else []
        if request.messages is not None:
            if not getattr(tokenizer, "chat_template", None):
                raise bad_request(
                    f"the model {request.model!r} has no chat template: use /v1/completions",
                    "messages", "no_chat_template",
                )  # fmt: skip
            try:
                text = tokenizer.apply_chat_template(
                    request.messages, add_generation_prompt=True, tokenize=False
                )
            except Exception as exc:  # the template's own checks (roles alternating, ...)
                raise bad_request(
                    f"the model's chat template refused the messages: {exc}", "messages"
                ) from None
            prompt = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        seed = request.seed if request.seed is not None else secrets.randbits(31)
        ids, sampling = prompt_and_sampling(
            tokenizer, prompt, request.max_tokens, request.temperature, 0, request.sampler_top_p, seed,
            [] if request.ignore_eos else None,
        )  # fmt: skip
        if not ids:
            raise bad_request("the prompt is empty once tokenized", "prompt")
        return Prepared(deployment, ids, sampling, request.logprobs, request.top_logprobs, tokenizer)

    async def generate(self, prepared: Prepared) -> AsyncIterator[tuple[GeneratedToken, TokenLogprob | None]]:
        """The tokens of one session, with their text and logprob entries (None unless
        asked for). Closing this
        iterator early ends the session on the workers."""
        assert self.client is not None, "start() first"
        tokenizer, top = prepared.tokenizer, prepared.top_logprobs
        text = TextStream(tokenizer)
        try:
            route = await self.client.route(prepared.deployment.name)
            tokens = self.client.generate_ids(prepared.ids, route, prepared.sampling, return_logits=top > 0)
            # Closed with this iterator, not when the collector gets to it: an SDK generator
            # left suspended at its yield would keep the session running on the workers.
            async with contextlib.aclosing(tokens):
                async for token in tokens:
                    token.text = text.push(token.token_id)
                    yield token, _entry(tokenizer, token, top) if prepared.logprobs else None
        except grpc.RpcError as exc:
            raise api_error(exc) from None

    async def embed(self, request: EmbeddingRequest) -> tuple[list[list[float]], int]:
        """The embeddings of ``request.inputs`` and how many tokens they had."""
        assert self.client is not None, "start() first"
        deployment = await self.find(request.model, generative=False)
        tokenizer = await asyncio.to_thread(tokenizer_for, deployment.model_dir)
        batch = tokenizer(
            request.inputs, padding=True, truncation=True, max_length=EMBED_MAX_LENGTH, return_tensors="pt"
        )
        try:
            route = await self.client.route(deployment.name)
            vectors = await self.client.embed_ids(batch["input_ids"], batch["attention_mask"], route)
        except grpc.RpcError as exc:
            raise api_error(exc) from None
        return vectors.float().tolist(), int(batch["attention_mask"].sum())


def _entry(tokenizer, token: GeneratedToken, top: int) -> TokenLogprob:
    """The logprob entry of ``token``: its own log-probability (under the distribution it
    was drawn from), and the ``top`` most likely tokens of the model's distribution."""
    entry = TokenLogprob(tokenizer.decode([token.token_id]), float(token.logprob))
    if top and token.logits is not None:
        import torch

        logprobs = torch.log_softmax(token.logits.float().flatten(), dim=-1)
        values, ids = torch.topk(logprobs, min(top, logprobs.numel()))
        entry.top = [
            (tokenizer.decode([i]), float(v)) for v, i in zip(values.tolist(), ids.tolist(), strict=True)
        ]
    return entry
