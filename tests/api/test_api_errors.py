"""Upstream errors and endings over real HTTP: each Google error becomes OpenAI's
error body with the status the openai SDK maps to the right exception; errors
mid-stream become one `data: {"error": ...}` event; finish reasons, blocked
prompts, empty candidates, several candidates and logprobs."""

from __future__ import annotations

import logging

import openai
import pytest

from .api_helpers import assert_openai_error, data_events, say

MODEL = "gemini-2.5-flash"


def chat(client, **kwargs):
    kwargs.setdefault("model", MODEL)
    return client.chat.completions.create(**kwargs)


def error_of(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def gateway_still_serves(client) -> None:
    assert chat(client, messages=say("still alive")).choices[0].message.content == "Echo: still alive"


# -- Google's per-model refusals: 400 naming the OpenAI parameter --------------------------------------


@pytest.mark.parametrize(
    "model, params, param",
    [
        ("gemini-2.5-flash", {"presence_penalty": 0.5}, "presence_penalty"),
        ("gemini-2.5-pro", {"presence_penalty": -1.0}, "presence_penalty"),
        ("gemini-2.5-flash", {"frequency_penalty": 0.7}, "frequency_penalty"),
        ("gemini-2.0-flash", {"extra_body": {"google": {"thinking_config": {"thinking_budget": 1024}}}},
         "extra_body.google.thinking_config"),
        ("gemini-3-flash-preview", {"logprobs": True}, "logprobs"),
        ("gemini-3-pro-preview", {"logprobs": True, "top_logprobs": 3}, "logprobs"),
        ("gemini-3-flash-preview", {"n": 2}, "n"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_model_refusal_is_bad_request_naming_param(strict_client, fake, model, params, param, stream):
    with pytest.raises(openai.BadRequestError) as info:
        result = chat(strict_client, model=model, messages=say("refuse me"), stream=stream, **params)
        list(result)
    err = error_of(info.value)
    assert info.value.status_code == 400
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert model in err["message"] or "Multiple candidates" in err["message"]
    assert fake.requests()[-1]["status"] == 400  # Google's answer, not a gateway guess
    gateway_still_serves(strict_client)


def test_penalties_equal_to_defaults_are_not_forwarded(strict_client, fake):
    """presence_penalty 0, n 1, logprobs false: OpenAI defaults, which Gemini 3 would refuse as fields."""
    completion = chat(
        strict_client, model="gemini-3-flash-preview", messages=say("defaults"), presence_penalty=0, frequency_penalty=0,
        n=1, logprobs=False,
    )
    assert completion.choices[0].message.content == "Echo: defaults"
    assert "generationConfig" not in fake.last_body()


# -- status mapping ----------------------------------------------------------------------------------


def test_unknown_model_is_not_found(strict_client, fake):
    with pytest.raises(openai.NotFoundError) as info:
        chat(strict_client, model="gemini-does-not-exist", messages=say("hi"))
    err = error_of(info.value)
    assert err["code"] == "model_not_found" and err["param"] == "model"
    assert err["type"] == "not_found_error"


def test_unknown_model_streamed_is_not_found_before_first_byte(strict_client, fake):
    with pytest.raises(openai.NotFoundError) as info:
        list(chat(strict_client, model="gemini-does-not-exist", messages=say("hi"), stream=True))
    assert error_of(info.value)["code"] == "model_not_found"
    assert info.value.response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("status", [500, 503, 504])
@pytest.mark.parametrize("stream", [False, True])
def test_server_errors(strict_client, strict_raw, fake, status, stream):
    with pytest.raises(openai.InternalServerError) as info:
        list(chat(strict_client, messages=say("fail", error={"status": status}), stream=stream)) if stream else chat(
            strict_client, messages=say("fail", error={"status": status})
        )
    assert info.value.status_code == status
    err = error_of(info.value)
    assert err["type"] == "server_error"
    r = strict_raw.post("/v1/chat/completions", json={"model": MODEL, "messages": say("fail", error={"status": status})})
    assert_openai_error(r, status, type="server_error")
    gateway_still_serves(strict_client)


def test_permission_denied(strict_client, fake):
    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(strict_client, messages=say("no", error={"status": 403}))
    assert error_of(info.value)["type"] == "permission_error"


def test_retry_on_503_before_first_byte(client, fake):
    """The default gateway retries a 503 before anything reached the client."""
    completion = chat(
        client, messages=say("retry me", fail_times=1, fail_key="api-503", error={"status": 503}), stream=False
    )
    assert completion.choices[0].message.content == "Echo: retry me"
    assert [r["status"] for r in fake.requests()] == [503, 200]


def test_rate_limit_with_retry_info(make_gateway, fake):
    gw = make_gateway(retry={"max_attempts": 1})
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
        with pytest.raises(openai.RateLimitError) as info:
            chat(c, messages=say("slow down", error={"status": 429, "retry_delay": "7s"}))
    response = info.value.response
    assert response.headers["retry-after"] == "7"
    assert "x-should-retry" not in response.headers
    err = error_of(info.value)
    assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"


def test_rate_limit_fractional_retry_delay_rounds_up(make_gateway, fake):
    gw = make_gateway(retry={"max_attempts": 1})
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
        with pytest.raises(openai.RateLimitError) as info:
            chat(c, messages=say("slow down", error={"status": 429, "retry_delay": "2.2s"}))
    assert info.value.response.headers["retry-after"] == "3"


@pytest.mark.parametrize(
    "error",
    [
        {"status": 429, "retry_delay": "68405s"},
        {"status": 429, "retry_delay": "30s", "quota_id": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"},
    ],
    ids=["long-delay", "daily-quota"],
)
def test_long_or_daily_quota_tells_sdk_not_to_retry(make_gateway, fake, error):
    gw = make_gateway(retry={"max_attempts": 1})
    # an SDK with its default retries: x-should-retry: false must stop it after one call
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=2) as c:
        with pytest.raises(openai.RateLimitError) as info:
            chat(c, messages=say("quota", error=error))
    assert info.value.response.headers["x-should-retry"] == "false"
    assert int(info.value.response.headers["retry-after"]) >= 30
    assert fake.stats()["generate_requests"] == 1


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_key_refused_is_502_without_details(make_gateway, fake, caplog, stream):
    secret = "AIzaSy-not-a-key-the-fake-accepts-0123456789"
    gw = make_gateway(upstreams=[{"name": "bad", "type": "gemini", "base_url": fake.url, "api_keys": [secret]}])
    caplog.set_level(logging.DEBUG)
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
        with pytest.raises(openai.InternalServerError) as info:
            list(chat(c, messages=say("hi"), stream=stream)) if stream else chat(c, messages=say("hi"))
    exc = info.value
    assert exc.status_code == 502
    assert exc.response.headers["content-type"].startswith("application/json")
    err = error_of(exc)
    assert err["type"] == "server_error"
    text = exc.response.text
    assert secret not in text
    assert "API_KEY_INVALID" not in text and "API key not valid" not in text
    for value in exc.response.headers.values():
        assert secret not in value
    # the fake refused the key, which was sent in the header, never in the URL
    recorded = fake.requests()
    assert len(recorded) == 1 and recorded[0]["status"] == 400
    assert "key" not in recorded[0]["query"] and secret not in recorded[0]["path"]
    # the operator is told, loudly, without the key
    assert secret not in caplog.text
    assert any(r.levelno >= logging.ERROR and "bad" in r.getMessage() for r in caplog.records), caplog.text


def test_a_refused_key_stays_a_502_for_later_requests(make_gateway, fake):
    """A key Google keeps refusing: every request is the operator's 502, never a rate-limit 429 that
    SDKs would keep retrying; and each one still calls Google (the only key is probed, never a
    lock-out without trying)."""
    gw = make_gateway(upstreams=[{"name": "bad", "type": "gemini", "base_url": fake.url, "api_keys": ["refused-key"]}])
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
        for _ in range(3):
            with pytest.raises(openai.InternalServerError) as info:
                chat(c, messages=say("hi"))
            assert info.value.status_code == 502
            assert error_of(info.value)["code"] == "upstream_auth_failed"
    assert len(fake.requests()) == 3  # out of rotation, but probed when nothing else is left


def test_upstream_unreachable_is_502(make_gateway, fake):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    gw = make_gateway(
        upstreams=[{"name": "dead", "type": "gemini", "base_url": dead, "api_keys": ["k"]}], retry={"max_attempts": 1}
    )
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as c:
        with pytest.raises(openai.InternalServerError) as info:
            chat(c, messages=say("hi"))
    assert info.value.status_code in (502, 504)
    assert error_of(info.value)["type"] == "server_error"


# -- errors mid-stream ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw_json", [False, True], ids=["data-event", "unprefixed-json"])
def test_mid_stream_error_event_then_close(strict_raw, fake, raw_json):
    body = {
        "model": MODEL,
        "messages": say(
            "go", reply="a b c d e f g h i", chunks=3, chunk_delay_ms=50, error={"status": 500, "after_chunks": 2, "raw": raw_json}
        ),
        "stream": True,
    }
    r = strict_raw.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert b"[DONE]" not in r.content
    events = data_events(r.content)
    *chunks, last = events
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "a b c d e f"
    assert set(last) == {"error"}
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["type"] == "server_error" and last["error"]["message"]
    assert sum(1 for e in events if "error" in e) == 1


@pytest.mark.parametrize("raw_json", [False, True], ids=["data-event", "unprefixed-json"])
def test_mid_stream_error_raises_api_error_in_sdk(strict_client, fake, raw_json):
    stream = chat(
        strict_client,
        messages=say(
            "go", reply="a b c d e f", chunks=3, chunk_delay_ms=50, error={"status": 503, "after_chunks": 1, "raw": raw_json}
        ),
        stream=True,
    )
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert not isinstance(info.value, openai.APIStatusError)
    assert "".join(received) == "a b"
    assert info.value.message
    gateway_still_serves(strict_client)


def test_mid_stream_connection_reset(strict_raw, fake):
    body = {"model": MODEL, "messages": say("go", reply="a b c d e f", chunks=3, chunk_delay_ms=50, reset_after_chunks=1), "stream": True}
    r = strict_raw.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    events = data_events(r.content)
    assert "error" in events[-1] and events[-1]["error"]["type"] == "server_error"
    assert b"[DONE]" not in r.content


def test_error_before_first_chunk_of_stream_is_http_error(strict_raw, fake):
    body = {"model": MODEL, "messages": say("go", error={"status": 503, "after_chunks": 0}), "stream": True}
    r = strict_raw.post("/v1/chat/completions", json=body)
    assert_openai_error(r, 503, type="server_error")


# -- endings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_blocked_prompt_is_content_filter_400(strict_client, fake, stream):
    with pytest.raises(openai.BadRequestError) as info:
        result = chat(strict_client, messages=say("bad words", block_prompt="SAFETY"), stream=stream)
        list(result)
    err = error_of(info.value)
    assert err["code"] == "content_filter"
    assert "SAFETY" in err["message"]
    assert info.value.response.headers["content-type"].startswith("application/json")


# docs/gemini-facts.md#finish-reasons (+ docs/design.md#endings): the OpenAI finish_reason a client must see for each Gemini reason.
EXPECTED_FINISH = {
    "FINISH_REASON_UNSPECIFIED": "stop",
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "OTHER": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_OTHER": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "NO_IMAGE": "content_filter",
    "TOO_MANY_TOOL_CALLS": "stop",
    "MISSING_THOUGHT_SIGNATURE": "stop",
    "MALFORMED_RESPONSE": "stop",
    "ESCALATION": "content_filter",
    "PUP_LIMITED_DISABLED": "content_filter",
    "CONTINUATION": "length",
    "MODEL_ARMOR": "content_filter",
}


def test_every_gemini_finish_reason_is_covered():
    from app.testing.fake_gemini.directives import FINISH_REASONS

    assert set(EXPECTED_FINISH) | {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"} == set(FINISH_REASONS)


@pytest.mark.parametrize("reason", sorted(EXPECTED_FINISH))
def test_finish_reason_mapping(strict_client, fake, reason):
    completion = chat(strict_client, messages=say("finish", reply="some words here", finish_reason=reason))
    choice = completion.choices[0]
    assert choice.finish_reason == EXPECTED_FINISH[reason]
    assert choice.message.content == "some words here"
    stream = chat(strict_client, messages=say("finish", reply="some words here", finish_reason=reason), stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "some words here"
    assert chunks[-1].choices[0].finish_reason == EXPECTED_FINISH[reason]
    assert not chunks[-1].choices[0].delta.content  # on a final delta of its own
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"])
@pytest.mark.parametrize("stream", [False, True])
def test_broken_tool_call_is_never_a_silent_stop(strict_client, fake, reason, stream):
    with pytest.raises(openai.APIStatusError) as info:
        result = chat(strict_client, messages=say("call", finish_reason=reason), stream=stream)
        list(result)
    assert error_of(info.value)["code"] == "malformed_function_call"


def test_max_tokens_is_length(strict_client, fake):
    completion = chat(strict_client, model="gemini-2.0-flash", messages=say("one two three four five six"), max_tokens=3)
    assert completion.choices[0].finish_reason == "length"
    assert fake.last_body()["generationConfig"] == {"maxOutputTokens": 3}


def test_safety_mid_stream_keeps_text_and_ends_content_filter(strict_client, fake):
    chunks = list(chat(strict_client, messages=say("go", reply="partial answer text", finish_reason="SAFETY"), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "partial answer text"
    assert chunks[-1].choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize("stream", [False, True])
def test_empty_candidate_still_yields_a_choice(strict_client, fake, stream):
    """MAX_TOKENS with no parts (thinking used the budget): one choice, empty content, `length`."""
    if not stream:
        completion = chat(strict_client, messages=say("empty", finish_reason="MAX_TOKENS"))
        assert len(completion.choices) == 1
        assert completion.choices[0].message.content in ("", None)
        assert completion.choices[0].finish_reason == "length"
    else:
        chunks = list(chat(strict_client, messages=say("empty", finish_reason="MAX_TOKENS"), stream=True))
        assert chunks and chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""
        assert chunks[-1].choices[0].finish_reason == "length"


def test_thinking_exhausts_budget_gives_empty_length_choice(strict_client, fake):
    completion = chat(strict_client, model="gemini-2.5-flash", messages=say("think hard"), max_completion_tokens=5)
    assert len(completion.choices) == 1
    assert completion.choices[0].finish_reason == "length"
    assert not completion.choices[0].message.content
    assert completion.usage.completion_tokens_details.reasoning_tokens > 0


# -- several candidates and logprobs ---------------------------------------------------------------------


def test_n_candidates_give_n_choices(strict_client, fake):
    completion = chat(strict_client, model="gemini-2.0-flash", messages=say("three ways"), n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    texts = [c.message.content for c in completion.choices]
    assert len(set(texts)) == 3 and all(t.startswith("Echo: three ways") for t in texts)
    assert all(c.finish_reason == "stop" for c in completion.choices)
    assert fake.last_body()["generationConfig"] == {"candidateCount": 3}


def test_n_candidates_streamed(strict_client, fake):
    chunks = list(chat(strict_client, model="gemini-2.0-flash", messages=say("three ways streamed here"), n=3, stream=True))
    texts: dict[int, str] = {}
    finishes: dict[int, list] = {}
    roles: dict[int, list] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            finishes.setdefault(choice.index, []).append(choice.finish_reason)
            roles.setdefault(choice.index, []).append(choice.delta.role)
    assert sorted(texts) == [0, 1, 2]
    assert len(set(texts.values())) == 3
    assert all(t.startswith("Echo: three ways streamed here") for t in texts.values())
    for index in range(3):
        assert roles[index][0] == "assistant" and all(r is None for r in roles[index][1:])
        assert finishes[index][-1] == "stop" and all(f is None for f in finishes[index][:-1])
    nonstream = chat(strict_client, model="gemini-2.0-flash", messages=say("three ways streamed here"), n=3)
    assert sorted(texts.values()) == sorted(c.message.content for c in nonstream.choices)


def test_logprobs(strict_client, fake):
    completion = chat(
        strict_client, model="gemini-2.0-flash", messages=say("log my probs"), logprobs=True, top_logprobs=2
    )
    choice = completion.choices[0]
    content = choice.logprobs.content
    assert "".join(t.token for t in content) == choice.message.content
    for token in content:
        assert token.logprob <= 0
        assert token.bytes == list(token.token.encode("utf-8"))
        assert len(token.top_logprobs) == 2
        assert token.top_logprobs[0].token == token.token
    assert fake.last_body()["generationConfig"] == {"responseLogprobs": True, "logprobs": 2}


def test_logprobs_streamed(strict_client, fake):
    chunks = list(
        chat(strict_client, model="gemini-2.0-flash", messages=say("log my probs as a stream"), logprobs=True,
             top_logprobs=1, stream=True)
    )
    tokens = [t for c in chunks if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "".join(t.token for t in tokens) == text == "Echo: log my probs as a stream"
    assert all(len(t.top_logprobs) == 1 for t in tokens)


def test_top_logprobs_without_logprobs_is_400(strict_client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        chat(strict_client, model="gemini-2.0-flash", messages=say("x"), top_logprobs=2)
    assert error_of(info.value)["param"] == "top_logprobs"
    assert fake.stats()["requests"] == 0
