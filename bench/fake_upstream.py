"""Fast fake Gemini upstream for the benchmark (owns: canned Gemini wire traffic).

A raw asyncio protocol on uvloop with httptools parsing, so that it costs far
less per request than the servers under test and never becomes the bottleneck.
All response bytes are built once up front; serving a request is a dict lookup
plus one ``transport.write`` (or one per SSE chunk for streams).

Routes (by path suffix, so any ``/v1beta/models/<model>`` or Vertex-style
prefix works):

* ``POST ...:generateContent``                    -> one realistic JSON response
* ``POST ...:streamGenerateContent?alt=sse``      -> ``text/event-stream``, chunked
  transfer encoding, N events ``data: {...}\\r\\n\\r\\n`` each written separately
* ``POST ...:streamGenerateContent`` (no alt=sse) -> the same N responses as a JSON array
* ``POST ...:batchEmbedContents``                 -> N embeddings of D values each (``--embed-dims``,
  env ``FAKE_UPSTREAM_EMBED_DIMS``, default 3072; N = header ``x-fake-embeddings`` or query
  ``embeddings=``, default ``--embeddings`` / env ``FAKE_UPSTREAM_EMBEDDINGS`` / 100), pretty-printed
  as Google sends it (compact with ``?prettyPrint=false``, Google's system parameter), with ``usageMetadata``
* ``GET  /v1beta/models``                         -> a small model list
* ``GET  /healthz``                               -> ``ok``

Stream shape: N chunks (``--chunks``, env ``FAKE_UPSTREAM_CHUNKS``, header
``x-fake-chunks`` or query ``chunks=``; default 100) and an optional delay
between chunks in ms (``--delay-ms``, env ``FAKE_UPSTREAM_DELAY_MS``, header
``x-fake-delay-ms`` or query ``delay_ms=``; default 0). Request bodies are read
and ignored.

Usage: ``python bench/fake_upstream.py --port 8001``
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
from urllib.parse import parse_qs

import httptools
import orjson

MODEL = "gemini-2.5-flash"
RESPONSE_ID = "x2ZbaLyAJ4rVz7IPj8nE-QI"
PROMPT_TOKENS = 14
THOUGHTS_TOKENS = 23
TEXT = (
    "Hello there! It is really lovely to meet you today. I hope everything is going "
    "wonderfully for you, and I am always happy to help with whatever you might need."
)  # ~30 words
WORDS = ["Hello", " there!", " It", " is", " really", " lovely", " to", " meet", " you", " today."]


def usage(candidates: int, final: bool) -> dict:
    u = {
        "promptTokenCount": PROMPT_TOKENS,
        "candidatesTokenCount": candidates,
        "totalTokenCount": PROMPT_TOKENS + candidates + (THOUGHTS_TOKENS if final else 0),
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": PROMPT_TOKENS}],
    }
    if final:
        u["thoughtsTokenCount"] = THOUGHTS_TOKENS
    return u


def generate_content() -> dict:
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": TEXT}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": usage(36, final=True),
        "modelVersion": MODEL,
        "responseId": RESPONSE_ID,
    }


def stream_chunks(n: int) -> list[dict]:
    chunks = []
    for i in range(n):
        last = i == n - 1
        cand = {"content": {"parts": [{"text": WORDS[i % len(WORDS)]}], "role": "model"}, "index": 0}
        if last:
            cand["finishReason"] = "STOP"
        chunks.append(
            {
                "candidates": [cand],
                "usageMetadata": usage(i + 1, final=last),
                "modelVersion": MODEL,
                "responseId": RESPONSE_ID,
            }
        )
    return chunks


def embeddings(n: int, dims: int) -> dict:
    """n vectors of `dims` float32-like values printed with 9 significant digits, as Google prints them."""
    import random

    rng = random.Random(7)
    vectors = [{"values": [float(f"{rng.gauss(0, 0.02):.9g}") for _ in range(dims)]} for _ in range(n)]
    total = 12 * n
    return {
        "embeddings": vectors,
        "usageMetadata": {"promptTokenCount": total, "promptTokenDetails": [{"modality": "TEXT", "tokenCount": total}]},
    }


MODELS = {
    "models": [
        {
            "name": f"models/{m}",
            "version": "001",
            "displayName": m,
            "inputTokenLimit": 1048576,
            "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }
        for m in ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash")
    ]
}


def head(status: str, ctype: str, length: int | None, keep_alive: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status}",
        f"Content-Type: {ctype}",
        "Vary: Origin, X-Origin, Referer",
        "Server: scaffolding on HTTPServer2",
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked",
    ]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def full(status: str, ctype: str, body: bytes, keep_alive: bool) -> bytes:
    return head(status, ctype, len(body), keep_alive) + body


@functools.lru_cache(maxsize=64)
def canned(kind: str, n: int, keep_alive: bool) -> bytes | list[bytes]:
    """All response bytes, built once per (kind, chunk count, keep-alive)."""
    if kind == "generate":
        return full("200 OK", "application/json; charset=UTF-8", orjson.dumps(generate_content()), keep_alive)
    if kind == "array":
        return full("200 OK", "application/json; charset=UTF-8", orjson.dumps(stream_chunks(n)), keep_alive)
    if kind == "sse":  # [headers, chunk 1, ..., chunk n, terminator]: one write each
        parts = [head("200 OK", "text/event-stream", None, keep_alive)]
        for c in stream_chunks(n):
            event = b"data: " + orjson.dumps(c) + b"\r\n\r\n"
            parts.append(b"%x\r\n%s\r\n" % (len(event), event))
        parts.append(b"0\r\n\r\n")
        return parts
    if kind in ("embed", "embed-compact"):
        option = orjson.OPT_INDENT_2 if kind == "embed" else None
        body = orjson.dumps(embeddings(n, Upstream.embed_dims), option=option)
        return full("200 OK", "application/json; charset=UTF-8", body, keep_alive)
    if kind == "models":
        return full("200 OK", "application/json; charset=UTF-8", orjson.dumps(MODELS), keep_alive)
    if kind == "healthz":
        return full("200 OK", "text/plain", b"ok", keep_alive)
    err = {"error": {"code": 404, "message": "Not found (fake upstream).", "status": "NOT_FOUND"}}
    return full("404 Not Found", "application/json; charset=UTF-8", orjson.dumps(err), keep_alive)


class Upstream(asyncio.Protocol):
    default_chunks = 100
    default_delay_ms = 0.0
    embed_dims = 3072
    default_embeddings = 100

    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.busy: asyncio.Task | None = None  # a delayed stream in progress
        self.queued: list[tuple] = []  # pipelined requests waiting behind it

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.transport.close()

    def connection_lost(self, exc):
        if self.busy:
            self.busy.cancel()

    # httptools callbacks
    def on_message_begin(self):
        self.url = b""
        self.headers = {}

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers[name.lower()] = value

    def on_message_complete(self):
        req = (self.parser.get_method(), self.url, self.headers, self.parser.should_keep_alive())
        if self.busy:
            self.queued.append(req)
        else:
            self.respond(*req)

    def respond(self, method: bytes, url: bytes, headers: dict, keep_alive: bool):
        path, _, query = url.decode("latin-1").partition("?")
        q = parse_qs(query) if query else {}
        if method == b"POST" and path.endswith(":generateContent"):
            out = canned("generate", 0, keep_alive)
        elif method == b"POST" and path.endswith(":streamGenerateContent"):
            n = int(q.get("chunks", [headers.get(b"x-fake-chunks", self.default_chunks)])[0])
            delay = float(q.get("delay_ms", [headers.get(b"x-fake-delay-ms", self.default_delay_ms)])[0])
            if q.get("alt") != ["sse"]:
                out = canned("array", n, keep_alive)
            elif delay > 0:
                self.busy = asyncio.get_running_loop().create_task(
                    self.slow_stream(canned("sse", n, keep_alive), delay / 1000, keep_alive)
                )
                return
            else:
                for part in canned("sse", n, keep_alive):
                    self.transport.write(part)
                out = b""
        elif method == b"POST" and path.endswith(":batchEmbedContents"):
            n = int(q.get("embeddings", [headers.get(b"x-fake-embeddings", self.default_embeddings)])[0])
            out = canned("embed-compact" if q.get("prettyPrint") == ["false"] else "embed", n, keep_alive)
        elif method == b"GET" and path.rstrip("/").endswith("/models"):
            out = canned("models", 0, keep_alive)
        elif method == b"GET" and path == "/healthz":
            out = canned("healthz", 0, keep_alive)
        else:
            out = canned("404", 0, keep_alive)
        if out:
            self.transport.write(out)
        if not keep_alive:
            self.transport.close()

    async def slow_stream(self, parts: list[bytes], delay: float, keep_alive: bool):
        self.transport.write(parts[0])
        for part in parts[1:-1]:
            await asyncio.sleep(delay)
            self.transport.write(part)
        self.transport.write(parts[-1])
        self.busy = None
        if not keep_alive:
            self.transport.close()
        while self.queued and not self.busy:
            self.respond(*self.queued.pop(0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--chunks", type=int, default=int(os.environ.get("FAKE_UPSTREAM_CHUNKS", 100)))
    ap.add_argument("--delay-ms", type=float, default=float(os.environ.get("FAKE_UPSTREAM_DELAY_MS", 0)))
    ap.add_argument("--embed-dims", type=int, default=int(os.environ.get("FAKE_UPSTREAM_EMBED_DIMS", 3072)))
    ap.add_argument("--embeddings", type=int, default=int(os.environ.get("FAKE_UPSTREAM_EMBEDDINGS", 100)),
                    help="vectors per batchEmbedContents answer (unless the header or query says otherwise)")
    args = ap.parse_args()
    Upstream.embed_dims = args.embed_dims
    Upstream.default_embeddings = args.embeddings
    Upstream.default_chunks = args.chunks
    Upstream.default_delay_ms = args.delay_ms

    import uvloop

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, args.host, args.port, backlog=1024)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
