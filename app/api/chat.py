"""`POST /v1/chat/completions`: validate -> route -> translate -> call -> JSON or SSE.

A thin route: the work is in `translate/` (pure), `gateway/dispatch.py`
(retries, keys, fall-back) and `upstream/` (HTTP). It is a raw ASGI handler
that `GatewayApp` calls before FastAPI's middleware stack and router: on this
path they cost more than all of the translation together (measured: about
20 us of the 45 us the gateway adds in-process; bench/README.md). The body is
parsed with orjson and validated once by the pydantic request model. A client
that disconnects cancels the upstream call, before the answer starts as well as
during a stream (`api/sse.py`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
from pydantic import ValidationError

from app.errors import GatewayError, InvalidRequest, PayloadTooLarge, UpstreamError, internal_error, loc_to_path
from app.gateway.dispatch import OpenedStream, Outcome
from app.gateway.routing import Target
from app.state import GatewayState
from app.schemas.openai import ChatCompletionRequest
from app.translate.chat_request import GeminiCall, sent_param, to_gemini
from app.translate.chat_response import ResponseContext, to_openai
from app.translate.chat_stream import ChatStreamTranslator
from app.api.auth import bearer_token
from app.api.sse import DONE, KEEPALIVE, ClientWatch, SSEResponse, frame, frames
from app.upstream.errors import error_from_google
from app.upstream.sse import SSEDecoder, parse_payload

log = logging.getLogger("gemini_proxy.chat")

# How long a request runs before a task starts watching for its client's disconnect (api/sse.py).
WATCH_AFTER = 0.1

_JSON_HINT = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The API expects a JSON payload, but what was sent was not valid JSON.)"
)


async def read_body(receive: Any, declared: int | None, limit: int) -> bytes:
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"Request body too large: {declared} bytes; the limit is {limit} bytes.")
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body too large; the limit is {limit} bytes.")
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] != "http.request":
            raise InvalidRequest("The client closed the connection before the body was complete.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body too large; the limit is {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def validation_error(exc: ValidationError) -> InvalidRequest:
    """The first problem of a pydantic error, in OpenAI's wording, naming the parameter."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    param = loc_to_path(first["loc"])
    # A union (`content`: a string or a list of parts) reports one error per branch; the
    # deepest one inside the value the client sent is the one that says what is wrong.
    deeper = [e for e in errors if loc_to_path(e["loc"]).startswith((param + "[", param + "."))]
    if deeper:
        first = max(deeper, key=lambda e: len(loc_to_path(e["loc"])))
        param = loc_to_path(first["loc"])
    if first["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    same = [e for e in errors if loc_to_path(e["loc"]) == param]
    if any(e["type"].endswith(("_type", "_parsing")) or e["type"] == "int_from_float" for e in same):
        return InvalidRequest(
            f"Invalid type for '{param}': got {_type_name(first.get('input'))}; "
            + " or ".join(dict.fromkeys(e["msg"].lower() for e in same)) + ".",
            param=param,
            code="invalid_type",
        )
    return InvalidRequest(
        f"Invalid value for '{param}': {'; '.join(dict.fromkeys(e['msg'] for e in same))}.", param=param, code="invalid_value"
    )


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest(_JSON_HINT, code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        req = ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    if req.model_extra and log.isEnabledFor(logging.DEBUG):
        log.debug("ignoring unknown request fields: %s", sorted(req.model_extra))
    return req


# Completion ids only need to be unique, not secret: a pseudo-random generator seeded from the OS
# costs no system call per request (os.urandom did, measurably: bench/README.md). Tool call ids
# key the thought-signature store, so they stay unguessable.
_completion_ids = random.Random()


def new_completion_id() -> str:
    return "chatcmpl-" + base64.urlsafe_b64encode(_completion_ids.randbytes(21)).decode()


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18)


class ChatCompletionsEndpoint:
    """The ASGI handler of `POST /v1/chat/completions` (called directly by `GatewayApp`).

    It answers errors itself (OpenAI's error JSON) instead of relying on the
    framework's exception middleware: that is part of what keeps this path lean.
    """

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.extra_headers: list[tuple[bytes, bytes]] = [(b"x-gemini-proxy-demo", b"true")] if state.settings.demo else []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.handle(scope, receive, send)
        except GatewayError as exc:
            await self.send_json(send, exc.status, exc.body_bytes(), exc.headers)
        except Exception:
            request_id = secrets.token_hex(8)
            log.exception("unhandled error on POST %s (request id %s)", scope.get("path"), request_id)
            await self.send_json(send, 500, internal_error(request_id).body_bytes(), {})

    async def send_json(self, send: Any, status: int, body: bytes, headers: dict[str, str]) -> None:
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        raw.extend(self.extra_headers)
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        state = self.state
        authorization = api_key = None
        declared: int | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else None
            elif name in (b"api-key", b"x-api-key"):
                api_key = value.decode("latin-1")
        client_key = state.auth.check_token(bearer_token(authorization, api_key)) if state.auth.enabled else None
        req = parse_chat_request(await read_body(receive, declared, state.settings.server.max_request_bytes))
        watch = ClientWatch(receive, WATCH_AFTER)
        try:
            await self._answer(scope, receive, send, req, client_key)
        except UpstreamError as exc:
            if exc.status == 400:  # name the OpenAI parameter this request actually used
                exc.param = sent_param(exc.param, req)
            raise
        except asyncio.CancelledError:
            if not watch.absorb():
                raise
            log.info("client closed the connection; upstream call cancelled (POST %s)", scope.get("path"))
        finally:
            watch.close()

    async def _answer(self, scope: Any, receive: Any, send: Any, req: ChatCompletionRequest, client_key: str | None) -> None:
        state = self.state
        targets = state.router.resolve(req.model)
        env = await state.translation_env(req)

        def prepare(target: Target) -> GeminiCall:
            target_env = env if target.upstream.kind != "vertex" else replace(env, vertex=True)
            call = to_gemini(req, target.capabilities, target_env)
            if call.signature_bypasses:
                state.metrics.signature_bypasses += call.signature_bypasses
                log.info("thought signature bypass used %d time(s) for %s", call.signature_bypasses, target.label)
            if call.dropped_schema_keywords:
                log.info("schema keywords %s dropped for %s", ",".join(call.dropped_schema_keywords), target.label)
            return call

        if req.stream:
            # Google may think for a long time before its first event. Wait one keep-alive
            # interval for it (an error until then is an ordinary HTTP error); after that,
            # answer 200 and send keep-alives while the dispatcher keeps trying.
            opening = asyncio.get_running_loop().create_task(
                state.dispatcher.open_stream(targets, prepare, client_key, begin=_begin_stream)
            )
            try:
                await asyncio.wait((opening,), timeout=state.settings.server.keepalive_seconds)
            except BaseException:
                opening.cancel()
                raise
            if opening.done():
                opened, outcome = opening.result()
                response = _stream_response(state, opened, outcome)
            else:
                response = SSEResponse(_late_stream_body(state, opening))
            response.raw_headers.extend(self.extra_headers)
            await response(scope, receive, send)
            return
        response, outcome = await state.dispatcher.complete(targets, prepare, client_key)
        ctx = ResponseContext(outcome.call.options, new_completion_id(), int(time.time()), new_call_id)
        try:
            completion = to_openai(response, ctx)
        except GatewayError as exc:
            exc.headers.update(outcome.headers())
            raise
        if ctx.signatures:
            await state.signatures.put_many(ctx.signatures)
        await self.send_json(send, 200, orjson.dumps(completion), _headers(outcome))


def _headers(outcome: Outcome) -> dict[str, str]:
    headers = outcome.headers()
    if outcome.call.dropped_schema_keywords:
        headers["x-gemini-proxy-dropped-schema-keywords"] = ",".join(outcome.call.dropped_schema_keywords)
    return headers


def _error_event(exc: GatewayError) -> bytes:
    return frame(exc.body())


def _begin_stream(call: GeminiCall, first_events: list[bytes | dict[str, Any]]) -> tuple[ChatStreamTranslator, bytes]:
    """The translator of a stream and the bytes of its first events (raises for a broken start)."""
    translator = ChatStreamTranslator(ResponseContext(call.options, new_completion_id(), int(time.time()), new_call_id))
    first, error = translate_events(translator, first_events)
    if error is not None:
        raise error
    return translator, first


def _stream_response(state: GatewayState, opened: OpenedStream, outcome: Outcome) -> SSEResponse:
    translator, first = opened.started
    return SSEResponse(_stream_body(state, opened, translator, first), _headers(outcome))


async def _late_stream_body(state: GatewayState, opening: asyncio.Task[tuple[OpenedStream, Outcome]]) -> AsyncIterator[bytes]:
    """The answer of a stream whose first event is late: keep-alives until it comes, then the stream."""
    keepalive = state.settings.server.keepalive_seconds
    body: AsyncIterator[bytes] | None = None
    try:
        while not opening.done():
            yield KEEPALIVE
            await asyncio.wait((opening,), timeout=keepalive)
        try:
            opened, outcome = opening.result()
        except GatewayError as exc:
            log.warning("stream failed before its first event: %s %s", exc.status, exc.message[:200])
            yield _error_event(exc)
            return
        translator, first = opened.started
        body = _stream_body(state, opened, translator, first)
        async for data in body:
            yield data
    finally:
        if not opening.done():
            opening.cancel()  # the client left while Google was still silent
        if body is not None:
            await body.aclose()  # type: ignore[attr-defined]


def translate_read(decoder: SSEDecoder, translator: ChatStreamTranslator, data: bytes) -> tuple[bytes, GatewayError | None]:
    """The SSE bytes to send for one upstream read (b"": the body ended), and the error that ended the stream.

    Events in Google's framing reach the translator unparsed first (its plain
    text fast path), then parsed. An error event, or an event the translator
    refuses, ends the stream with one error event after the chunks before it.
    """
    if decoder.idle():  # the common read: one whole event, often a plain text delta
        sse = translator.feed_read(data)
        if sse is not None:
            return sse, None
    return translate_events(translator, decoder.feed_payloads(data) if data else decoder.flush())


def translate_events(translator: ChatStreamTranslator, items: list[bytes | dict[str, Any]]) -> tuple[bytes, GatewayError | None]:
    """`translate_read` of the events `SSEDecoder.feed_payloads` gave."""
    out: list[bytes] = []
    plain = translator.feed_payload
    try:
        for item in items:
            if type(item) is bytes:  # an event in Google's framing, not parsed yet
                sse = plain(item)
                if sse is not None:
                    out.append(sse)
                    continue
                item = parse_payload(item)
                if item is None:
                    continue
            if "error" in item:  # type: ignore[operator]
                raise error_from_google(200, item)
            out.append(translator.feed_sse(item))  # type: ignore[arg-type]
    except GatewayError as exc:
        out.append(_error_event(exc))
        return b"".join(out), exc
    return b"".join(out), None


async def _stream_body(
    state: GatewayState, opened: OpenedStream, translator: ChatStreamTranslator, first: bytes
) -> AsyncIterator[bytes]:
    stream, decoder = opened.stream, opened.decoder
    stream.keepalive = state.settings.server.keepalive_seconds
    try:
        if first:
            yield first
        while not stream.done:
            data = await stream.read()
            if data is None:
                yield KEEPALIVE
                continue
            out, error = translate_read(decoder, translator, data)
            if out:
                yield out
            if error is not None:
                log.warning("stream ended with an error: %s %s", error.status, error.message[:200])
                return
        yield frames(translator.finish()) + DONE
    except GatewayError as exc:
        log.warning("stream ended with an error: %s %s", exc.status, exc.message[:200])
        yield _error_event(exc)
    except Exception:
        request_id = secrets.token_hex(8)
        log.exception("stream failed (request id %s)", request_id)
        yield _error_event(internal_error(request_id))
    finally:
        stream.close()
        if translator.ctx.signatures:
            await state.signatures.put_many(translator.ctx.signatures)
