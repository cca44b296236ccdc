"""`POST /v1/chat/completions`: validate -> route -> translate -> call -> JSON or SSE.

A thin route: the work is in `translate/` (pure), `gateway/dispatch.py`
(retries, keys, fall-back) and `upstream/` (HTTP). Registered as a plain
Starlette route inside the FastAPI app because FastAPI's per-request
dependency machinery measurably costs more than the rest of this path
(bench/README.md); the body is parsed with orjson and validated once by the
pydantic request model.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from app.errors import GatewayError, InvalidRequest, PayloadTooLarge, internal_error, loc_to_path
from app.gateway.dispatch import OpenedStream, Outcome
from app.gateway.routing import Target
from app.state import GatewayState
from app.schemas.openai import ChatCompletionRequest
from app.translate import signatures
from app.translate.chat_request import GeminiCall, TranslationEnv, to_gemini
from app.translate.chat_response import ResponseContext, to_openai
from app.translate.chat_stream import ChatStreamTranslator
from app.api import json_response
from app.api.sse import DONE, KEEPALIVE, SSEResponse, frame, frames
from app.upstream.errors import error_from_google

log = logging.getLogger("gemini_proxy.chat")

_JSON_HINT = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The API expects a JSON payload, but what was sent was not valid JSON.)"
)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body too large: {declared} bytes; the limit is {limit} bytes.")
    chunks = []
    size = 0
    async for chunk in request.stream():
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
    if first["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    same = [e for e in errors if loc_to_path(e["loc"]) == param]
    if any(e["type"].endswith("_type") or e["type"] in ("model_attributes_type", "list_type", "dict_type") for e in same):
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
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_urlsafe(21)


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18)


async def chat_completions(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    client_key = state.auth.check(request)
    req = parse_chat_request(await read_body(request, state.settings.server.max_request_bytes))
    targets = state.router.resolve(req.model)
    env = await state.translation_env(req)
    vertex_env = replace(env, vertex=True)

    def prepare(target: Target) -> GeminiCall:
        vertex = target.upstream.kind == "vertex"
        call = to_gemini(req, target.capabilities, vertex_env if vertex else env)
        if call.signature_bypasses:
            state.metrics.signature_bypasses += call.signature_bypasses
            log.info("thought signature bypass used %d time(s) for %s", call.signature_bypasses, target.label)
        return call

    if req.stream:
        opened, outcome = await state.dispatcher.open_stream(targets, prepare, client_key)
        return _stream_response(state, opened, outcome)
    response, outcome = await state.dispatcher.complete(targets, prepare, client_key)
    ctx = ResponseContext(outcome.call.options, new_completion_id(), int(time.time()), new_call_id)
    try:
        completion = to_openai(response, ctx)
    except GatewayError as exc:
        exc.headers.update(outcome.headers())
        raise
    if ctx.signatures:
        await state.signatures.put_many(ctx.signatures)
    return json_response(completion, headers=_headers(outcome))


def _headers(outcome: Outcome) -> dict[str, str]:
    headers = outcome.headers()
    if outcome.call.dropped_schema_keywords:
        headers["x-gemini-proxy-dropped-schema-keywords"] = ",".join(outcome.call.dropped_schema_keywords)
    return headers


def _error_event(exc: GatewayError) -> bytes:
    return frame(exc.body())


def _stream_response(state: GatewayState, opened: OpenedStream, outcome: Outcome) -> Response:
    ctx = ResponseContext(outcome.call.options, new_completion_id(), int(time.time()), new_call_id)
    translator = ChatStreamTranslator(ctx)
    first: list[dict[str, Any]] = []
    try:
        for event in opened.first_events:
            first.extend(translator.feed(event))
    except GatewayError as exc:  # nothing was sent yet: an ordinary HTTP error
        opened.stream.close()
        exc.headers.update(outcome.headers())
        raise
    return SSEResponse(_stream_body(state, opened, translator, first), _headers(outcome))


async def _stream_body(
    state: GatewayState, opened: OpenedStream, translator: ChatStreamTranslator, first: list[dict[str, Any]]
) -> AsyncIterator[bytes]:
    stream, decoder = opened.stream, opened.decoder
    keepalive = state.settings.server.keepalive_seconds
    try:
        if first:
            yield frames(first)
        elif not stream.done:
            yield KEEPALIVE
        while not stream.done:
            data = await stream.read(wait=keepalive)
            if data is None:
                yield KEEPALIVE
                continue
            events = decoder.feed(data) if data else decoder.flush()
            if not events:
                continue
            out = []
            for event in events:
                if "error" in event:
                    out.append(_error_event(error_from_google(200, event)))
                    yield b"".join(out)
                    return
                out.extend(frame(c) for c in translator.feed(event))
            if out:
                yield b"".join(out)
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
