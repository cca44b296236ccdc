"""Streaming over real HTTP: SSE framing and headers, no buffering, keep-alives
while the model is silent, and a client that leaves closes the upstream call."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from itertools import pairwise
from typing import Any

import httpx
import openai
import pytest

from .api_helpers import data_events, say, sse_events
from .conftest import STRICT_KEEPALIVE

MODEL = "gemini-2.5-flash"
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa"


def stream_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": True, **extra}


def timed_pieces(client: httpx.Client, body: dict[str, Any]) -> tuple[httpx.Response, list[tuple[float, bytes]]]:
    """POST a stream and record (seconds since the request, bytes) for every piece read off the socket."""
    start = time.monotonic()
    pieces: list[tuple[float, bytes]] = []
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for piece in response.iter_raw():
            pieces.append((time.monotonic() - start, piece))
    return response, pieces


def assert_upstream_closed(fake: Any, open_before: int, aborted: int = 1) -> None:
    """The fake saw the client (the gateway) go away mid-stream, and no connection is left open for it.

    `open_connections` also counts idle pooled connections of other gateways in this
    session, so it is compared with the count taken before the request.
    """
    stats = fake.wait_for(
        lambda s: s["streams_aborted_by_client"] == aborted and s["open_connections"] <= open_before, timeout=3
    )
    assert stats["streams_aborted_by_client"] == aborted, stats
    assert stats["streams_completed"] == 0, stats
    assert stats["open_connections"] <= open_before, (stats, open_before)
    assert [r["outcome"] for r in fake.requests()] == ["client_gone"] * aborted


# -- framing and headers ---------------------------------------------------------------------------


def test_sse_headers_and_framing(raw, fake):
    r = raw.post("/v1/chat/completions", json=stream_body("frame " + WORDS, stream_options={"include_usage": True}))
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0].strip() == "text/event-stream"
    assert r.headers["cache-control"] == "no-cache"
    assert "content-length" not in r.headers
    body = r.content
    # every event is exactly one `data: <json>` line (or a comment), separated by one blank line
    for event in sse_events(body):
        assert event.startswith((b"data: ", b":")), event
        assert b"\n" not in event and b"\r" not in event, event
    assert not re.search(rb"^(id|event|retry):", body, re.MULTILINE)
    assert body.endswith(b"\n\ndata: [DONE]\n\n")
    assert body.count(b"[DONE]") == 1
    events = data_events(body)
    assert events[-1] == "[DONE]"
    ids = {e["id"] for e in events[:-1]}
    assert len(ids) == 1
    assert events[-3]["choices"][0]["delta"] == {} and events[-3]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["choices"] == [] and events[-2]["usage"]["total_tokens"] > 0
    chunk = events[0]
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"]["role"] == "assistant"
    assert chunk["choices"][0]["index"] == 0
    assert "finish_reason" in chunk["choices"][0] and chunk["choices"][0]["finish_reason"] is None


def test_openai_sse_decoder_parses_every_event(raw, fake):
    """The bytes, fed to openai-python's own SSE decoder, give the same events."""
    from openai._streaming import SSEDecoder

    r = raw.post("/v1/chat/completions", json=stream_body(WORDS))
    decoded = list(SSEDecoder().iter_bytes(iter([r.content])))
    datas = [e.data for e in decoded]
    assert datas[-1] == "[DONE]"
    assert all(e.event is None and e.id is None for e in decoded)
    assert [json.loads(d) for d in datas[:-1]] == data_events(r.content)[:-1]


def test_sse_parsed_byte_by_byte(raw, fake):
    """openai-python's decoder reassembles the stream even when it arrives one byte at a time."""
    from openai._streaming import SSEDecoder

    r = raw.post("/v1/chat/completions", json=stream_body(WORDS))
    whole = [e.data for e in SSEDecoder().iter_bytes(iter([r.content]))]
    one_by_one = [e.data for e in SSEDecoder().iter_bytes(bytes([b]) for b in r.content)]
    assert whole == one_by_one and len(whole) >= 3


