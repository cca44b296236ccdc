"""Streamed answers that start late: when to answer 200 with keep-alives (any streamed endpoint).

Google may think for a long time before a stream's first event. An endpoint
opens its stream (`Dispatcher.open_stream`) and hands the opening here:

* while the dispatcher waits between attempts (backoff, rate limits), the
  client waits, and a final failure is an ordinary HTTP error (429 / 503 with
  `Retry-After`, which SDKs retry by themselves); the dispatcher's retry
  budget for streams is shorter than one keep-alive interval, so that failure
  comes before the interval ends;
* when an upstream is working on the call (a call has been in flight for
  half an interval or more: Google is slow to answer, maybe holding its
  headers while it thinks) as the keep-alive interval ends, the answer
  starts: 200 and keep-alive comments until the stream comes (a failure then
  is an error event). A call sent just now is given half an interval to fail
  fast first.

A client that leaves meanwhile cancels the opening (the pipeline's watch).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from app.errors import GatewayError
from app.gateway.ratelimit import release_leases
from app.pipeline.context import RequestContext
from app.pipeline.seam import KEEPALIVE, Answer, EarlyAnswer, start_early
from app.translate.chat_stream import error_event

log = logging.getLogger("gemini_proxy.sse")

T = TypeVar("T")

# The answer starts after this many keep-alive intervals in any case.
MAX_SILENT_INTERVALS = 2


async def stream_answer(
    opening: Awaitable[T],
    ctx: RequestContext,
    keepalive: float,
    body_of: Callable[[T], AsyncIterator[bytes]],
    headers_of: Callable[[T], dict[str, str]],
) -> Answer:
    """The answer of a stream being opened: its body at once if it opens in time, else keep-alives first.

    The opening is awaited in the request's own task (a task of its own, and the loop turns to switch to it and
    back, cost more than the rest of a stream's start; bench/README.md). A timer looks at it after each keep-alive
    interval; when the answer must start, the pipeline starts it (app/pipeline/seam.py `start_early`: 200 and
    keep-alive comments from a task of its own), and this task takes it over once the stream opens, or ends it with
    one error event.
    """
    watch = _Opening(ctx, keepalive)
    try:
        result = await opening
    except GatewayError as exc:
        early = await watch.done()
        if early is None:
            raise  # a failure before the first byte: an HTTP error
        stream_failed(ctx, exc, "failed before its first event")
        return Answer(stream=_one(error_event(exc)))
    except BaseException:
        watch.abandon()
        raise
    if await watch.done() is None:
        return Answer(stream=body_of(result), headers=headers_of(result))
    return Answer(stream=body_of(result))  # (its headers went out with the 200 already)


class _Opening:
    """The timer of one stream's opening: when its answer must start (the module's docstring), the pipeline starts it."""

    __slots__ = ("ctx", "keepalive", "begin", "timer", "early")

    def __init__(self, ctx: RequestContext, keepalive: float) -> None:
        self.ctx = ctx
        self.keepalive = keepalive
        self.begin = time.monotonic()
        self.early: EarlyAnswer | None = None  # the answer begun early
        self.timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(keepalive, self._look)

    def _look(self) -> None:
        now = time.monotonic()
        since = self.ctx.in_flight_since
        keepalive = self.keepalive
        if now - self.begin >= MAX_SILENT_INTERVALS * keepalive or (since is not None and now - since >= keepalive / 2):
            self.timer = None  # a call has been in flight for a while (Google is working on it), or waited long enough
            self.early = start_early(self.ctx, keepalive)
            return
        # between attempts, or an attempt just sent (it may fail fast): look again soon
        wake = since + keepalive / 2 if since is not None else now + keepalive / 10
        self.timer = asyncio.get_running_loop().call_later(max(0.0, wake - now), self._look)

    async def done(self) -> EarlyAnswer | None:
        """The stream opened or failed: the answer begun early (its keep-alives stopped), or None."""
        if self.timer is not None:
            self.timer.cancel()
        if self.early is not None:
            await self.early.stop()
        return self.early

    def abandon(self) -> None:
        """The opening was cancelled (the client left, the server stops) or broke: no more keep-alives."""
        if self.timer is not None:
            self.timer.cancel()
        if self.early is not None:
            self.early.cancel()


async def _one(event: bytes) -> AsyncIterator[bytes]:
    yield event


def stream_failed(ctx: RequestContext, exc: GatewayError, what: str = "ended with an error") -> None:
    ctx.failed(exc)
    log.warning("stream %s: %s %s", what, exc.status, exc.message[:200])


async def pump(
    ctx: RequestContext, stream: Any, transcoder: Any, first: bytes, keepalive: float,
    error_sse: Callable[[GatewayError], bytes], close: Callable[[], Awaitable[None]],
    finishing: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[bytes]:
    """A started stream's SSE bytes: its first events, then each upstream read transcoded, keep-alives while
    Google is silent, the closing events; a failure ends it with one error event (`error_sse`).

    `close` runs when the body ends, however it ends (the endpoint's accounting: usage, signatures); `finishing`,
    when given, once the upstream stream has ended well, before the closing events go out (what the client's next
    request must find, e.g. a stored response). The endpoint returns this generator itself: one more generator
    around it would cost a hop per event.
    """
    stream.keepalive = keepalive
    try:
        if first:
            yield first
        while not stream.done:
            data = await stream.read()
            if data is None:
                yield KEEPALIVE
                continue
            out = transcoder.feed(data)
            if out:
                yield out
            if transcoder.error is not None:
                stream_failed(ctx, transcoder.error)
                return
        out = transcoder.finish()
        if transcoder.error is not None:
            stream_failed(ctx, transcoder.error)
        await release_leases(ctx)  # before the closing events: the client's next request finds its slot free
        if finishing is not None and transcoder.error is None:
            await finishing()
        yield out
    except GatewayError as exc:
        stream_failed(ctx, exc)
        yield error_sse(exc)
    finally:
        stream.close()
        await close()
