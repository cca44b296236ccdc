"""Thinnest reasonable forwarder, the baseline the gateway is compared against.

Owns: nothing but forwarding. Starlette + uvicorn (uvloop, httptools, no access
log) + one shared aiohttp ClientSession. ``POST /v1/chat/completions`` (and
``POST /v1/responses``, the same handler) reads the body bytes and sends them
untouched to the upstream: bodies containing
``"stream":true`` go to ``:streamGenerateContent?alt=sse`` and are relayed chunk
by chunk (``resp.content.iter_any()``); everything else goes to
``:generateContent`` and the answer bytes are returned as-is. No translation,
no validation. ``POST /v1/embeddings`` does the same with
``gemini-embedding-001:batchEmbedContents`` (the answer: Google's vectors,
untouched). ``POST /v1beta/models/...`` (the native routes' counterpart)
forwards the same path and query the same way. ``GET /healthz`` is the
readiness probe.

Usage: ``python bench/baseline.py --port 8002 --upstream http://127.0.0.1:8001``
"""

from __future__ import annotations

import argparse
import contextlib

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "gemini-2.5-flash"
EMBED_MODEL = "gemini-embedding-001"


def build_app(upstream: str, api_key: str = "bench-key") -> Starlette:
    base = f"{upstream.rstrip('/')}/v1beta/models/{MODEL}"
    unary_url = f"{base}:generateContent"
    stream_url = f"{base}:streamGenerateContent?alt=sse"
    embed_url = f"{upstream.rstrip('/')}/v1beta/models/{EMBED_MODEL}:batchEmbedContents"
    headers = {"content-type": "application/json", "x-goog-api-key": api_key}
    state: dict[str, aiohttp.ClientSession] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            state["session"] = session
            yield

    async def forward(url: str, body: bytes, stream: bool, media_type: str | None = None) -> Response:
        """POST the body untouched; the answer as it comes (a stream relayed read by read)."""
        session = state["session"]
        if stream:
            resp = await session.post(url, data=body, headers=headers)

            async def relay():
                try:
                    async for chunk in resp.content.iter_any():
                        yield chunk
                finally:
                    resp.release()

            media = media_type or resp.headers["content-type"]
            return StreamingResponse(relay(), status_code=resp.status, media_type=media)
        async with session.post(url, data=body, headers=headers) as resp:
            media = media_type or resp.headers["content-type"]
            return Response(await resp.read(), status_code=resp.status, media_type=media)

    async def chat(request: Request) -> Response:
        body = await request.body()
        if b'"stream":true' in body or b'"stream": true' in body:
            return await forward(stream_url, body, True, "text/event-stream")
        return await forward(unary_url, body, False, "application/json")

    async def embeddings(request: Request) -> Response:
        return await forward(embed_url, await request.body(), False, "application/json")

    async def native(request: Request) -> Response:
        """`POST /v1beta/models/...`: the same path and query upstream, the body and answer untouched."""
        path, query = request.url.path, request.url.query
        url = upstream.rstrip("/") + path + (f"?{query}" if query else "")
        return await forward(url, await request.body(), path.endswith(":streamGenerateContent"))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/responses", chat, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1beta/models/{rest:path}", native, methods=["POST"]),
            Route("/healthz", healthz),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8002)
    ap.add_argument("--upstream", default="http://127.0.0.1:8001")
    args = ap.parse_args()
    uvicorn.run(
        build_app(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
