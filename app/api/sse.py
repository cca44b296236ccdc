"""Server-sent events to the client: framing, keep-alives, disconnect = cancel.

`SSEResponse` is a small ASGI response instead of Starlette's
`StreamingResponse` because it must (a) notice a client that goes away at
once, even while the model is silent, and then cancel the stream so that the
body generator's `finally` closes the upstream connection, and (b) cost as
little as possible per chunk: one `send` per upstream read, however many
events that read completed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"

SSE_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


def frame(event: Mapping[str, Any]) -> bytes:
    """One `data:` event."""
    return b"data: " + orjson.dumps(event) + b"\n\n"


def frames(events: list[dict[str, Any]]) -> bytes:
    return b"".join([b"data: " + orjson.dumps(e) + b"\n\n" for e in events])


class SSEResponse:
    def __init__(self, body: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.body = body
        self.raw_headers = list(SSE_HEADERS)
        for key, value in (headers or {}).items():
            self.raw_headers.append((key.lower().encode("latin-1"), value.encode("latin-1")))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    task.cancel()
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for data in self.body:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()  # the client left; that is the end of this response, not an error
        except OSError:
            pass  # the client's socket failed mid-write
        finally:
            watcher.cancel()
            await self.body.aclose()  # type: ignore[attr-defined]
