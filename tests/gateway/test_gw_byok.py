"""Bring-your-own-key (`auth.byok: true`): the client's bearer token is its own Gemini API key."""

from __future__ import annotations

import logging

import httpx
import openai
import pytest

from .gw_support import FAST_RETRY, directive, msg, oai


@pytest.fixture
def byok_gw(make_gateway, fake):
    return make_gateway(
        auth={"byok": True},
        upstreams=[{"name": "ai", "type": "gemini", "base_url": fake.url}],  # no keys of its own
        retry=FAST_RETRY,
    )


def test_each_clients_key_goes_to_google(byok_gw, fake) -> None:
    for key in ("test-key", "second-key"):
        with oai(byok_gw, key=key) as client:
            answer = client.chat.completions.create(model="gemini-2.5-flash", messages=msg(f"as {key}"))
            stream = client.chat.completions.create(model="gemini-2.5-flash", messages=msg("streamed"), stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: streamed"
        assert answer.choices[0].message.content == f"Echo: as {key}"
    assert [r["api_key"] for r in fake.requests()] == ["test-key", "test-key", "second-key", "second-key"]
    for record in fake.requests():
        assert "key=" not in str(record["query"])  # header only, never the URL


@pytest.mark.parametrize("stream", [False, True])
def test_a_key_google_rejects_is_the_clients_401(byok_gw, fake, caplog, stream: bool) -> None:
    caplog.set_level(logging.DEBUG)
    bad = "AIzaSy-not-a-real-key-0123456789"
    with oai(byok_gw, key=bad) as client:
        with pytest.raises(openai.AuthenticationError) as info:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("hi"), stream=stream)
    assert info.value.status_code == 401
    assert info.value.body["type"] == "invalid_request_error" and info.value.body["code"] == "invalid_api_key"
    assert bad not in info.value.response.text
    # Google's answer to a bad key is 400 API_KEY_INVALID; exactly one call, no retry with a refused key.
    assert [(r["model"], r["status"]) for r in fake.requests()] == [("gemini-2.5-flash", 400)]
    for record in caplog.records:
        assert bad not in record.getMessage()


def test_a_rejected_client_key_does_not_touch_other_clients(byok_gw, fake) -> None:
    with oai(byok_gw, key="wrong-key-1234") as bad:
        for _ in range(3):
            with pytest.raises(openai.AuthenticationError):
                bad.chat.completions.create(model="gemini-2.5-flash", messages=msg("x"))
    with oai(byok_gw, key="test-key") as good:
        raw = good.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=msg("fine"))
    assert raw.parse().choices[0].message.content == "Echo: fine"
    assert raw.headers["x-gemini-proxy-attempts"] == "1"


def test_no_key_is_a_401_before_any_upstream_call(byok_gw, fake) -> None:
    body = {"model": "gemini-2.5-flash", "messages": msg("hi")}
    missing = httpx.post(byok_gw.url + "/v1/chat/completions", json=body)
    wrong_scheme = httpx.post(byok_gw.url + "/v1/chat/completions", json=body, headers={"authorization": "Basic abc"})
    for response in (missing, wrong_scheme):
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}
    assert fake.requests() == []


def test_a_rate_limited_client_key_is_not_parked_for_others(byok_gw, fake) -> None:
    prompt = "x\n" + directive(fail_api_keys={"test-key": {"status": 429, "retry_delay": "30s"}})
    with oai(byok_gw, key="test-key") as limited:
        with pytest.raises(openai.RateLimitError) as info:
            limited.chat.completions.create(model="gemini-2.5-flash", messages=msg(prompt))
    assert info.value.response.headers["retry-after"] == "30"
    with oai(byok_gw, key="second-key") as other:
        ok = other.chat.completions.create(model="gemini-2.5-flash", messages=msg(prompt))
    assert ok.choices[0].message.content == "Echo: x"
    # 30 s > max_retry_delay: the client learns at once instead of the gateway waiting.
    assert [(r["api_key"], r["status"]) for r in fake.requests()] == [("test-key", 429), ("second-key", 200)]
