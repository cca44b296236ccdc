"""Media parts end to end: what reaches Gemini (the fake's recorded body) for data
URLs, gs:// and https URLs, audio and files; opt-in URL fetching with its SSRF
guard, size and time bounds, against a local media server."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from gateway_harness import LoopThread

from .api_helpers import assert_openai_error

MODEL = "gemini-2.5-flash"


def png_bytes() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


PNG = png_bytes()
PNG_B64 = base64.b64encode(PNG).decode()


def image_message(url: str, text: str = "what is this?", **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url, **extra}}],
        }
    ]


def post(gw_or_client: Any, messages: list[dict[str, Any]], model: str = MODEL) -> httpx.Response:
    if isinstance(gw_or_client, httpx.Client):
        return gw_or_client.post("/v1/chat/completions", json={"model": model, "messages": messages})
    return httpx.post(gw_or_client.url + "/v1/chat/completions", json={"model": model, "messages": messages}, timeout=30)


# -- references and inline data (no fetching) --------------------------------------------------------------


def test_data_url_becomes_inline_data(strict_raw, fake):
    r = post(strict_raw, image_message(f"data:image/png;base64,{PNG_B64}"))
    assert r.status_code == 200, r.text
    parts = fake.last_body()["contents"][0]["parts"]
    assert parts == [{"text": "what is this?"}, {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}]


@pytest.mark.parametrize(
    "url, mime",
    [
        ("gs://bucket/path/cat.jpg", "image/jpeg"),
        ("gs://bucket/doc.pdf", "application/pdf"),
        ("https://example.com/images/cat.png", "image/png"),
        ("https://example.com/a/b/photo.webp?size=large", "image/webp"),
    ],
)
def test_reference_urls_become_file_data(strict_raw, fake, url, mime):
    r = post(strict_raw, image_message(url))
    assert r.status_code == 200, r.text
    parts = fake.last_body()["contents"][0]["parts"]
    assert parts[1] == {"fileData": {"mimeType": mime, "fileUri": url}}


def test_image_detail_sets_media_resolution(strict_raw, fake):
    r = post(strict_raw, image_message(f"data:image/png;base64,{PNG_B64}", detail="low"))
    assert r.status_code == 200, r.text
    assert fake.last_body()["generationConfig"] == {"mediaResolution": "MEDIA_RESOLUTION_LOW"}


def test_audio_and_file_parts(strict_raw, fake):
    wav = base64.b64encode(b"RIFF\x00\x00\x00\x00WAVEfmt ").decode()
    pdf = base64.b64encode(b"%PDF-1.4 tiny").decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
                {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf}", "filename": "a.pdf"}},
                {"type": "text", "text": "summarise"},
            ],
        }
    ]
    r = post(strict_raw, messages)
    assert r.status_code == 200, r.text
    assert fake.last_body()["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "audio/wav", "data": wav}},
        {"inlineData": {"mimeType": "application/pdf", "data": pdf}},
        {"text": "summarise"},
    ]
    # the fake counts 258 prompt tokens per media part
    assert r.json()["usage"]["prompt_tokens"] >= 2 * 258


def test_without_fetching_unknown_https_type_is_400(strict_raw, fake):
    r = post(strict_raw, image_message("https://example.com/image?id=1"))
    err = assert_openai_error(r, 400, param="messages[0].content[1].image_url.url")
    assert "messages[0].content[1].image_url.url" in err["message"]
    assert fake.stats()["requests"] == 0


# -- opt-in fetching ---------------------------------------------------------------------------------------


class MediaServer:
    """A local HTTP server for fetch tests; counts hits per path."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.runner_loop = LoopThread("media-server")
        self.url = self.runner_loop.run(self._start())

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_get("/{name:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.port = port
        return f"http://127.0.0.1:{port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if name == "pic":  # no extension: the type comes from the Content-Type header
            return web.Response(body=PNG, content_type="image/png")
        if name == "big":
            return web.Response(body=b"\0" * 5000, content_type="image/png")
        if name == "big-chunked":
            response = web.StreamResponse(headers={"content-type": "image/png"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            for _ in range(10):
                await response.write(b"\0" * 500)
            await response.write_eof()
            return response
        if name == "slow":
            await asyncio.sleep(3)
            return web.Response(body=PNG, content_type="image/png")
        if name == "missing":
            return web.Response(status=404, text="nope")
        if name == "octets":  # neither the header nor the name tells a media type
            return web.Response(body=b"\x01\x02", content_type="application/octet-stream")
        if name.startswith("redirect-to/"):
            raise web.HTTPFound(name[len("redirect-to/") :].replace("http:/", "http://", 1))
        return web.Response(status=404)

    def stop(self) -> None:
        self.runner_loop.run(self._runner.cleanup())
        self.runner_loop.stop()


@pytest.fixture(scope="module")
def media_server() -> Iterator[MediaServer]:
    server = MediaServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fetching(make_gateway):
    """A gateway that fetches media URLs, trusting the local media server's address."""
    return make_gateway(
        media={"fetch_urls": True, "allow_hosts": ["127.0.0.1"], "fetch_max_bytes": 1000, "fetch_timeout": 0.5}
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/pic",
        "http://10.1.2.3/pic.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/pic",
        "https://192.168.0.10/x",
        "http://[::ffff:127.0.0.1]:{port}/pic",
        "http://localhost:{port}/pic",
        "http://0.0.0.0:{port}/pic",
    ],
)
def test_fetch_refuses_non_public_addresses(make_gateway, media_server, fake, url):
    gw = make_gateway(media={"fetch_urls": True, "fetch_timeout": 2})
    url = url.format(port=media_server.port)
    before = sum(media_server.hits.values())
    r = post(gw, image_message(url))
    err = assert_openai_error(r, 400, param="messages[0].content[1].image_url.url", type="invalid_request_error")
    assert "messages[0].content[1].image_url.url" in err["message"]
    assert sum(media_server.hits.values()) == before  # never connected
    assert fake.stats()["requests"] == 0
    # and the gateway keeps serving
    ok = httpx.post(gw.url + "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200


def test_fetch_allowed_host_inlines_the_bytes(fetching, media_server, fake):
    r = post(fetching, image_message(media_server.url + "/pic"))
    assert r.status_code == 200, r.text
    parts = fake.last_body()["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}
    assert media_server.hits.get("pic", 0) >= 1


def test_fetch_same_url_twice_in_one_request_fetches_once(fetching, media_server, fake):
    before = media_server.hits.get("pic", 0)
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": media_server.url + "/pic"}},
                {"type": "image_url", "image_url": {"url": media_server.url + "/pic"}},
                {"type": "text", "text": "twice"},
            ],
        }
    ]
    r = post(fetching, messages)
    assert r.status_code == 200, r.text
    assert media_server.hits["pic"] - before == 1
    parts = fake.last_body()["contents"][0]["parts"]
    assert parts[0] == parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}


