"""Graceful shutdown of the real CLI (`python -m app serve`, a subprocess) on SIGTERM.

`server.shutdown_grace` is small (3 s). Eight slow streams (the fake Gemini
paces its chunks with `chunk_delay_ms`) are running when SIGTERM arrives:

* streams shorter than the grace all finish normally (`data: [DONE]`) and the
  process exits within the grace; new connections are refused meanwhile;
* streams longer than the grace end at about the grace with an error event
  (`server_shutting_down`), cleanly framed, and the process exits.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_gateway import CliGateway, clean_env

GRACE = 3.0
STREAMS = 8


@pytest.fixture
def gateway_proc(tmp_path: Path, fake: Any) -> Iterator[CliGateway]:
    config = (
        f"server:\n  shutdown_grace: {GRACE}\n  keepalive_seconds: 5\n"
        f"upstreams:\n  - name: fk\n    base_url: {fake.url}\n    api_keys: [test-key]\n"
    )
    gateway = CliGateway(tmp_path, clean_env(), config=config)
    try:
        yield gateway
    finally:
        gateway.kill()


class Stream:
    """One streamed chat completion read on its own thread, raw SSE bytes kept."""

    def __init__(self, url: str, index: int, words: int, chunks: int, delay_ms: int) -> None:
        self.text = " ".join(f"w{index}.{i}" for i in range(words))
        directive = {"reply": self.text, "chunks": chunks, "chunk_delay_ms": delay_ms}
        self.body = {"model": "gemini-2.0-flash", "stream": True,
                     "messages": [{"role": "user", "content": f"slow {index}\n#fake {json.dumps(directive)}"}]}
        self.url = url
        self.started = threading.Event()
        self.status = 0
        self.raw = b""
        self.ended_at = 0.0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=self.body, timeout=30) as response:
                self.status = response.status_code
                for piece in response.iter_raw():
                    self.raw += piece
                    if b"data: " in self.raw:
                        self.started.set()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.started.set()

    def events(self) -> list[str]:
        return [e[len("data: "):] for e in self.raw.decode().split("\n\n") if e.startswith("data: ")]

    def content(self) -> str:
        out = []
        for event in self.events():
            if event != "[DONE]":
                chunk = json.loads(event)
                out.extend(c["delta"].get("content") or "" for c in chunk.get("choices", ()))
        return "".join(out)


def _start_streams(url: str, **shape: int) -> list[Stream]:
    streams = [Stream(url, i, **shape) for i in range(STREAMS)]
    for stream in streams:
        assert stream.started.wait(15), "a stream did not start"
        assert stream.error is None and stream.status == 200, (stream.status, stream.error)
    assert all(s.thread.is_alive() for s in streams), "every stream is still running at SIGTERM"
    return streams


def _wait_refused(url: str, timeout: float = 2.0) -> None:
    """Until a new connection is refused (the listening socket is closed), at most `timeout` seconds."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            httpx.get(url + "/healthz", timeout=0.5)
        except httpx.ConnectError:
            return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise AssertionError("new connections were still accepted after SIGTERM")


def test_streams_shorter_than_the_grace_finish_and_the_process_exits(gateway_proc: CliGateway, fake: Any) -> None:
    # 16 words in 8 chunks, 200 ms apart: each stream lasts about 1.5 s
    streams = _start_streams(gateway_proc.url, words=16, chunks=8, delay_ms=200)
    assert fake.stats()["active_requests"] == STREAMS
    sigterm = time.monotonic()
    gateway_proc.proc.send_signal(signal.SIGTERM)
    _wait_refused(gateway_proc.url)
    assert any(s.thread.is_alive() for s in streams), "refused while the streams were still draining"
    code = gateway_proc.proc.wait(GRACE + 10)
    exited = time.monotonic()
    for stream in streams:
        stream.thread.join(10)
        assert stream.error is None, stream.error
        events = stream.events()
        assert events[-1] == "[DONE]" and events.count("[DONE]") == 1, events[-3:]
        assert not any('"error"' in e for e in events), events
        assert stream.content() == stream.text
        assert stream.raw.endswith(b"data: [DONE]\n\n")
    assert code in (0, -signal.SIGTERM), gateway_proc.output()
    assert exited - sigterm < GRACE, f"exited {exited - sigterm:.2f} s after SIGTERM (grace {GRACE} s)"
    output = gateway_proc.output()
    assert "server_shutting_down" not in output and "Traceback" not in output, output
    assert fake.wait_for(lambda s: s["streams_completed"] == STREAMS, timeout=5)["streams_completed"] == STREAMS


