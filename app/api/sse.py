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
from app.pipeline.seam import KEEPALIVE, Answer
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
    """The answer of a stream being opened: its body at once if it opens in time, else keep-alives first."""
    task: asyncio.Task[T] = asyncio.ensure_future(opening)
    begin = time.monotonic()
    wake = begin + keepalive
    try:
        while True:
            await asyncio.wait((task,), timeout=max(0.0, wake - time.monotonic()))
            now = time.monotonic()
            since = ctx.in_flight_since
            if task.done() or now - begin >= MAX_SILENT_INTERVALS * keepalive:
                break
            if since is not None and now - since >= keepalive / 2:
                break  # a call has been in flight for a while: Google is working on it
            # between attempts, or an attempt just sent (it may fail fast): look again soon
            wake = since + keepalive / 2 if since is not None else now + keepalive / 10
    except BaseException:
        task.cancel()
        raise
    if task.done():
        result = task.result()  # a failure before the first byte: an HTTP error
        return Answer(stream=body_of(result), headers=headers_of(result))
    return Answer(stream=_late(task, ctx, keepalive, body_of))


async def _late(
    task: asyncio.Task[T], ctx: RequestContext, keepalive: float, body_of: Callable[[T], AsyncIterator[bytes]]
) -> AsyncIterator[bytes]:
    body: AsyncIterator[bytes] | None = None
    try:
        while not task.done():
            yield KEEPALIVE
            await asyncio.wait((task,), timeout=keepalive)
        try:
            result = task.result()
        except GatewayError as exc:
            log.warning("stream failed before its first event: %s %s", exc.status, exc.message[:200])
            ctx.error_code, ctx.error_type = exc.code or exc.type, exc.type
            yield error_event(exc)
            return
        body = body_of(result)
        async for data in body:
            yield data
    finally:
        if not task.done():
            task.cancel()  # the client left while Google was still silent
        if body is not None:
            await body.aclose()  # type: ignore[attr-defined]


def stream_failed(ctx: RequestContext, exc: GatewayError) -> None:
    ctx.error_code, ctx.error_type = exc.code or exc.type, exc.type
    log.warning("stream ended with an error: %s %s", exc.status, exc.message[:200])


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
