"""Putting an answer on the wire, and breaking the wire on purpose.

Owns: JSON bodies (answers and Google's errors), the two stream framings
(SSE `data: <json>\\r\\n\\r\\n` without `[DONE]`; the JSON-array form used
without `alt=sse`), errors before the first byte or mid-stream (`data:`
event, raw multi-line JSON, or array element), connection faults (reset
before answering, reset or stall after k chunks), delays, and noticing a
client that went away (the transport is polled every 50 ms while waiting),
which is counted in `streams_aborted_by_client` / `requests_aborted_by_client`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from app.testing.fake_gemini.directives import Directive, ErrorSpec
from app.testing.fake_gemini.state import FakeState
from app.testing.google_errors import GoogleError

JSON_TYPE = "application/json; charset=UTF-8"
POLL_SECONDS = 0.05


def json_response(obj: Any, status: int = 200, *, pretty: bool = False) -> web.Response:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return web.Response(status=status, body=orjson.dumps(obj, option=option), headers={"Content-Type": JSON_TYPE})


def error_response(error: GoogleError, *, array: bool = False) -> web.Response:
    """Google's error body (pretty-printed, as Google sends it); wrapped in a list for JSON-array streams."""
    body: Any = error.to_body()
    return json_response([body] if array else body, error.code, pretty=True)


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def wait_or_gone(request: web.Request, seconds: float, state: FakeState) -> bool:
    """Sleep up to `seconds`; True as soon as the client has gone away."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        if client_gone(request):
            return True
        remaining = deadline - loop.time()
        if remaining <= 0 or state.closing:
            return False
        await asyncio.sleep(min(POLL_SECONDS, remaining))


def abort_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


@dataclass
class Delivery:
    """One generate answer and how to deliver it."""

    directive: Directive
    stream: bool
    sse: bool
    answer: Any  # a response dict, or the list of stream chunks
    failure: ErrorSpec | None
    error: GoogleError | None
    entry: dict[str, Any]


def _dump_chunk(chunk: Any, *, sse: bool, first: bool) -> bytes:
    if sse:
        return b"data: " + orjson.dumps(chunk) + b"\r\n\r\n"
    return (b"[" if first else b"\n,\r\n") + orjson.dumps(chunk, option=orjson.OPT_INDENT_2)


def _dump_error(error: GoogleError, *, sse: bool, raw: bool, first: bool) -> bytes:
    if sse and raw:
        return orjson.dumps(error.to_body(), option=orjson.OPT_INDENT_2) + b"\n"
    return _dump_chunk(error.to_body(), sse=sse, first=first)


def _client_went_away(state: FakeState, delivery: Delivery) -> web.StreamResponse:
    name = "streams_aborted_by_client" if delivery.stream else "requests_aborted_by_client"
    state.counters[name] += 1
    delivery.entry["outcome"] = "client_gone"
    return web.Response()  # never reaches the client; aiohttp drops it quietly


async def deliver(request: web.Request, state: FakeState, delivery: Delivery) -> web.StreamResponse:
    """Answer one generate request, applying the directive's delays and faults."""
    directive = delivery.directive
    if directive.reset_before_response:
        state.counters["connection_resets"] += 1
        delivery.entry["outcome"] = "reset"
        abort_connection(request)
        return web.Response()
    delay = (state.latency_ms + directive.first_byte_delay_ms) / 1000
    if delay and await wait_or_gone(request, delay, state):
        return _client_went_away(state, delivery)
    failure, error = delivery.failure, delivery.error
    if error is not None and (not delivery.stream or failure is None or failure.after_chunks is None):
        state.counters["errors_injected"] += 1
        delivery.entry["outcome"] = "error"
        raise error
    if not delivery.stream:
        delivery.entry["outcome"] = "ok"
        return json_response(delivery.answer)
    return await _stream(request, state, delivery)


def _at(value: int | None, total: int) -> int | None:
    """A chunk position from a directive, clamped to "after the last chunk"."""
    return None if value is None else min(value, total)


async def _stream(request: web.Request, state: FakeState, delivery: Delivery) -> web.StreamResponse:
    directive, chunks, sse = delivery.directive, delivery.answer, delivery.sse
    headers = {"Content-Type": "text/event-stream" if sse else JSON_TYPE, "X-Content-Type-Options": "nosniff"}
    if sse:
        headers["Content-Disposition"] = "attachment"
    response = web.StreamResponse(status=200, headers=headers)
    try:
        await response.prepare(request)
    except ConnectionError:
        return _client_went_away(state, delivery)
    state.counters["streams_started"] += 1
    total = len(chunks)
    reset_at = _at(directive.reset_after_chunks, total)
    stall_at = _at(directive.stall_after_chunks, total)
    failure, error = delivery.failure, delivery.error
    error_at = _at(failure.after_chunks, total) if failure is not None and error is not None else None
    try:
        for index in range(total + 1):
            if index == reset_at:
                state.counters["connection_resets"] += 1
                delivery.entry["outcome"] = "reset"
                abort_connection(request)
                return response
            if index == stall_at:
                return await _stall(request, state, delivery, response)
            if index == error_at and failure is not None and error is not None:
                state.counters["errors_injected"] += 1
                delivery.entry["outcome"] = "error_mid_stream"
                await response.write(_dump_error(error, sse=sse, raw=failure.raw, first=index == 0))
                break
            if index == total:
                delivery.entry["outcome"] = "ok"
                break
            await response.write(_dump_chunk(chunks[index], sse=sse, first=index == 0))
            pause = directive.chunk_delay_ms / 1000
            if index < total - 1 and pause and await wait_or_gone(request, pause, state):
                return _client_went_away(state, delivery)
        if not sse:
            await response.write(b"\n]")
        await response.write_eof()
    except ConnectionError:
        return _client_went_away(state, delivery)
    if delivery.entry["outcome"] == "ok":
        state.counters["streams_completed"] += 1
    return response


async def _stall(
    request: web.Request, state: FakeState, delivery: Delivery, response: web.StreamResponse
) -> web.StreamResponse:
    state.counters["stalls"] += 1
    delivery.entry["outcome"] = "stalled"
    if await wait_or_gone(request, state.stall_timeout_s, state):
        return _client_went_away(state, delivery)
    abort_connection(request)  # timed out (or shutting down): drop the silent connection
    return response