def test_unicode_survives_streaming(client, fake):
    text = "héllo wörld 你好 世界 \u2028 emoji 🎉 done"
    stream = client.chat.completions.create(model=MODEL, messages=say(text), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "Echo: " + text


# -- no buffering ----------------------------------------------------------------------------------


def test_first_chunk_arrives_while_upstream_still_sends(raw, fake):
    """10 chunks 200 ms apart: the client sees each as it is made, not all at the end."""
    reply = " ".join(f"part{i}" for i in range(10))
    start = time.monotonic()
    arrivals: list[float] = []
    completed_at_first_chunk = None
    with raw.stream(
        "POST", "/v1/chat/completions", json=stream_body("go", messages=say("go", reply=reply, chunks=10, chunk_delay_ms=200))
    ) as response:
        assert response.status_code == 200
        buffer = b""
        for piece in response.iter_raw():
            buffer += piece
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                if event.startswith(b"data: {") and json.loads(event[6:])["choices"][0]["delta"].get("content"):
                    arrivals.append(time.monotonic() - start)
                    if completed_at_first_chunk is None:
                        completed_at_first_chunk = fake.stats()["streams_completed"]
    total = time.monotonic() - start
    assert len(arrivals) == 10
    assert completed_at_first_chunk == 0  # the upstream was still sending
    assert arrivals[0] < 0.9, arrivals  # the whole upstream stream takes ~1.8 s
    assert total > 1.6
    assert arrivals[-1] - arrivals[0] > 1.4, arrivals
    gaps = [b - a for a, b in pairwise(arrivals)]
    assert sum(g > 0.1 for g in gaps) >= 8, gaps  # spread out: one chunk per upstream chunk


def test_sdk_iterates_chunks_as_they_come(client, fake):
    reply = " ".join(f"word{i}" for i in range(6))
    start = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL, messages=say("go", reply=reply, chunks=6, chunk_delay_ms=250), stream=True
    )
    seen = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen.append(time.monotonic() - start)
    assert len(seen) == 6
    assert seen[0] < 0.8 and seen[-1] - seen[0] > 1.0, seen


# -- keep-alives -----------------------------------------------------------------------------------


def test_keepalive_comments_while_model_is_silent(strict_raw, fake):
    """Chunks 900 ms apart with a 0.2 s keep-alive interval: comments arrive in the gaps."""
    body = stream_body("go", messages=say("go", reply="a b c d e f", chunks=3, chunk_delay_ms=900))
    response, pieces = timed_pieces(strict_raw, body)
    assert response.status_code == 200
    payload = b"".join(p for _, p in pieces)
    events = sse_events(payload)
    keepalives = [e for e in events if e.startswith(b":")]
    assert len(keepalives) >= 4, events
    assert all(e == b": keep-alive" for e in keepalives)
    data = data_events(payload)
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in data[:-1]) == "a b c d e f"
    # keep-alives came while waiting, not in a burst at the end
    times = [t for t, p in pieces if p.startswith(b":")]
    assert times[0] < 0.9 and max(times) - min(times) > 0.5


