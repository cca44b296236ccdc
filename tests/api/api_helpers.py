"""Helpers of the end-to-end API tests: directives, SSE parsing, OpenAI error checks."""

from __future__ import annotations

import json
from typing import Any

import httpx


def say(text: str, **directive: Any) -> list[dict[str, Any]]:
    """One user message; keyword arguments become a `#fake {...}` directive line."""
    if directive:
        text = f"{text}\n#fake {json.dumps(directive)}"
    return [{"role": "user", "content": text}]


def sse_events(body: bytes) -> list[bytes]:
    """Split an SSE body on blank lines (the server uses `\\n\\n`), keeping comments as events."""
    assert body.endswith(b"\n\n"), body[-80:]
    return body[:-2].split(b"\n\n")


def data_events(body: bytes) -> list[Any]:
    """The JSON of every `data:` event (`[DONE]` kept as the string)."""
    out: list[Any] = []
    for event in sse_events(body):
        if event.startswith(b":"):
            continue
        assert event.startswith(b"data: "), event
        payload = event[len(b"data: ") :]
        out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


def assert_openai_error(response: httpx.Response, status: int, *, code: Any = ..., param: Any = ..., type: Any = ...) -> dict[str, Any]:
    """The body is exactly OpenAI's error shape; returns the inner error object."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    if code is not ...:
        assert err["code"] == code, err
    if param is not ...:
        assert err["param"] == param, err
    if type is not ...:
        assert err["type"] == type, err
    return err
