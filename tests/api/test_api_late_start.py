"""A stream whose first event is late (Google thinking, or holding its headers): the gateway
answers 200 after one keep-alive interval and sends keep-alives until the first event, while
it keeps retrying; a failure that ends the attempts then arrives as one error event."""

from __future__ import annotations

import time

import openai
import pytest

from .api_helpers import data_events, say, sse_events
from .conftest import STRICT_KEEPALIVE

MODEL = "gemini-2.5-flash"


def late_body(text: str, **directive: object) -> dict[str, object]:
    return {"model": MODEL, "messages": say(text, **directive), "stream": True}


def test_keepalives_while_upstream_holds_its_headers(strict_raw, fake):
    start = time.monotonic()
    pieces = []
    with strict_raw.stream("POST", "/v1/chat/completions", json=late_body("late", reply="a b c", first_byte_delay_ms=1200)) as r:
        assert r.status_code == 200
        for piece in r.iter_raw():
            pieces.append((time.monotonic() - start, piece))
    payload = b"".join(p for _, p in pieces)
    events = sse_events(payload)
    first_data = next(i for i, e in enumerate(events) if e.startswith(b"data: "))
    assert first_data >= 3 and all(e == b": keep-alive" for e in events[:first_data]), events
    assert pieces[0][0] < STRICT_KEEPALIVE + 0.6  # the client hears from us long before Google answers
    data = data_events(payload)
    assert data[-1] == "[DONE]"
    assert "".join(d["choices"][0]["delta"].get("content") or "" for d in data[:-1] if d["choices"]) == "a b c"


def test_sdk_reads_a_late_stream(strict_client, fake):
    stream = strict_client.chat.completions.create(
        model=MODEL, messages=say("late", reply="hello late world", first_byte_delay_ms=700), stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "hello late world"


def test_failure_after_keepalives_is_one_error_event(strict_raw, fake):
    body = late_body("late", first_byte_delay_ms=700, error={"status": 503, "message": "overloaded"})
    r = strict_raw.post("/v1/chat/completions", json=body)
    assert r.status_code == 200  # already committed by the keep-alives
    events = sse_events(r.content)
    assert events[0] == b": keep-alive"
    data = data_events(r.content)
    assert len(data) == 1 and "[DONE]" not in data
    assert data[0]["error"]["type"] == "server_error" and "overloaded" in data[0]["error"]["message"]


def test_sdk_raises_for_a_late_failure(strict_client, fake):
    stream = strict_client.chat.completions.create(
        model=MODEL, messages=say("late", first_byte_delay_ms=600, error={"status": 500}), stream=True
    )
    with pytest.raises(openai.APIError):
        list(stream)


def test_retries_continue_while_keepalives_flow(make_gateway, fake):
    gw = make_gateway(
        server={"keepalive_seconds": 0.2},
        retry={"max_attempts": 3, "backoff_initial": 0.01, "backoff_max": 0.02},
    )
    directive = {"first_byte_delay_ms": 500, "fail_times": 1, "fail_key": "late-retry", "error": {"status": 503}}
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0) as client:
        stream = client.chat.completions.create(model=MODEL, messages=say("retry me", **directive), stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("Echo: retry me")
    assert [r["status"] for r in fake.requests()] == [503, 200]


def test_client_leaving_during_keepalives_cancels_the_upstream_call(strict_raw, fake):
    with strict_raw.stream("POST", "/v1/chat/completions", json=late_body("late", first_byte_delay_ms=3000)) as r:
        first = next(r.iter_raw())
        assert first.startswith(b": keep-alive")
    stats = fake.wait_for(lambda s: s["active_requests"] == 0, timeout=2.5)
    assert stats["active_requests"] == 0, stats
    assert [req["outcome"] for req in fake.requests()] == ["client_gone"]