def test_sdk_parses_stream_with_keepalives(strict_client, fake):
    stream = strict_client.chat.completions.create(
        model=MODEL,
        messages=say("go", reply="one two three four", chunks=2, chunk_delay_ms=700),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three four"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_keepalive_during_stall_then_disconnect(strict_raw, fake):
    open_before = fake.stats()["open_connections"]
    body = stream_body("go", messages=say("go stall now please", stall_after_chunks=1))
    start = time.monotonic()
    got = b""
    with strict_raw.stream("POST", "/v1/chat/completions", json=body) as response:
        for piece in response.iter_raw():
            got += piece
            if got.count(b": keep-alive\n\n") >= 3:
                break
    elapsed = time.monotonic() - start
    assert got.startswith(b"data: {")
    assert elapsed >= 3 * STRICT_KEEPALIVE * 0.9
    assert_upstream_closed(fake, open_before)


# -- client disconnect -----------------------------------------------------------------------------


def test_disconnect_mid_stream_closes_upstream(raw, fake):
    open_before = fake.stats()["open_connections"]
    reply = " ".join(f"x{i}" for i in range(20))
    body = stream_body("go", messages=say("go", reply=reply, chunks=20, chunk_delay_ms=150))
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        first = next(response.iter_raw())
        assert first.startswith(b"data: {")
    # the response is closed: the gateway must drop its upstream stream long before the fake finishes (3 s)
    assert_upstream_closed(fake, open_before)


def test_disconnect_during_stall_closes_upstream(raw, fake):
    """The default gateway (15 s keep-alive) notices a client that leaves while the model is silent."""
    open_before = fake.stats()["open_connections"]
    body = stream_body("go", messages=say("go stall now please", stall_after_chunks=1))
    with raw.stream("POST", "/v1/chat/completions", json=body) as response:
        first = next(response.iter_raw())
        assert first.startswith(b"data: {")
        assert fake.wait_for(lambda s: s["stalls"] == 1)["stalls"] == 1
    assert_upstream_closed(fake, open_before)


def test_sdk_stream_close_cancels_upstream(client, fake):
    open_before = fake.stats()["open_connections"]
    stream = client.chat.completions.create(
        model=MODEL, messages=say("go", reply="a b c d e f g h i j", chunks=10, chunk_delay_ms=200), stream=True
    )
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    stream.close()
    assert_upstream_closed(fake, open_before)


def test_abrupt_socket_close_cancels_upstream(gateway, fake):
    """A client that resets its TCP connection mid-stream (no orderly HTTP close)."""
    open_before = fake.stats()["open_connections"]
    body = json.dumps(stream_body("go", messages=say("go stall please", stall_after_chunks=1))).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while b"data: {" not in received:
        received += sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 200")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
    sock.close()
    assert_upstream_closed(fake, open_before)


def test_gateway_serves_after_disconnects(client, fake):
    for _ in range(3):
        stream = client.chat.completions.create(
            model=MODEL, messages=say("go", reply="a b c d e f", chunks=6, chunk_delay_ms=100), stream=True
        )
        next(iter(stream))
        stream.close()
    fake.wait_for(lambda s: s["streams_aborted_by_client"] == 3 and s["active_requests"] == 0, timeout=3)
    completion = client.chat.completions.create(model=MODEL, messages=say("still here"))
    assert completion.choices[0].message.content == "Echo: still here"
    assert isinstance(completion, openai.types.chat.ChatCompletion)


# -- client gone before the first byte -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_while_waiting_for_upstream_cancels_it(gateway, fake, stream):
    """The model is slow to answer (2 s before its headers); the client gives up after 0.3 s.
    The gateway must drop the upstream request then, not let Google finish the answer."""
    open_before = fake.stats()["open_connections"]
    body = {"model": MODEL, "messages": say("slow", first_byte_delay_ms=2000), "stream": stream}
    with httpx.Client(base_url=gateway.url, timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.post("/v1/chat/completions", json=body)
    counter = "streams_aborted_by_client" if stream else "requests_aborted_by_client"
    stats = fake.wait_for(lambda s: s[counter] == 1, timeout=1.2)  # well before the fake would answer
    assert stats[counter] == 1, stats
    assert [r["outcome"] for r in fake.requests()] == ["client_gone"]
    assert fake.wait_for(lambda s: s["open_connections"] <= open_before)["open_connections"] <= open_before
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as c:
        assert c.chat.completions.create(model=MODEL, messages=say("after")).choices[0].message.content == "Echo: after"


def test_usage_so_far_is_recorded_when_the_client_leaves_mid_stream(make_gateway, fake):
    """The usage Google reported before the client left is what the metrics (and later the bill) see."""
    from gateway_harness import metric_value

    gw = make_gateway()
    reply = " ".join(f"x{i}" for i in range(20))
    body = stream_body("go", messages=say("go", reply=reply, chunks=20, chunk_delay_ms=150))
    with httpx.Client(base_url=gw.url, timeout=10) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            pieces = response.iter_raw()
            seen = b""
            while seen.count(b"data: ") < 3:
                seen += next(pieces)
        deadline = time.monotonic() + 5
        while metric_value(gw, "gemini_proxy_requests_total", endpoint="chat") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        whole = http.post("/v1/chat/completions", json={**body, "stream": False}).json()["usage"]
    prompt = metric_value(gw, "gemini_proxy_tokens_total", type="prompt")
    completion = metric_value(gw, "gemini_proxy_tokens_total", type="completion")
    assert prompt == 2 * whole["prompt_tokens"], "the prompt was reported before the client left"
    assert whole["completion_tokens"] <= completion < 2 * whole["completion_tokens"], "not the whole answer"
