"""Test helpers for the fake Gemini server: `Harness` (HTTP access to a running fake), SSE parsing
and the google-genai response oracle. Fixtures live in conftest.py; this module has a unique name
so tests can import it whatever other conftest.py files the suite grows."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from google.genai import types as genai_types

from app.testing.fake_gemini import RunningFake

API_KEYS = ("test-key", "second-key")
DEFAULT_CONFIG = {"api_keys": list(API_KEYS), "token_lifetime": 3600, "latency_ms": 0, "stall_timeout_s": 30}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def validate(response: dict[str, Any]) -> genai_types.GenerateContentResponse:
    """google-genai's own model of the response (it forbids unknown fields): the oracle."""
    return genai_types.GenerateContentResponse.model_validate(response)


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """Google's framing exactly: `data: <json>\\r\\n\\r\\n` events, nothing else, no [DONE]."""
    assert raw.endswith(b"\r\n\r\n"), raw[-40:]
    events = raw.split(b"\r\n\r\n")[:-1]
    chunks = []
    for event in events:
        assert event.startswith(b"data: "), event[:40]
        assert b"\n" not in event, "one line per event"
        chunks.append(orjson.loads(event[len(b"data: ") :]))
    return chunks


class Harness:
    """HTTP access to the session fake, with helpers for the common calls."""

    def __init__(self, running: RunningFake) -> None:
        self.running = running
        self.url = running.url
        self.http = httpx.Client(base_url=self.url, timeout=20)

    # --- admin ---------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        return self.http.get("/_fake/stats").json()

    def requests(self) -> list[dict[str, Any]]:
        return self.http.get("/_fake/requests").json()["requests"]

    def script(self, *directives: dict[str, Any]) -> None:
        body = directives[0] if len(directives) == 1 else list(directives)
        assert self.http.post("/_fake/script", json=body).status_code == 200

    def config(self, **changes: Any) -> dict[str, Any]:
        response = self.http.post("/_fake/config", json=changes)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for(self, predicate: Callable[[dict[str, int]], bool], timeout: float = 3.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats) or time.monotonic() > deadline:
                return stats
            time.sleep(0.02)

    # --- API -----------------------------------------------------------------

    def body(self, prompt: str | list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        contents = [user(prompt)] if isinstance(prompt, str) else prompt
        return {"contents": contents, **fields}

    def post(
        self,
        model: str,
        prompt: str | list[dict[str, Any]],
        *,
        method: str = "generateContent",
        query: str = "",
        key: str | None = "test-key",
        version: str = "v1beta",
        **fields: Any,
    ) -> httpx.Response:
        headers = {"x-goog-api-key": key} if key else {}
        path = f"/{version}/models/{model}:{method}{query}"
        return self.http.post(path, json=self.body(prompt, **fields), headers=headers)

    def generate(self, model: str, prompt: str | list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        response = self.post(model, prompt, **fields)
        assert response.status_code == 200, response.text
        data = response.json()
        validate(data)
        return data

    def stream(self, model: str, prompt: str | list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
        response = self.post(model, prompt, method="streamGenerateContent", query="?alt=sse", **fields)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "text/event-stream"
        chunks = parse_sse(response.content)
        for chunk in chunks:
            validate(chunk)
        return chunks

    def vertex_post(
        self,
        model: str,
        prompt: str | list[dict[str, Any]],
        token: str | None,
        *,
        method: str = "generateContent",
        query: str = "",
        project: str = "fake-project",
        location: str = "us-central1",
        version: str = "v1beta1",
        **fields: Any,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        path = f"/{version}/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}{query}"
        return self.http.post(path, json=self.body(prompt, **fields), headers=headers)

    def token(self) -> str:
        """An access token from the fake's token endpoint (refresh-token grant)."""
        form = {"grant_type": "refresh_token", "client_id": "c", "client_secret": "s", "refresh_token": "r"}
        response = self.http.post("/token", data=form)
        assert response.status_code == 200, response.text
        return response.json()["access_token"]
