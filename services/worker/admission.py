"""A full worker makes a new session wait a moment for a slot, or refuses it, before its
Forward stream handler runs.

Why: under load far above what the workers serve, most Forward streams are refused
(``--max-sessions``). Refused in the handler, each one still cost a task pumping its
requests, reading and parsing its open message and looking up its segment, on the
cores the admitted sessions compute on: with 8-token requests at 4x the unloaded rate,
the stack served 0.75x its maximum (bench/overload.py). The SDK and the hops name the
session a stream opens in its metadata (``resplit-session``); this interceptor reads
it and, when the session table would refuse it, ends the stream RESOURCE_EXHAUSTED
with the same message and retry hint, after a bounded wait for a slot
(``--max-waiting-sessions``, ``--admission-wait-ms``: core/waiting.py). A stream without
the metadata (an older client) is refused in the handler as before; a session already
here (its other segment, or a move to a new epoch) is never refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge

from resplit.core.limits import RETRY_METADATA_KEY, SESSION_METADATA_KEY
from resplit.rpc.interceptors import Continuation, rewrapped, streamed
from resplit.rpc.limits import take_opening

from .core.sessions import SessionTable
from .core.waiting import WaitingRoom

FORWARD = "/resplit.v1.WorkerService/Forward"
ADMISSIONS = Counter(
    "resplit_worker_admissions_total",
    "New sessions at their stream's open, by outcome: admitted at once, admitted after waiting "
    "for a slot, refused at once (full, the waiting room full), refused after waiting",
    ["outcome"],
)
WAITING = Gauge("resplit_worker_sessions_waiting", "New sessions waiting for a slot on this full worker")


def _session_of(details: grpc.HandlerCallDetails) -> str:
    for key, value in details.invocation_metadata or ():
        if key == SESSION_METADATA_KEY:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return ""


class SessionAdmission(grpc.aio.ServerInterceptor):
    """Admits a new session into a slot (held until its handler opens it), after a bounded
    wait for one when the worker is full (core/waiting.py), or refuses it."""

    def __init__(self, sessions: SessionTable, room: WaitingRoom) -> None:
        self.sessions = sessions
        self.room = room
        WAITING.set_function(lambda: len(room))

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method != FORWARD:
            return handler
        session_id = _session_of(details)
        if not session_id:
            return handler
        admission = await self.room.admit(session_id)
        ADMISSIONS.labels(admission.outcome).inc()
        refusal = admission.refusal
        if not refusal:
            return rewrapped(handler, lambda behavior: behavior, _letting_go(self.sessions, session_id))
        hint = ((RETRY_METADATA_KEY, str(self.sessions.limits.retry_after_ms)),)

        async def refuse(requests, context: grpc.aio.ServicerContext) -> None:
            # What the caller wrote at once is taken first (the open message and the first
            # step): a status that arrives while it still writes is lost to it (take_opening).
            await take_opening(requests)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal, trailing_metadata=hint)

        return grpc.stream_stream_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _letting_go(
    sessions: SessionTable, session_id: str
) -> Callable[[Callable[..., Any]], Callable[..., AsyncIterator[Any]]]:
    """A Forward handler's wrapper that lets go of the slot held for ``session_id`` when
    its stream ends (a no-op once the session opened: opening took the slot)."""

    def wrap(behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        async def forward(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for reply in streamed(behavior, requests, context):
                    yield reply
            finally:
                sessions.let_go(session_id)

        return forward

    return wrap
