"""Bad input over raw HTTP: each is a clear 400 (or 413) in OpenAI's error shape
that names the field, nothing reaches Gemini, and the gateway keeps serving."""

from __future__ import annotations

import base64
import json
from typing import Any

import openai
import pytest

from .api_helpers import assert_openai_error, say
from .conftest import STRICT_LIMIT

MODEL = "gemini-2.5-flash"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()


def ok(strict_raw) -> None:
    r = strict_raw.post("/v1/chat/completions", json={"model": MODEL, "messages": say("still serving")})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Echo: still serving"


def user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


# -- bodies that are not a valid request ---------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_body",
    [b'{"model": "gemini-2.5-flash", "messages": [', b"", b"not json at all", b"{'single': 'quotes'}", b"\xff\xfe{}"],
    ids=["truncated", "empty", "text", "python-dict", "bad-utf8"],
)
def test_malformed_json(strict_raw, fake, raw_body):
    r = strict_raw.post("/v1/chat/completions", content=raw_body, headers={"content-type": "application/json"})
    err = assert_openai_error(r, 400, type="invalid_request_error")
    assert "JSON" in err["message"]
    assert fake.stats()["requests"] == 0
    ok(strict_raw)


@pytest.mark.parametrize("raw_body", [b"[1, 2]", b'"a string"', b"null", b"42", b"true"])
def test_json_that_is_not_an_object(strict_raw, fake, raw_body):
    r = strict_raw.post("/v1/chat/completions", content=raw_body, headers={"content-type": "application/json"})
    assert_openai_error(r, 400, type="invalid_request_error")
    ok(strict_raw)


@pytest.mark.parametrize(
    "body, param, code",
    [
        ({"messages": say("hi")}, "model", "missing_required_parameter"),
        ({"model": MODEL}, "messages", "missing_required_parameter"),
        ({"model": MODEL, "messages": "hello"}, "messages", "invalid_type"),
        ({"model": MODEL, "messages": []}, "messages", None),
        ({"model": 42, "messages": say("hi")}, "model", "invalid_type"),
        ({"model": "", "messages": say("hi")}, "model", None),
        ({"model": MODEL, "messages": say("hi"), "temperature": "hot"}, "temperature", "invalid_type"),
        ({"model": MODEL, "messages": say("hi"), "temperature": 3}, "temperature", "invalid_value"),
        ({"model": MODEL, "messages": say("hi"), "top_p": -0.5}, "top_p", "invalid_value"),
        ({"model": MODEL, "messages": say("hi"), "n": 0}, "n", "invalid_value"),
        ({"model": MODEL, "messages": say("hi"), "max_tokens": "ten"}, "max_tokens", "invalid_type"),
        ({"model": MODEL, "messages": say("hi"), "stream": "yes please"}, "stream", "invalid_type"),
        ({"model": MODEL, "messages": say("hi"), "stop": 5}, "stop", "invalid_type"),
        ({"model": MODEL, "messages": user(42)}, "messages[0].content", "invalid_type"),
        ({"model": MODEL, "messages": [{"content": "hi"}]}, "messages[0].role", "missing_required_parameter"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "invalid_value"),
        ({"model": MODEL, "messages": ["hi"]}, "messages[0]", "invalid_type"),
        ({"model": MODEL, "messages": user([{"type": "text"}])}, "messages[0].content[0].text", None),
        ({"model": MODEL, "messages": user([{"type": "video", "video": {}}])}, "messages[0].content[0].type", "invalid_value"),
        (
            {"model": MODEL, "messages": user([{"type": "image_url", "image_url": {"detail": "low"}}])},
            "messages[0].content[0].image_url.url",
            "missing_required_parameter",
        ),
    ],
)
def test_schema_violations_name_the_field(strict_raw, fake, body, param, code):
    r = strict_raw.post("/v1/chat/completions", json=body)
    err = assert_openai_error(r, 400, param=param, type="invalid_request_error")
    if code is not None:
        assert err["code"] == code
    assert fake.stats()["requests"] == 0
    ok(strict_raw)


def test_empty_content_only_messages(strict_raw, fake):
    r = strict_raw.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "system", "content": "sys"}]})
    assert_openai_error(r, 400, param="messages")
    ok(strict_raw)


