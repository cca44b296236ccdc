"""Server-sent events to the client: framing, keep-alives, disconnect = cancel.

`SSEResponse` is a small ASGI response instead of Starlette's
`StreamingResponse` because it must cost as little as possible per chunk (one
`send` per upstream read, however many events that read completed) and leave
disconnect handling to `ClientWatch`, which notices a client that goes away at
once, even while the model is silent, and cancels the request so that the body
generator's `finally` closes the upstream connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from app.translate.chat_stream import sse_data

KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"

SSE_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


frame = sse_data  # one `data:` event (the chunk encoding lives with the stream translator)


def frames(events: list[dict[str, Any]]) -> bytes:
    return b"".join([sse_data(e) for e in events])


class ClientWatch:
    """Notices when the client of one request goes away, and cancels the request's task.

    One watcher per request, started once the body is read (from then on only
    `http.disconnect` can come from `receive`). It covers the wait for Google as
    well as the stream itself, so a client that leaves, even while the model is
    silent, stops the upstream call: the cancelled task's `finally` blocks close it.

    The watching task starts only once the request has lasted `after` seconds: a
    request answered sooner (a fast model, an error) never pays for it, and a
    client that left earlier is noticed the moment it starts (`receive` then
    reports the disconnect at once).
    """

    __slots__ = ("gone", "_task", "_receive", "_timer", "_watcher")

    def __init__(self, receive: Any, after: float) -> None:
        self.gone = False
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(after, self._start)

    def _start(self) -> None:
        self._timer = None
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self._task.cancel()

    def absorb(self) -> bool:
        """After a CancelledError: True (and the cancellation undone) if it came from us."""
        if self.gone:
            self._task.uncancel()
        return self.gone

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


class SSEResponse:
    """`200 text/event-stream` from an async iterator of already framed bytes.

    Disconnects are noticed by the request's `ClientWatch`; whatever ends the
    response (the end of the body, an error, a cancellation), the body is closed,
    which closes the upstream stream.
    """

    def __init__(self, body: AsyncIterator[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.body = body
        self.raw_headers = list(SSE_HEADERS)
        for key, value in (headers or {}).items():
            self.raw_headers.append((key.lower().encode("latin-1"), value.encode("latin-1")))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for data in self.body:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client's socket failed mid-write
        finally:
            await self.body.aclose()  # type: ignore[attr-defined]
