"""The OpenAI-compatible HTTP API (aiohttp): routes, the bearer-token check, errors as
OpenAI error bodies, and answers whole or as server-sent events.

What to answer is decided in ``core`` (parsing, shaping, stop strings); what to ask
the deployment goes through ``backend`` (the SDK). A client that goes away cancels
its handler (``handler_cancellation``), which closes the SDK session at once.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from .backend import Backend, Prepared
from .config import GatewaySettings
from .core.completion import Completion, Step
from .core.errors import ApiError, unauthorized, unknown_model
from .core.requests import GenerationRequest, parse_chat, parse_completion, parse_embeddings, parse_json
from .core.responses import SSE_DONE, Shaper, embeddings, model_list, sse
from .metrics import DISCONNECTS, FIRST_TOKEN_SECONDS, REQUESTS, STREAMS, TOKENS

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
EVENT_STREAM = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _endpoint(request: web.Request) -> str:
    route = request.match_info.route
    return route.resource.canonical if route.resource is not None else "unmatched"


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as an OpenAI error body with its status; counts every answer."""
    try:
        response = await handler(request)
    except ApiError as exc:
        response = web.json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "invalid_request_error" if exc.status < 500 else "server_error"
        message = f"{exc.reason}: {request.method} {request.path}"
        error = ApiError(exc.status, message, kind, None, exc.reason.lower().replace(" ", "_"))
        response = web.json_response(error.body(), status=exc.status)
    except (asyncio.CancelledError, ConnectionResetError):
        DISCONNECTS.inc()
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        error = ApiError(
            500, f"internal error: {type(exc).__name__}: {exc}", "server_error", None, "internal_error"
        )
        response = web.json_response(error.body(), status=500)
    REQUESTS.labels(endpoint=_endpoint(request), status=str(response.status)).inc()
    return response


def _auth(api_key: str | None):
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if api_key and request.path.startswith("/v1"):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if not given:
                raise unauthorized("missing API key: send 'Authorization: Bearer <key>'")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), api_key.encode()
            ):
                raise unauthorized("incorrect API key")
        return await handler(request)

    return check


async def _steps(tokens: AsyncIterator, completion: Completion) -> AsyncIterator[Step]:
    """The completion's steps, one per generated token, until it ends."""
    async for token, entry in tokens:
        step = completion.push(token.text, token.finished, token.finish_reason, entry)
        yield step
        if step.finish is not None:
            return
    if completion.finish is None:  # the session ended without a last token: never expected
        raise ApiError(502, "the session ended before its last token", "server_error", None, "incomplete")


class Api:
    def __init__(self, backend: Backend, settings: GatewaySettings) -> None:
        self.backend = backend
        self.settings = settings

    async def models(self, _: web.Request) -> web.Response:
        listed = await self.backend.deployments(fresh=True)
        return web.json_response(model_list(sorted(listed)))

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        listed = await self.backend.deployments(fresh=True)
        if name not in listed:
            raise unknown_model(name, list(listed))
        return web.json_response(model_list([name])["data"][0])

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = parse_json(await request.read())
        return await self._generate(request, parse_completion(body, self.settings.default_max_tokens))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = parse_json(await request.read())
        return await self._generate(request, parse_chat(body, self.settings.default_max_tokens))

    async def embeddings(self, request: web.Request) -> web.Response:
        parsed = parse_embeddings(parse_json(await request.read()))
        vectors, prompt_tokens = await self.backend.embed(parsed)
        TOKENS.labels(kind="prompt").inc(prompt_tokens)
        return web.json_response(embeddings(parsed.model, vectors, prompt_tokens, parsed.encoding_format))

    async def _generate(self, request: web.Request, parsed: GenerationRequest) -> web.StreamResponse:
        started = time.perf_counter()
        prepared = await self.backend.prepare(parsed)
        TOKENS.labels(kind="prompt").inc(len(prepared.ids))
        completion = Completion(parsed.stop)
        tokens = self.backend.generate(prepared)
        steps = _steps(tokens, completion)
        try:
            first = await anext(steps)  # a failure before the first token is a plain error answer
            FIRST_TOKEN_SECONDS.observe(time.perf_counter() - started)
            shaper = Shaper(parsed.model, parsed.chat)
            if parsed.stream:
                return await self._stream(request, parsed, prepared, shaper, completion, first, steps)
            async for _ in steps:
                # Nothing is written until the end, so a client that went away shows only as its
                # connection closing: checked per token as well as by the handler's cancellation.
                if request.transport is None or request.transport.is_closing():
                    raise ConnectionResetError("the client closed its connection")  # counted by _errors
            logprobs = shaper.logprobs(completion.entries, completion.texts) if parsed.logprobs else None
            answer = shaper.whole(
                completion.text, completion.finish or "stop", len(prepared.ids), completion.tokens, logprobs
            )
            return web.json_response(answer)
        finally:
            await steps.aclose()
            await tokens.aclose()  # ends the session now if it has not ended (stop string, client gone)
            TOKENS.labels(kind="completion").inc(completion.tokens)

    async def _stream(
        self,
        request: web.Request,
        parsed: GenerationRequest,
        prepared: Prepared,
        shaper: Shaper,
        completion: Completion,
        first: Step,
        steps: AsyncIterator[Step],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=EVENT_STREAM)
        await response.prepare(request)
        STREAMS.inc()
        try:
            if parsed.chat:
                await response.write(sse(shaper.chunk("", role=True)))
            step: Step | None = first
            try:
                while step is not None:
                    logprobs = shaper.logprobs(step.entries, step.texts) if parsed.logprobs else None
                    # One chunk per generated token, even one that adds no text yet (part of a
                    # character, or held back as the start of a stop string): clients can count them.
                    await response.write(sse(shaper.chunk(step.text, logprobs, step.finish)))
                    step = await anext(steps, None)
            except ApiError as exc:  # the session failed mid-stream: the status line has gone
                await response.write(sse(exc.body()))
            if parsed.include_usage:
                await response.write(sse(shaper.usage_chunk(len(prepared.ids), completion.tokens)))
            await response.write(SSE_DONE)
            await response.write_eof()
        finally:
            STREAMS.dec()
        return response


def build_api(backend: Backend, settings: GatewaySettings, api_key: str | None) -> web.Application:
    api = Api(backend, settings)
    app = web.Application(middlewares=[_errors, _auth(api_key)], client_max_size=settings.max_request_bytes)
    app.router.add_get("/v1/models", api.models)
    app.router.add_get("/v1/models/{model}", api.model)
    app.router.add_post("/v1/completions", api.completions)
    app.router.add_post("/v1/chat/completions", api.chat)
    app.router.add_post("/v1/embeddings", api.embeddings)
    return app
