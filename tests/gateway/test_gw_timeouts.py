"""Timeouts (connect, first byte, total, stream idle) and the bounded upstream connection pool."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from app.errors import UpstreamUnavailable
from app.upstream.client import Timeouts, UpstreamClient

from .gw_support import FAST_RETRY, directive, gemini, msg, oai


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose accept queue is full: new connections hang in SYN-SENT until the connect timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    time.sleep(0.05)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        server.close()


def _generate(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r.get("model")]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_refused_connection_is_retried_then_502(make_gateway, fake, stream: bool) -> None:
    gw = make_gateway(upstreams=[gemini("down", f"http://127.0.0.1:{_closed_port()}", "test-key")], retry=FAST_RETRY)
    with oai(gw) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("x"), stream=stream)
    assert info.value.status_code == 502
    assert info.value.response.headers["x-gemini-proxy-attempts"] == "3"
    assert info.value.body["code"] == "upstream_unavailable"
    assert "127.0.0.1" not in info.value.response.text


def test_unreachable_first_target_falls_back_to_the_next(make_gateway, fake) -> None:
    gw = make_gateway(
        upstreams=[gemini("down", f"http://127.0.0.1:{_closed_port()}", "test-key"), gemini("up", fake.url, "test-key")],
        retry=FAST_RETRY,
    )
    with oai(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=msg("rescued"))
    assert raw.parse().choices[0].message.content == "Echo: rescued"
    assert raw.headers["x-gemini-proxy-target"] == "up/gemini-2.5-flash" and raw.headers["x-gemini-proxy-attempts"] == "4"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_connect_timeout_is_retried_then_a_gateway_error(make_gateway, fake, blackhole: int, stream: bool) -> None:
    gw = make_gateway(
        upstreams=[gemini("slow", f"http://127.0.0.1:{blackhole}", "test-key")],
        retry=FAST_RETRY,
        timeouts={"connect": 0.2},
    )
    started = time.monotonic()
    with oai(gw) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("x"), stream=stream)
    elapsed = time.monotonic() - started
    assert info.value.status_code in (502, 504)
    assert info.value.response.headers["x-gemini-proxy-attempts"] == "3"
    assert 0.55 <= elapsed < 3, elapsed  # three 0.2 s connect attempts, small back-offs


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_first_byte_timeout_is_retried_then_504(make_gateway, fake, stream: bool) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key")], retry=FAST_RETRY, timeouts={"first_byte": 0.25})
    started = time.monotonic()
    with oai(gw) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(
                model="gemini-2.5-flash", messages=msg("x\n" + directive(first_byte_delay_ms=3000)), stream=stream
            )
    elapsed = time.monotonic() - started
    assert info.value.status_code == 504 and info.value.body["type"] == "server_error"
    assert info.value.response.headers["x-gemini-proxy-attempts"] == "3"
    assert 0.7 <= elapsed < 2.5, elapsed
    assert len(_generate(fake)) == 3
    # The gateway hung up on each slow attempt: the fake saw every client leave.
    stats = fake.wait_for(lambda s: s["requests_aborted_by_client"] + s["streams_aborted_by_client"] == 3)
    assert stats["requests_aborted_by_client"] + stats["streams_aborted_by_client"] == 3


def test_a_slow_first_attempt_is_saved_by_the_retry(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key")], retry=FAST_RETRY, timeouts={"first_byte": 0.25})
    fake.script({"first_byte_delay_ms": 2000}, {"reply": "quick this time"})
    with oai(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=msg("x"))
    assert raw.parse().choices[0].message.content == "quick this time"
    assert raw.headers["x-gemini-proxy-attempts"] == "2"


def test_total_timeout_bounds_a_whole_call(make_gateway, fake) -> None:
    gw = make_gateway(
        upstreams=[gemini("ai", fake.url, "test-key")],
        retry={**FAST_RETRY, "max_attempts": 1},
        timeouts={"first_byte": 10, "total": 0.4},
    )
    started = time.monotonic()
    with oai(gw) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("x\n" + directive(first_byte_delay_ms=3000)))
    assert info.value.status_code == 504
    assert time.monotonic() - started < 1.5


def test_total_timeout_mid_stream_ends_it_with_an_error_event(make_gateway, fake) -> None:
    gw = make_gateway(
        upstreams=[gemini("ai", fake.url, "test-key")],
        retry=FAST_RETRY,
        timeouts={"first_byte": 10, "total": 0.5, "stream_idle": 5},
    )
    prompt = "one two three four five six seven eight nine ten\n" + directive(chunks=6, chunk_delay_ms=200)
    got = []
    with oai(gw) as client:
        with pytest.raises(openai.APIError) as info:
            for chunk in client.chat.completions.create(model="gemini-2.5-flash", messages=msg(prompt), stream=True):
                if chunk.choices:
                    got.append(chunk.choices[0].delta.content or "")
    assert "total timeout" in info.value.message
    assert "".join(got).startswith("Echo: one")
    assert len(_generate(fake)) == 1


@pytest.mark.anyio
async def test_upstream_connection_pool_is_bounded(fake) -> None:
    client = UpstreamClient(Timeouts(connect=5, first_byte=10, total=20, stream_idle=10), pool_size=2)
    await client.start()
    seen_before = fake.stats()["connections_seen"]
    url = fake.url + "/v1beta/models/gemini-2.0-flash:generateContent"
    body = b'{"contents":[{"role":"user","parts":[{"text":"pooled\\n#fake {\\"first_byte_delay_ms\\": 300}"}]}]}'
    started = time.monotonic()
    try:
        results = await asyncio.gather(*(client.post_json(url, body, {"x-goog-api-key": "test-key"}) for _ in range(6)))
    finally:
        await client.close()
    elapsed = time.monotonic() - started
    assert all(r["candidates"][0]["content"]["parts"][0]["text"] == "Echo: pooled" for r in results)
    assert elapsed >= 0.85, "six 0.3 s calls through two connections take three rounds"
    assert 1 <= fake.stats()["connections_seen"] - seen_before <= 2


@pytest.mark.anyio
async def test_upstream_client_reports_connection_failures_as_upstream_unavailable() -> None:
    client = UpstreamClient(Timeouts(connect=1, first_byte=1, total=2, stream_idle=1), pool_size=4)
    await client.start()
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await client.post_json(f"http://127.0.0.1:{_closed_port()}/x", b"{}", {})
        with pytest.raises(UpstreamUnavailable):
            await client.open_stream(f"http://127.0.0.1:{_closed_port()}/x", b"{}", {})
    finally:
        await client.close()
    assert info.value.status == 502 and info.value.google_code == 0
