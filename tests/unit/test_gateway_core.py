"""The gateway's pure logic, without a server: requests checked field by field, stop
strings over streamed text, a completion's text, logprobs and finish, answer shapes."""

from __future__ import annotations

import base64
import struct

import pytest

from services.gateway.core.completion import Completion
from services.gateway.core.errors import ApiError, from_status
from services.gateway.core.requests import parse_chat, parse_completion, parse_embeddings, parse_json
from services.gateway.core.responses import Shaper, TokenLogprob, embeddings, sse
from services.gateway.core.stops import StopText

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _error(call, *args) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args)
    return caught.value


def test_stop_strings_hold_back_what_may_begin_one():
    stops = StopText(["END", "xyz"])
    assert stops.push("hello E") == ("hello ", False)  # "E" may begin "END"
    assert stops.push("N") == ("", False)
    assert stops.push("D and more") == ("", True)
    other = StopText(["END"])
    assert other.push("hello E") == ("hello ", False)
    assert other.push("lse") == ("Else", False)  # it did not: shown after all
    assert other.flush() == ""
    held = StopText(["abc"])
    assert held.push("xab") == ("x", False)
    assert held.flush() == "ab"  # the generation ended: nothing is lost


def test_the_earliest_stop_string_wins_within_one_delta():
    assert StopText(["b", "a"]).push("xxabyy") == ("xx", True)
    assert StopText([]).push("anything") == ("anything", False)


def test_a_completion_shows_no_eos_counts_it_and_maps_finish_reasons():
    done = Completion([])
    entry = TokenLogprob("a", -0.5)
    assert done.push("a", False, "", entry).finish is None
    last = done.push("", True, "stop_token", TokenLogprob("</s>", -0.1))
    assert (last.text, last.entries, last.finish) == ("", [], "stop")
    assert (done.text, done.tokens, done.entries) == ("a", 2, [entry])
    capped = Completion([])
    capped.push("x", False, "")
    assert capped.push("y", True, "max_new_tokens").finish == "length"
    assert capped.text == "xy"
    with pytest.raises(RuntimeError):
        capped.push("z", False, "")


def test_a_stop_string_ends_a_completion_mid_token():
    completion = Completion(["\n\n"])
    assert completion.push("one\n", False, "").text == "one"
    step = completion.push("\ntwo", False, "")
    assert (step.text, step.finish) == ("", "stop")
    assert completion.text == "one"


def test_requests_are_checked_field_by_field():
    options = {"stream": True, "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2}
    parsed = parse_chat({**CHAT, "max_tokens": 5, "temperature": 0, "seed": 3, "stop": "x", **options}, 256)
    assert (parsed.max_tokens, parsed.temperature, parsed.seed, parsed.stop) == (5, 0.0, 3, ["x"])
    assert parsed.stream and parsed.include_usage and parsed.chat and parsed.top_logprobs == 2
    assert parse_chat(CHAT, 256).max_tokens == 256 and parse_chat(CHAT, 256).temperature == 1.0
    assert parse_chat({**CHAT, "max_completion_tokens": 7}, 256).max_tokens == 7
    assert [parse_chat({**CHAT, "top_p": p}, 256).sampler_top_p for p in (1, 0.5, 0)] == [0.0, 0.5, 1e-9]
    bad = [
        ({**CHAT, "n": 2}, "n", "unsupported_value"),
        ({**CHAT, "temperature": -1}, "temperature", "invalid_value"),
        ({**CHAT, "top_p": 1.5}, "top_p", "invalid_value"),
        ({**CHAT, "max_tokens": 0}, "max_tokens", "invalid_value"),
        ({**CHAT, "max_tokens": "5"}, "max_tokens", "invalid_value"),
        ({**CHAT, "stop": ["a"] * 5}, "stop", "invalid_value"),
        ({**CHAT, "top_logprobs": 2}, "top_logprobs", "invalid_value"),
        ({**CHAT, "stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
        (
            {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role",
            "invalid_value",
        ),
        ({"messages": CHAT["messages"]}, "model", "missing_required_parameter"),
        ({**CHAT, "tools": [{}]}, "tools", "unsupported_value"),
    ]
    for body, param, code in bad:
        error = _error(parse_chat, body, 256)
        assert (error.status, error.param, error.code) == (400, param, code), body


def test_completion_prompts_and_embedding_inputs():
    assert parse_completion({"model": "m", "prompt": ["one"]}, 16).prompt == "one"
    assert parse_completion({"model": "m", "prompt": [5, 6]}, 16).prompt == [5, 6]
    top = parse_completion({"model": "m", "prompt": "p", "logprobs": 3}, 16)
    assert top.logprobs and top.top_logprobs == 3
    assert _error(parse_completion, {"model": "m", "prompt": ["a", "b"]}, 16).param == "prompt"
    assert _error(parse_completion, {"model": "m", "prompt": "p", "echo": True}, 16).param == "echo"
    assert parse_embeddings({"model": "e", "input": "x"}).inputs == ["x"]
    assert _error(parse_embeddings, {"model": "e", "input": []}).param == "input"
    assert _error(parse_embeddings, {"model": "e", "input": "x", "encoding_format": "int8"}).status == 400
    assert _error(parse_json, b"[1]").code == "invalid_json"
    assert _error(parse_json, b"\xff").code == "invalid_json"


def test_grpc_failures_map_to_http_statuses():
    assert from_status("RESOURCE_EXHAUSTED", "full").status == 429
    assert from_status("UNAVAILABLE", "no route").status == 503
    assert from_status("NOT_FOUND", "gone").status == 404
    assert from_status("INVALID_ARGUMENT", "too long").status == 400
    unknown = from_status("DATA_LOSS", "?")
    assert (unknown.status, unknown.type) == (500, "server_error")
    assert set(unknown.body()["error"]) == {"message", "type", "param", "code"}


def test_answer_shapes():
    chat = Shaper("m", chat=True)
    first = chat.chunk("", role=True)["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": ""} and chat.id.startswith("chatcmpl-")
    assert chat.chunk("", finish="stop")["choices"][0]["delta"] == {}
    whole = chat.whole("hi", "length", 3, 2)
    assert whole["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    text = Shaper("m", chat=False)
    logprobs = text.logprobs([TokenLogprob("a", -1.0, [("a", -1.0)]), TokenLogprob("bc", -2.0)], ["a", "bc"])
    assert logprobs["text_offset"] == [0, 1] and logprobs["top_logprobs"] == [{"a": -1.0}, {}]
    assert text.logprobs([TokenLogprob("d", -0.1)], ["d"])["text_offset"] == [3]
    packed = embeddings("e", [[1.0, -0.5]], 4, "base64")["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(packed)) == (1.0, -0.5)
    assert sse({"a": 1}) == b'data: {"a":1}\n\n'


def test_the_api_key_comes_from_its_file_else_the_environment_else_none(tmp_path, monkeypatch):
    from services.gateway.config import GatewaySettings
    from services.gateway.server import read_api_key

    monkeypatch.delenv("RESPLIT_API_KEY", raising=False)
    assert read_api_key(GatewaySettings(insecure=True)) is None  # an open API
    monkeypatch.setenv("RESPLIT_API_KEY", " from-env ")
    assert read_api_key(GatewaySettings(insecure=True)) == "from-env"
    (tmp_path / "key").write_text("from-file\n")
    assert read_api_key(GatewaySettings(insecure=True, api_key_file=str(tmp_path / "key"))) == "from-file"