@pytest.mark.parametrize("name", ["big", "big-chunked"])
def test_fetch_size_bound(fetching, media_server, fake, name):
    r = post(fetching, image_message(media_server.url + "/" + name))
    err = assert_openai_error(r, 400, param="messages[0].content[1].image_url.url")
    assert "1000" in err["message"]
    assert fake.stats()["requests"] == 0


def test_fetch_time_bound(fetching, media_server, fake):
    import time

    start = time.monotonic()
    r = post(fetching, image_message(media_server.url + "/slow"))
    elapsed = time.monotonic() - start
    err = assert_openai_error(r, 400, param="messages[0].content[1].image_url.url")
    assert "timed out" in err["message"]
    assert elapsed < 2.5


@pytest.mark.parametrize("name", ["missing", "octets"])
def test_fetch_failures_are_400(fetching, media_server, fake, name):
    r = post(fetching, image_message(media_server.url + "/" + name))
    assert_openai_error(r, 400, param="messages[0].content[1].image_url.url")


def test_fetch_redirect_to_a_private_host_is_refused(fetching, media_server, fake):
    """The allowed host redirects to `localhost`, which is not allowed: the guard runs on every hop."""
    target = f"http://localhost:{media_server.port}/pic"
    before = media_server.hits.get("pic", 0)
    r = post(fetching, image_message(media_server.url + "/redirect-to/" + target))
    assert_openai_error(r, 400, param="messages[0].content[1].image_url.url")
    assert media_server.hits.get("pic", 0) == before


def test_fetch_leaves_gs_urls_as_references(fetching, fake):
    r = post(fetching, image_message("gs://bucket/cat.png"))
    assert r.status_code == 200, r.text
    assert fake.last_body()["contents"][0]["parts"][1] == {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/cat.png"}}


def test_a_refused_request_fetches_nothing(make_gateway, media_server, fake):
    """The key's model check (403) and the routing come before any media URL is fetched."""
    gw = make_gateway(
        media={"fetch_urls": True, "allow_hosts": ["127.0.0.1"], "fetch_max_bytes": 1000, "fetch_timeout": 0.5},
        auth={"client_keys": [{"name": "narrow", "key": "sk-narrow", "models": ["gemini-2.5-flash-lite"]}]},
    )
    before = media_server.hits.get("pic", 0)
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": MODEL, "messages": image_message(media_server.url + "/pic")},
                   headers={"authorization": "Bearer sk-narrow"}, timeout=30)
    assert_openai_error(r, 403, type="invalid_request_error")
    assert r.json()["error"]["code"] == "model_not_allowed"
    assert media_server.hits.get("pic", 0) == before
    assert fake.stats()["requests"] == 0
