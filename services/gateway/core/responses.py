"""OpenAI response objects: completions, chat completions (whole and as stream
chunks), embeddings, the model list, usage, and server-sent event framing."""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: The SDK's finish reasons as OpenAI names them; a stop string is "stop" too.
FINISH_REASONS = {"stop_token": "stop", "max_new_tokens": "length", "stop": "stop"}
SSE_DONE = b"data: [DONE]\n\n"


def sse(obj: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``obj`` as JSON."""
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def finish_reason(sdk_reason: str) -> str:
    return FINISH_REASONS.get(sdk_reason, "stop")


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def model_list(names: Sequence[str], created: int = 0) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": created, "owned_by": "resplit"} for n in names],
    }


def _floats_base64(vector: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def embeddings(
    model: str, vectors: Sequence[Sequence[float]], prompt_tokens: int, fmt: str
) -> dict[str, Any]:
    """The embeddings answer; ``fmt`` "base64" packs each vector as little-endian float32
    (what the openai client asks for by default)."""
    data = [
        {"object": "embedding", "index": i, "embedding": _floats_base64(v) if fmt == "base64" else list(v)}
        for i, v in enumerate(vectors)
    ]
    counts = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": counts}


@dataclass
class TokenLogprob:
    """One generated token's text, log-probability and the best alternatives."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


@dataclass
class Shaper:
    """Builds the answers of one completion request (chat or text) with its id."""

    model: str
    chat: bool
    created: int = field(default_factory=lambda: int(time.time()))
    id: str = ""
    #: Characters of text shown so far (text completions' ``text_offset``).
    offset: int = 0

    def __post_init__(self) -> None:
        self.id = self.id or ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex

    def logprobs(self, entries: Sequence[TokenLogprob], texts: Sequence[str] | None = None) -> dict[str, Any]:
        """The ``logprobs`` object of ``entries``; ``texts``: the text each one added
        (text completions' offsets)."""
        if self.chat:
            return {
                "content": [
                    {
                        "token": e.token,
                        "logprob": e.logprob,
                        "bytes": _bytes(e.token),
                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": _bytes(t)} for t, lp in e.top],
                    }
                    for e in entries
                ],
                "refusal": None,
            }
        offsets = []
        for i, _ in enumerate(entries):
            offsets.append(self.offset)
            self.offset += len(texts[i]) if texts else 0
        return {
            "tokens": [e.token for e in entries],
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [dict(e.top) for e in entries] if any(e.top for e in entries) else None,
            "text_offset": offsets,
        }

    def _base(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(
        self, text: str, logprobs: dict[str, Any] | None = None, finish: str | None = None, role: bool = False
    ) -> dict[str, Any]:
        """One stream chunk: ``text`` added (``role``: the first chat chunk names the role)."""
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": text} if role else {"content": text}
            if finish is not None and not text and not role:
                delta = {}
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            return {**self._base("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
        return {**self._base("text_completion"), "choices": [choice]}

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """The last chunk of a stream with ``stream_options.include_usage``: no choices, the usage."""
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._base(kind), "choices": [], "usage": usage(prompt_tokens, completion_tokens)}

    def whole(
        self,
        text: str,
        finish: str,
        prompt_tokens: int,
        completion_tokens: int,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The answer of a request without ``stream``."""
        if self.chat:
            message = {"role": "assistant", "content": text, "refusal": None}
            choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}
            kind = "text_completion"
        return {**self._base(kind), "choices": [choice], "usage": usage(prompt_tokens, completion_tokens)}
