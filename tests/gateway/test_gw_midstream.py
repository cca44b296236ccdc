"""Faults after the first byte: never retried; the stream ends with exactly one error event.

A reset mid-stream, an error event mid-stream (both framings) and a stall
beyond `timeouts.stream_idle`: the client gets the chunks already sent, then one
`data: {"error": ...}` (the openai SDK raises `APIError`), no `[DONE]`; the fake
shows one request only, and the gateway released the upstream connection.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from .gw_support import FAST_RETRY, directive, gemini, msg, oai

TEXT = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"


@pytest.fixture
def gw(make_gateway, fake):
    return make_gateway(
        upstreams=[gemini("ai", fake.url, "test-key")],
        retry=FAST_RETRY,
        timeouts={"stream_idle": 0.4},
    )


def _raw_sse(server: Any, text: str) -> tuple[int, str]:
    body = {"model": "gemini-2.5-flash", "messages": msg(text), "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as response:
        return response.status_code, response.read().decode()


def _events(body: str) -> list[Any]:
    out = []
    for block in body.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                data = line[len("data: "):]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


# The chunks are 50 ms apart so that the first one reaches the client on its own: a fault that
# arrives in the same read as the first chunks is still "before the first byte" and is retried.
FAULTS = {
    "reset": ({"reset_after_chunks": 2}, "reset"),
    "error-event": ({"error": {"status": 500, "after_chunks": 2}}, "error_mid_stream"),
    "raw-error": ({"error": {"status": 503, "after_chunks": 2, "raw": True}}, "error_mid_stream"),
    "stall": ({"stall_after_chunks": 2}, "stalled"),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_failure_after_the_first_byte_ends_the_stream_with_one_error(gw, fake, name: str) -> None:
    fault, outcome = FAULTS[name]
    fake.script({"reply": TEXT, "chunks": 4, "chunk_delay_ms": 50, **fault})
    started = time.monotonic()
    status, body = _raw_sse(gw, "x")
    elapsed = time.monotonic() - started
    assert status == 200
    events = _events(body)
    assert "[DONE]" not in events
    errors = [e for e in events if "error" in e]
    assert len(errors) == 1 and events[-1] is errors[0], "one error event, and it is the last"
    error = errors[0]["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "server_error"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e is not errors[0] and e["choices"])
    assert text and TEXT.startswith(text) and text != TEXT, "what was sent before the fault, once"
    if name == "stall":
        assert 0.35 <= elapsed < 5, elapsed  # stream_idle 0.4 s
    calls = [r for r in fake.requests() if r.get("model")]
    assert len(calls) == 1, "never retried after the first byte"
    assert fake.wait_for(lambda s: s["active_requests"] == 0)["active_requests"] == 0
    assert calls[0]["outcome"] in (outcome, "client_gone")


@pytest.mark.parametrize("name", list(FAULTS))
def test_the_openai_sdk_raises_api_error_after_the_chunks_it_got(gw, fake, name: str) -> None:
    fault, _ = FAULTS[name]
    fake.script({"reply": TEXT, "chunks": 4, "chunk_delay_ms": 50, **fault})
    got: list[str] = []
    with oai(gw) as client:
        with pytest.raises(openai.APIError) as info:
            for chunk in client.chat.completions.create(model="gemini-2.5-flash", messages=msg("x"), stream=True):
                if chunk.choices:
                    got.append(chunk.choices[0].delta.content or "")
    assert not isinstance(info.value, openai.APIStatusError), "the HTTP status was already 200"
    assert "".join(got) and TEXT.startswith("".join(got))
    assert len([r for r in fake.requests() if r.get("model")]) == 1


def test_stall_closes_the_upstream_request(gw, fake) -> None:
    fake.script({"reply": TEXT, "chunks": 4, "stall_after_chunks": 1})
    status, body = _raw_sse(gw, "x")
    assert status == 200 and '"error"' in body
    stats = fake.wait_for(lambda s: s["streams_aborted_by_client"] == 1, timeout=5)
    assert stats["streams_aborted_by_client"] == 1, "the gateway dropped the silent upstream connection"
    assert stats["stalls"] == 1


def test_a_slow_but_steady_stream_is_not_an_idle_stream(gw, fake) -> None:
    # 6 chunks 0.25 s apart: 1.25 s in all, but never 0.4 s of silence.
    fake.script({"reply": TEXT, "chunks": 6, "chunk_delay_ms": 250})
    status, body = _raw_sse(gw, "x")
    events = _events(body)
    assert status == 200 and events[-1] == "[DONE]" and not [e for e in events if e != "[DONE]" and "error" in e]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e != "[DONE]" and e["choices"])
    assert text == TEXT


def test_interleaved_streams_keep_their_own_fate(gw, fake) -> None:
    """A fault in one stream does not disturb another running at the same time."""
    import concurrent.futures

    good = "steady\n" + directive(reply="one two three four five six", chunks=3, chunk_delay_ms=100)
    bad = "broken\n" + directive(reply=TEXT, chunks=4, reset_after_chunks=2, chunk_delay_ms=50)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: _raw_sse(gw, t), [good, bad, good, bad]))
    for i, (status, body) in enumerate(results):
        events = _events(body)
        assert status == 200
        if i % 2 == 0:
            assert events[-1] == "[DONE]"
        else:
            assert "[DONE]" not in events and "error" in events[-1]
    assert len([r for r in fake.requests() if r.get("model")]) == 4


def test_keepalives_do_not_hide_a_stalled_stream(make_gateway, fake) -> None:
    """Keep-alives flow every 0.1 s while Google is silent, yet 0.6 s without data is a stall."""
    server = make_gateway(
        upstreams=[gemini("ai", fake.url, "test-key")],
        server={"keepalive_seconds": 0.1},
        timeouts={"stream_idle": 0.6},
    )
    started = time.monotonic()
    status, body = _raw_sse(server, f"{TEXT}\n" + directive(chunks=6, chunk_delay_ms=50, stall_after_chunks=2))
    elapsed = time.monotonic() - started
    assert status == 200
    assert body.count(": keep-alive\n\n") >= 3
    events = _events(body)
    assert "[DONE]" not in events
    assert "stalled" in events[-1]["error"]["message"]
    assert 0.55 <= elapsed < 5, elapsed
    assert fake.wait_for(lambda s: s["streams_aborted_by_client"] == 1)["streams_aborted_by_client"] == 1
