"""Helpers of the native Gemini route tests (tests/api/test_api_native*.py).

* `Tap`: a recording pass-through in front of the fake Gemini, so that tests
  can compare, byte for byte, what the gateway sent upstream with what its
  client sent, and what the gateway answered with what the fake sent.
* `genai_client(...)`: the google-genai SDK pointed at a gateway, unchanged
  but for `base_url`, and the bodies it sent and got (`Exchanges`).
* `assert_google_error(...)`: the body is exactly Google's error shape.
"""

from __future__ import annotations

from typing import Any

import httpx
from aiohttp import ClientSession, web
from google import genai

from gateway_harness import LoopThread

GATEWAY_KEY = "gw-native-key-0123456789"
# What the tap passes on to the fake: the credential headers and the body's type, nothing else.
FORWARDED = frozenset({"x-goog-api-key", "authorization", "x-goog-user-project", "content-type"})


class Tap:
    """An HTTP server that forwards every request to `target` and records both sides as bytes."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.records: list[dict[str, Any]] = []
        self.loop = LoopThread("native-tap")
        self.url = self.loop.run(self._start())

    async def _start(self) -> str:
        self.session = ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
        record: dict[str, Any] = {
            "method": request.method, "path": request.path, "query": request.raw_path.partition("?")[2],
            "headers": {k.lower(): v for k, v in request.headers.items()}, "body": body, "status": None, "answer": b"",
        }
        self.records.append(record)
        async with self.session.request(request.method, self.target + request.raw_path, data=body, headers=headers) as up:
            record["status"] = up.status
            response = web.StreamResponse(status=up.status, headers={"content-type": up.headers["content-type"]})
            await response.prepare(request)
            async for piece in up.content.iter_any():
                record["answer"] += piece
                await response.write(piece)
            await response.write_eof()
            return response

    def api_records(self) -> list[dict[str, Any]]:
        """What went to the fake's API (the OAuth token endpoint left out)."""
        return [r for r in self.records if r["path"] != "/token"]

    def last(self) -> dict[str, Any]:
        return self.api_records()[-1]

    def close(self) -> None:
        async def stop() -> None:
            await self.runner.cleanup()
            await self.session.close()

        self.loop.run(stop())
        self.loop.stop()


class Exchanges:
    """The bodies of the requests a google-genai client sent, and of the answers it got (streams left out)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.received: list[bytes] = []

    def request(self, request: httpx.Request) -> None:
        self.sent.append(request.read())

    def response(self, response: httpx.Response) -> None:
        if "streamGenerateContent" not in response.url.path:
            self.received.append(response.read())


def genai_client(gateway_url: str, key: str = GATEWAY_KEY, version: str | None = None) -> tuple[genai.Client, Exchanges]:
    """google-genai on the gateway (configured as a user would), and what it sends and gets."""
    seen = Exchanges()
    http = httpx.Client(timeout=30, event_hooks={"request": [seen.request], "response": [seen.response]})
    options: dict[str, Any] = {"base_url": gateway_url, "httpx_client": http}
    if version is not None:
        options["api_version"] = version
    return genai.Client(api_key=key, http_options=options), seen


def assert_google_error(response: httpx.Response, status: int, google_status: str) -> str:
    """The answer is Google's error shape, exactly `{"error": {"code", "message", "status"}}`; returns the message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "status"}, body
    assert body["error"]["code"] == status and body["error"]["status"] == google_status, body
    assert "(request id req_" in body["error"]["message"] or "(request id " in body["error"]["message"]
    return str(body["error"]["message"])
