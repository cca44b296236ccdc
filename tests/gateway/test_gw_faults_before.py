"""Faults before the first byte reaches the client: retried, then fallen back, never duplicated.

Each test starts a gateway with millisecond back-offs and drives it with the
openai SDK (plus raw HTTP to count SSE events); the fake Gemini injects the
faults (`fail_times`, `error`, `reset_before_response`, scripts) and records
every attempt, so "no request lost that could be saved" and "exactly one
answer" are checked against what really went over the wire.
"""

from __future__ import annotations

import logging
import time
from itertools import pairwise
from typing import Any

import httpx
import openai
import pytest

from .gw_support import FAST_RETRY, directive, gemini, msg, oai

ERROR_CLASSES = {
    500: openai.InternalServerError,
    503: openai.InternalServerError,
    504: openai.InternalServerError,
    429: openai.RateLimitError,
    400: openai.BadRequestError,
    403: openai.PermissionDeniedError,
}


@pytest.fixture
def gw(make_gateway, fake):
    return make_gateway(upstreams=[gemini("ai", fake.url, "test-key")], retry=FAST_RETRY)


def _generate(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r.get("model")]


def _stream_text(client: openai.OpenAI, text: str, **kwargs: Any) -> tuple[str, Any]:
    raw = client.chat.completions.with_raw_response.create(
        model=kwargs.pop("model", "gemini-2.5-flash"), messages=msg(text), stream=True, **kwargs
    )
    chunks = list(raw.parse())
    roles = [c for c in chunks if c.choices and c.choices[0].delta.role]
    assert len(roles) == 1, "one answer: one opening delta"
    assert len({c.id for c in chunks}) == 1
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), raw.headers


def _raw_sse(server: Any, text: str) -> tuple[int, dict[str, str], str]:
    body = {"model": "gemini-2.5-flash", "messages": msg(text), "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as response:
        return response.status_code, dict(response.headers), response.read().decode()


@pytest.mark.parametrize("code", [500, 503, 504, 429])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_server_errors_are_retried_until_one_succeeds(gw, fake, code: int, stream: bool) -> None:
    error: dict[str, Any] = {"status": code}
    if code == 429:
        error["retry_delay"] = "0.05s"
    prompt = "saved in the end\n" + directive(fail_times=2, fail_key=f"retry-{code}-{stream}", error=error)
    with oai(gw) as client:
        if stream:
            text, headers = _stream_text(client, prompt)
        else:
            raw = client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=msg(prompt))
            text, headers = raw.parse().choices[0].message.content, raw.headers
    assert text == "Echo: saved in the end"
    assert headers["x-gemini-proxy-attempts"] == "3"
    assert headers["x-gemini-proxy-target"] == "ai/gemini-2.5-flash"
    calls = _generate(fake)
    assert [c["status"] for c in calls] == [code, code, 200]
    assert all(c["stream"] == stream for c in calls)
    if code == 429:  # RetryInfo honoured: the same (only) key is used again after Google's delay
        gaps = [b["time"] - a["time"] for a, b in pairwise(calls)]
        assert min(gaps) >= 0.045, gaps


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_connection_resets_before_the_answer_are_retried(gw, fake, stream: bool) -> None:
    fake.script({"reset_before_response": True}, {"reset_before_response": True}, {"reply": "third time lucky"})
    with oai(gw) as client:
        if stream:
            text, headers = _stream_text(client, "x")
        else:
            raw = client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=msg("x"))
            text, headers = raw.parse().choices[0].message.content, raw.headers
    assert text == "third time lucky" and headers["x-gemini-proxy-attempts"] == "3"
    assert [c["outcome"] for c in _generate(fake)] == ["reset", "reset", "ok"]
    assert fake.stats()["connection_resets"] == 2