def test_streams_longer_than_the_grace_end_with_an_error_event(gateway_proc: CliGateway, fake: Any) -> None:
    # 32 words in 16 chunks, 500 ms apart: each stream would last about 7.5 s
    streams = _start_streams(gateway_proc.url, words=32, chunks=16, delay_ms=500)
    sigterm = time.monotonic()
    gateway_proc.proc.send_signal(signal.SIGTERM)
    _wait_refused(gateway_proc.url)
    code = gateway_proc.proc.wait(GRACE + 10)
    exited = time.monotonic()
    for stream in streams:
        stream.thread.join(10)
        assert stream.error is None, stream.error  # ended cleanly, not cut off
        events = stream.events()
        assert "[DONE]" not in events
        last = json.loads(events[-1])
        assert last["error"]["code"] == "server_shutting_down", last
        assert set(last["error"]) == {"message", "type", "param", "code"}
        assert stream.raw.endswith(b"\n\n")
        text = stream.content()
        assert text and stream.text.startswith(text) and text != stream.text, "part of the answer, then the error"
        ended = stream.ended_at - sigterm
        assert GRACE - 0.3 <= ended <= GRACE + 1.5, f"ended {ended:.2f} s after SIGTERM, grace {GRACE} s"
    assert code in (0, -signal.SIGTERM), gateway_proc.output()
    assert exited - sigterm < GRACE + 3, f"exited {exited - sigterm:.2f} s after SIGTERM"
    output = gateway_proc.output()
    assert "Traceback" not in output and "Exception in ASGI application" not in output, output
    access = [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"POST"' in line]
    assert len(access) == STREAMS and all(a["error_code"] == "server_shutting_down" for a in access), access
    assert fake.wait_for(lambda s: s["active_requests"] == 0, timeout=5)["active_requests"] == 0


def test_requests_still_waiting_for_google_get_a_503_at_the_end_of_the_grace(gateway_proc: CliGateway, fake: Any) -> None:
    """Google has not answered yet when the grace ends: an HTTP 503 the SDKs retry, not a traceback and a bare 500."""
    directive = json.dumps({"reply": "late", "first_byte_delay_ms": 8000})
    results: list[tuple[int, dict[str, Any], dict[str, str]]] = []

    def ask(stream: bool) -> None:
        body = {"model": "gemini-2.0-flash", "stream": stream, "messages": [{"role": "user", "content": f"x\n#fake {directive}"}]}
        r = httpx.post(gateway_proc.url + "/v1/chat/completions", json=body, timeout=30)
        results.append((r.status_code, r.json(), dict(r.headers)))

    askers = [threading.Thread(target=ask, args=(i % 2 == 0,), daemon=True) for i in range(4)]
    for t in askers:
        t.start()
    assert fake.wait_for(lambda s: s["active_requests"] == 4, timeout=10)["active_requests"] == 4
    sigterm = time.monotonic()
    gateway_proc.proc.send_signal(signal.SIGTERM)
    for t in askers:
        t.join(GRACE + 10)
    assert time.monotonic() - sigterm < GRACE + 3
    assert len(results) == 4
    for status, body, headers in results:
        assert status == 503, body
        assert body["error"]["code"] == "server_shutting_down" and set(body["error"]) == {"message", "type", "param", "code"}
        assert headers["retry-after"] == "1" and headers["x-request-id"].startswith("req_")
    gateway_proc.proc.wait(10)
    output = gateway_proc.output()
    assert "Traceback" not in output and "Exception in ASGI application" not in output, output


def test_streams_answered_early_and_still_waiting_for_google_end_with_an_error_event(tmp_path: Path, fake: Any) -> None:
    """Google holds its headers past the keep-alive interval: the answer is a 200 with keep-alives, and at the end of
    the grace an error event closes it cleanly (the task that sent the keep-alives stops with it)."""
    config = (
        f"server:\n  shutdown_grace: {GRACE}\n  keepalive_seconds: 0.4\n"
        f"upstreams:\n  - name: fk\n    base_url: {fake.url}\n    api_keys: [test-key]\n"
    )
    gateway = CliGateway(tmp_path, clean_env(), config=config)
    try:
        directive = json.dumps({"reply": "late", "first_byte_delay_ms": 12000})
        body = {"model": "gemini-2.0-flash", "stream": True, "messages": [{"role": "user", "content": f"x\n#fake {directive}"}]}
        raw: list[bytes] = []
        started = threading.Event()

        def ask() -> None:
            with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30) as r:
                assert r.status_code == 200
                for piece in r.iter_raw():
                    raw.append(piece)
                    started.set()

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        assert started.wait(10), "no keep-alive came"
        sigterm = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        asker.join(GRACE + 10)
        assert not asker.is_alive()
        assert time.monotonic() - sigterm < GRACE + 3
        payload = b"".join(raw)
        events = payload.split(b"\n\n")
        assert events[0] == b": keep-alive" and payload.endswith(b"\n\n"), payload
        last = json.loads(events[-2][len(b"data: "):])
        assert last["error"]["code"] == "server_shutting_down", last
        assert payload.count(b"data: ") == 1  # keep-alives, then only the error event
        gateway.proc.wait(10)
        output = gateway.output()
        assert "Traceback" not in output and "Exception in ASGI application" not in output, output
        access = [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"POST"' in line]
        assert [a["error_code"] for a in access] == ["server_shutting_down"], access
    finally:
        gateway.kill()