def test_sdk_sees_bad_request(strict_client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        strict_client.chat.completions.create(model=MODEL, messages=say("x"), temperature="warm")  # type: ignore[arg-type]
    assert info.value.param == "temperature"
    assert info.value.code == "invalid_type"


@pytest.mark.parametrize(("metadata", "param", "code"), [
    ({f"k{i}": "v" for i in range(17)}, "metadata", "object_above_max_properties"),
    ({"note": "v" * 513}, "metadata.note", "string_above_max_length"),
    ({"k" * 65: "v"}, "metadata", "string_above_max_length"),
])
def test_metadata_over_openais_limits_is_a_400_on_chat_and_responses(strict_client, fake, metadata, param, code):
    """16 pairs, keys up to 64 characters, values up to 512: OpenAI's limits, on both endpoints (streamed too)."""
    calls = (
        lambda: strict_client.chat.completions.create(model=MODEL, messages=say("x"), metadata=metadata),
        lambda: strict_client.chat.completions.create(model=MODEL, messages=say("x"), metadata=metadata, stream=True),
        lambda: strict_client.responses.create(model=MODEL, input="x", metadata=metadata),
    )
    for call in calls:
        with pytest.raises(openai.BadRequestError) as info:
            call()
        assert (info.value.param, info.value.code) == (param, code)
    assert fake.requests() == []  # refused before Google
    at_limit = {f"k{i:02d}" + "k" * 61: "v" * 512 for i in range(16)}
    strict_client.chat.completions.create(model=MODEL, messages=say("x"), metadata=at_limit)
    strict_client.responses.create(model=MODEL, input="x", metadata=at_limit)


# -- size limit ---------------------------------------------------------------------------------------


def big_body() -> bytes:
    body = json.dumps({"model": MODEL, "messages": say("x" * (STRICT_LIMIT + 1000))}).encode()
    assert len(body) > STRICT_LIMIT
    return body


def test_body_over_limit_with_content_length(strict_raw, fake):
    r = strict_raw.post("/v1/chat/completions", content=big_body(), headers={"content-type": "application/json"})
    err = assert_openai_error(r, 413, type="invalid_request_error")
    assert str(STRICT_LIMIT) in err["message"]
    assert fake.stats()["requests"] == 0
    ok(strict_raw)


def test_body_over_limit_chunked(strict_raw, fake):
    body = big_body()

    def pieces():
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    r = strict_raw.post("/v1/chat/completions", content=pieces(), headers={"content-type": "application/json"})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert_openai_error(r, 413)
    assert fake.stats()["requests"] == 0
    ok(strict_raw)


def test_body_just_under_limit_chunked_is_served(strict_raw, fake):
    body = json.dumps({"model": MODEL, "messages": say("y" * (STRICT_LIMIT - 200))}).encode()
    assert len(body) <= STRICT_LIMIT

    def pieces():
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    r = strict_raw.post("/v1/chat/completions", content=pieces(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_sdk_sees_413_as_status_error(strict_client, fake):
    with pytest.raises(openai.APIStatusError) as info:
        strict_client.chat.completions.create(model=MODEL, messages=say("z" * (STRICT_LIMIT * 2)))
    assert info.value.status_code == 413


# -- content the translator refuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["data:image/png;base64,@@not*base64@@", "data:image/png;base64,", "data:image/png;base64,iVBORw0KGgo$$"],
    ids=["garbage", "empty", "trailing-junk"],
)
def test_invalid_base64_data_url(strict_raw, fake, url):
    content = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]
    r = strict_raw.post("/v1/chat/completions", json={"model": MODEL, "messages": user(content)})
    err = assert_openai_error(r, 400, param="messages[0].content[1].image_url.url")
    assert "messages[0].content[1]" in err["message"]
    ok(strict_raw)


def test_invalid_base64_audio(strict_raw, fake):
    content = [{"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}]
    r = strict_raw.post("/v1/chat/completions", json={"model": MODEL, "messages": user(content)})
    assert_openai_error(r, 400, param="messages[0].content[0].input_audio.data")
    ok(strict_raw)


def test_https_image_with_unknown_type_names_the_part(strict_raw, fake):
    content = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
        {"type": "image_url", "image_url": {"url": "https://example.com/images/photo?id=7"}},
    ]
    r = strict_raw.post("/v1/chat/completions", json={"model": MODEL, "messages": user(content)})
    err = assert_openai_error(r, 400, param="messages[0].content[2].image_url.url")
    assert "media type" in err["message"]
    assert fake.stats()["requests"] == 0
    ok(strict_raw)


def test_unsupported_url_scheme(strict_raw, fake):
    content = [{"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}]
    r = strict_raw.post("/v1/chat/completions", json={"model": MODEL, "messages": user(content)})
    assert_openai_error(r, 400, param="messages[0].content[0].image_url.url")


def test_tool_message_without_matching_call(strict_raw, fake):
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "call_nope", "content": "42"},
    ]
    r = strict_raw.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
    err = assert_openai_error(r, 400, param="messages[1].role")
    assert "call_nope" in err["message"]
    ok(strict_raw)


def test_tool_call_without_its_result(strict_raw, fake):
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "user", "content": "and?"},
    ]
    r = strict_raw.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
    err = assert_openai_error(r, 400, param="messages[1].tool_calls")
    assert "call_1" in err["message"]


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"logit_bias": {"1234": 5}}, "logit_bias"),
        ({"tools": [{"type": "custom", "custom": {"name": "grammar_tool"}}]}, "tools[0].type"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_unsupported_parameters_are_named(strict_raw, strict_client, fake, extra, param):
    r = strict_raw.post("/v1/chat/completions", json={"model": MODEL, "messages": say("hi"), **extra})
    err = assert_openai_error(r, 400, param=param, type="invalid_request_error")
    assert param.split("[")[0] in err["message"]
    assert fake.stats()["requests"] == 0
    with pytest.raises(openai.BadRequestError) as info:
        strict_client.chat.completions.create(model=MODEL, messages=say("hi"), extra_body=extra)
    assert info.value.param == param
    ok(strict_raw)


def test_shape_neutral_values_accepted(strict_raw, fake):
    """An empty logit_bias and text-only modalities change nothing: accepted."""
    r = strict_raw.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": say("fine"), "logit_bias": {}, "modalities": ["text"]}
    )
    assert r.status_code == 200, r.text
    assert "generationConfig" not in fake.last_body()


def test_wrong_method_on_chat_path(strict_raw, fake):
    r = strict_raw.get("/v1/chat/completions")
    assert r.status_code in (404, 405)  # OpenAI answers 404 "Invalid URL (GET /v1/chat/completions)"
    err = assert_openai_error(r, r.status_code, type=...)
    assert "GET" in err["message"] and "/v1/chat/completions" in err["message"]


def test_many_bad_requests_then_good(strict_raw, fake):
    for _ in range(20):
        assert strict_raw.post("/v1/chat/completions", content=b"{{{").status_code == 400
    ok(strict_raw)