@pytest.mark.parametrize(
    "fault",
    [
        {"error": {"status": 503, "after_chunks": 0}},  # 200, then an error event before any chunk
        {"error": {"status": 500, "after_chunks": 0, "raw": True}},  # the unprefixed JSON framing
        {"reset_after_chunks": 0},  # 200 headers, then the connection drops
    ],
    ids=["error-event", "raw-error", "reset-after-headers"],
)
def test_stream_failing_before_its_first_event_is_still_retried(gw, fake, fault: dict[str, Any]) -> None:
    fake.script(fault, {"reply": "one two three four five six", "chunks": 3})
    status, headers, body = _raw_sse(gw, "x")
    assert status == 200 and headers["x-gemini-proxy-attempts"] == "2"
    events = [line for line in body.split("\n") if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and body.count("[DONE]") == 1
    assert '"error"' not in body
    assert body.count('"role":"assistant"') == 1
    assert [c["status"] for c in _generate(fake)] == [200, 200]
    assert fake.stats()["streams_completed"] == 1


@pytest.mark.parametrize(
    ("fault", "status", "cls"),
    [
        ({"error": {"status": 500}}, 500, openai.InternalServerError),
        ({"error": {"status": 503}}, 503, openai.InternalServerError),
        ({"error": {"status": 504}}, 504, openai.InternalServerError),
        ({"error": {"status": 429, "retry_delay": "0.02s"}}, 429, openai.RateLimitError),
        ({"reset_before_response": True}, 502, openai.InternalServerError),
    ],
    ids=["500", "503", "504", "429", "reset"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_exhausted_retries_reach_the_client_as_the_right_error(
    gw, fake, fault: dict[str, Any], status: int, cls: type, stream: bool
) -> None:
    with oai(gw) as client:
        with pytest.raises(cls) as info:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("doomed\n" + directive(**fault)), stream=stream)
    exc = info.value
    assert exc.status_code == status
    assert exc.response.headers["x-gemini-proxy-attempts"] == "3"
    assert set(exc.body) == {"message", "type", "param", "code"}
    assert exc.body["type"] == ("rate_limit_error" if status == 429 else "server_error")
    assert len(_generate(fake)) == 3
    if status == 429:
        assert int(exc.response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("code", [400, 403])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_client_errors_are_not_retried(gw, fake, code: int, stream: bool) -> None:
    with oai(gw) as client:
        with pytest.raises(ERROR_CLASSES[code]) as info:
            client.chat.completions.create(
                model="gemini-2.5-flash", messages=msg("no\n" + directive(error={"status": code})), stream=stream
            )
        ok = client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=msg("fine"))
    assert info.value.status_code == code and info.value.response.headers["x-gemini-proxy-attempts"] == "1"
    assert ok.headers["x-gemini-proxy-attempts"] == "1", "the key was not penalised"
    assert [c["status"] for c in _generate(fake)] == [code, 200]


def test_retry_info_on_a_503_is_honoured(gw, fake) -> None:
    prompt = "x\n" + directive(fail_times=1, fail_key="retry-info-503", error={"status": 503, "retry_delay": "0.3s"})
    with oai(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=msg(prompt))
    assert raw.headers["x-gemini-proxy-attempts"] == "2"
    first, second = _generate(fake)
    assert second["time"] - first["time"] >= 0.3, "Google's 0.3 s, not the 10 ms back-off"


def test_retry_info_beyond_the_bound_is_not_waited_for(gw, fake) -> None:
    started = time.monotonic()
    with oai(gw) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(
                model="gemini-2.5-flash", messages=msg("x\n" + directive(error={"status": 503, "retry_delay": "20s"}))
            )
    assert time.monotonic() - started < 1.5
    assert info.value.status_code == 503 and info.value.response.headers["retry-after"] == "20"
    assert len(_generate(fake)) == 1, "a 20 s RetryInfo is beyond max_retry_delay (2 s): no pointless retry"


def test_retries_then_fall_back_to_the_next_target_in_a_stream(make_gateway, fake) -> None:
    gw = make_gateway(
        upstreams=[gemini("a", fake.url, "test-key"), gemini("b", fake.url, "second-key")],
        models=[{"name": "m", "targets": [{"upstream": "a", "model": "gemini-2.5-flash", "priority": 0},
                                           {"upstream": "b", "model": "gemini-2.0-flash", "priority": 1}]}],
        retry=FAST_RETRY,
    )
    prompt = "fall back please\n" + directive(fail_api_keys={"test-key": {"status": 503}})
    with oai(gw) as client:
        text, headers = _stream_text(client, prompt, model="m")
    assert text == "Echo: fall back please"
    assert headers["x-gemini-proxy-target"] == "b/gemini-2.0-flash" and headers["x-gemini-proxy-attempts"] == "4"
    assert [(c["api_key"], c["status"]) for c in _generate(fake)] == [("test-key", 503)] * 3 + [("second-key", 200)]


def test_logs_tell_attempts_and_target_never_a_key(make_gateway, fake, caplog) -> None:
    secret = "test-key"
    gw = make_gateway(upstreams=[gemini("ai", fake.url, secret, "second-key")], retry=FAST_RETRY)
    caplog.set_level(logging.DEBUG)
    with oai(gw) as client:
        client.chat.completions.create(
            model="gemini-2.5-flash",
            messages=msg("x\n" + directive(fail_times=2, fail_key="logs", error={"status": 503})),
        )
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("y\n" + directive(error={"status": 500})))
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("gemini_proxy")]
    served = [m for m in messages if "served the request after 3 attempts" in m]
    assert served and "ai/gemini-2.5-flash" in served[0]
    failed = [m for m in messages if "failed after 3 attempt(s)" in m]
    assert failed and "ai/gemini-2.5-flash" in failed[0] and "500" in failed[0]
    assert any("ai#" in m for m in messages), "credentials appear as labels"
    for record in caplog.records:
        text = record.getMessage()
        assert secret not in text and "second-key" not in text, text
