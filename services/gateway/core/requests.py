"""OpenAI request bodies, parsed and checked: a bad field is a 400 naming it.

Fields the gateway does not use (``user``, ``frequency_penalty`` at 0, ...) are
ignored, as OpenAI-compatible servers do; a field it cannot honour (``n`` > 1,
``echo``, ``best_of`` > 1, non-zero penalties) is refused, never silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import bad_request

#: OpenAI's limits on the fields the gateway accepts.
MAX_STOP_STRINGS = 4
MAX_TOP_LOGPROBS_CHAT = 20
MAX_LOGPROBS_COMPLETION = 5
ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass
class GenerationRequest:
    """A chat or text completion request, checked."""

    model: str
    #: Chat messages (``{"role", "content"}``, content as text), or None for a text prompt.
    messages: list[dict[str, str]] | None = None
    #: The text prompt, or its token ids (completions only).
    prompt: str | list[int] | None = None
    stream: bool = False
    include_usage: bool = False
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    #: None: a fresh seed per request (OpenAI's default is not reproducible either).
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    #: Return the chosen tokens' log-probabilities.
    logprobs: bool = False
    #: How many alternatives per position, by log-probability (0: none).
    top_logprobs: int = 0
    #: Go on past the tokenizer's EOS (vLLM's extension; benchmarks use it for fixed lengths).
    ignore_eos: bool = False

    @property
    def chat(self) -> bool:
        return self.messages is not None

    @property
    def sampler_top_p(self) -> float:
        """``top_p`` as the SDK's sampler takes it: 0 means no nucleus filter there, so
        OpenAI's 1 (keep all) becomes 0 and OpenAI's 0 (keep only the likeliest) a tiny
        mass that keeps exactly the top token."""
        if self.top_p >= 1.0:
            return 0.0
        return max(self.top_p, 1e-9)


@dataclass
class EmbeddingRequest:
    model: str
    inputs: list[str]
    encoding_format: str = "float"


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object", code="invalid_json")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (a deployment name)", "model", "missing_required_parameter")
    return model


def _bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"'{name}' must be a boolean, got {value!r}", name)
    return value


def _int(
    body: dict[str, Any], name: str, default: int | None, low: int, high: int | None = None
) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer, got {value!r}", name)
    if value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise bad_request(f"'{name}' must be {span}, got {value}", name)
    return value


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{name}' must be a number, got {value!r}", name)
    if not low <= value <= high:
        raise bad_request(f"'{name}' must be in [{low:g}, {high:g}], got {value}", name)
    return float(value)


def _stop(body: dict[str, Any]) -> list[str]:
    value = body.get("stop")
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("'stop' must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"'stop' takes at most {MAX_STOP_STRINGS} strings, got {len(stops)}", "stop")
    return list(stops)


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if _int(body, "n", 1, 1, None) != 1:
        raise bad_request("only n=1 is supported: send one request per choice", "n", "unsupported_value")
    if _int(body, "best_of", 1, 1, None) != 1:
        raise bad_request("only best_of=1 is supported", "best_of", "unsupported_value")
    if _bool(body, "echo"):
        raise bad_request("echo is not supported", "echo", "unsupported_value")
    for name in ("presence_penalty", "frequency_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0.0:
            raise bad_request(f"'{name}' is not supported (only 0)", name, "unsupported_value")
    if body.get("logit_bias"):
        raise bad_request("'logit_bias' is not supported", "logit_bias", "unsupported_value")
    if body.get("tools") or body.get("functions"):
        raise bad_request("tool calling is not supported", "tools", "unsupported_value")


def _sampling(body: dict[str, Any], default_max_tokens: int) -> dict[str, Any]:
    _refuse_unsupported(body)
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    if options is not None and (not stream or not isinstance(options, dict)):
        raise bad_request("'stream_options' is an object, and only with stream: true", "stream_options")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    return {
        "model": _model(body),
        "stream": stream,
        "include_usage": _bool(options or {}, "include_usage"),
        "max_tokens": _int({name: limit}, name, default_max_tokens, 1),
        "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": _number(body, "top_p", 1.0, 0.0, 1.0),
        "seed": _int(body, "seed", None, -(2**63), 2**63 - 1),
        "stop": _stop(body),
        "ignore_eos": _bool(body, "ignore_eos"),
    }


def _content(message: dict[str, Any], index: int) -> str:
    """A message's text: a string, or a list of text parts (images are refused)."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise bad_request("only text content parts are supported", f"messages[{index}].content")
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request("'content' must be a string or a list of text parts", f"messages[{index}].content")


def parse_chat(body: dict[str, Any], default_max_tokens: int) -> GenerationRequest:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", "messages", "missing_required_parameter")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad_request(f"each message needs a 'role' among {', '.join(ROLES)}", f"messages[{i}].role")
        checked.append({"role": message["role"], "content": _content(message, i)})
    if body.get("logprobs") is None and body.get("top_logprobs") is not None:
        raise bad_request("'top_logprobs' needs logprobs: true", "top_logprobs")
    logprobs = _bool(body, "logprobs")
    top = _int(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS_CHAT) or 0
    if top and not logprobs:
        raise bad_request("'top_logprobs' needs logprobs: true", "top_logprobs")
    return GenerationRequest(
        messages=checked, logprobs=logprobs, top_logprobs=top, **_sampling(body, default_max_tokens)
    )


def parse_completion(body: dict[str, Any], default_max_tokens: int) -> GenerationRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, list):
        if not prompt or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt):
            raise bad_request("'prompt' must be a string, or one list of token ids (no batches)", "prompt")
    elif not isinstance(prompt, str) or not prompt:
        raise bad_request("'prompt' must be a non-empty string", "prompt", "missing_required_parameter")
    top = _int(body, "logprobs", None, 0, MAX_LOGPROBS_COMPLETION)
    return GenerationRequest(
        prompt=prompt, logprobs=top is not None, top_logprobs=top or 0, **_sampling(body, default_max_tokens)
    )


def parse_embeddings(body: dict[str, Any]) -> EmbeddingRequest:
    model = _model(body)
    value = body.get("input")
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) and t for t in inputs):
        raise bad_request("'input' must be a non-empty string or a list of them", "input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise bad_request(f"'encoding_format' must be 'float' or 'base64', got {fmt!r}", "encoding_format")
    if body.get("dimensions") is not None:
        raise bad_request("'dimensions' is not supported (the model's own size only)", "dimensions")
    return EmbeddingRequest(model=model, inputs=inputs, encoding_format=fmt)
