"""`POST /v1/chat/completions`: validate -> route -> translate -> call -> JSON or SSE.

An endpoint of the request pipeline (pipeline/seam.py), which reads the body,
authenticates, watches for the client leaving, sends the answer and records
the outcome. This holds only chat's own logic: the work is in `translate/`
(pure: the request, the response, and `ChatStreamTranscoder` for streams),
`gateway/dispatch.py` (credentials, retries, fall-back) and `upstream/`
(HTTP). The body is parsed with orjson and validated once by the pydantic
request model.
"""

from __future__ import annotations

import base64
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import orjson

from app.api.sse import pump, stream_answer
from app.api.validation import parse_body_dict, validate_body
from app.errors import GatewayError, UpstreamError
from app.gateway.dispatch import Outcome, UpstreamCall
from app.gateway.routing import Target, for_endpoint
from app.pipeline.context import RequestContext, Usage
from app.pipeline.seam import Answer, Call, Endpoint
from app.schemas.openai import ChatCompletionRequest
from app.services import Services
from app.translate.capabilities import ModelCapabilities
from app.translate.chat_request import GeminiCall, TranslationEnv, sent_param, to_gemini
from app.translate.chat_response import ResponseContext, broken_finish, to_openai
from app.translate.chat_simple import simple_chat
from app.translate.chat_stream import ChatStreamTranscoder, ChatStreamTranslator, error_event
from app.upstream.client import UpstreamStream

log = logging.getLogger("gemini_proxy.chat")

# Completion ids only need to be unique, not secret: a pseudo-random generator seeded from the OS
# costs no system call per request (os.urandom did, measurably: bench/README.md). Tool call ids
# key the thought-signature store, so they stay unguessable.
_completion_ids = random.Random()


def new_completion_id() -> str:
    return "chatcmpl-" + base64.urlsafe_b64encode(_completion_ids.randbytes(21)).decode()


def new_call_id() -> str:
    return "call_" + secrets.token_urlsafe(18)


# A request's translation for one model: (capabilities, env) -> the Gemini call (to_gemini or SimpleChat.to_gemini).
Translate = Callable[[ModelCapabilities, TranslationEnv], GeminiCall]


def usage_of(meta: Any) -> Usage | None:
    """Gemini's `usageMetadata` -> the figures the access log and metrics keep."""
    if not meta:
        return None
    thoughts = meta.get("thoughtsTokenCount", 0)
    return Usage(
        prompt=meta.get("promptTokenCount", 0) + meta.get("toolUsePromptTokenCount", 0),
        completion=meta.get("candidatesTokenCount", 0) + thoughts,
        reasoning=thoughts,
        cached=meta.get("cachedContentTokenCount", 0),
    )


@dataclass(slots=True)
class Started:
    """A stream whose first events arrived: the upstream stream, its transcoder, the first SSE bytes."""

    stream: UpstreamStream
    transcoder: ChatStreamTranscoder
    first: bytes


class ChatCompletions(Endpoint):
    """The chat endpoint."""

    name = "chat"

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, call: Call) -> Answer:
        data = parse_body_dict(call.body)
        ctx = call.ctx
        simple = simple_chat(data)
        req: ChatCompletionRequest | None = None
        try:
            if simple is not None:  # the common shape: no request model (translate/chat_simple.py)
                ctx.stream = simple.stream
                lookup = partial(self.services.signatures_env, simple.wanted_keys())
                return await self._answer(ctx, simple.model, simple.stream, simple.max_output, simple.to_gemini, lookup)
            req = validate_body(data, ChatCompletionRequest)
            ctx.stream = bool(req.stream)
            max_output = req.max_completion_tokens or req.max_tokens
            lookup = partial(self.services.translation_env, req)
            return await self._answer(ctx, req.model, bool(req.stream), max_output, partial(to_gemini, req), lookup)
        except UpstreamError as exc:
            if exc.status == 400:  # name the OpenAI parameter this request actually used
                exc.param = sent_param(exc.param, req or validate_body(data, ChatCompletionRequest))
            raise

    def _prepare(self, translate: Translate, env: TranslationEnv) -> Any:
        services = self.services

        def prepare(target: Target) -> UpstreamCall[GeminiCall]:
            target_env = env if target.upstream.kind != "vertex" else replace(env, vertex=True)
            gemini = translate(target.capabilities, target_env)
            services.count_signatures(gemini)
            if gemini.signature_bypasses:
                log.info("thought signature bypass used %d time(s) for %s", gemini.signature_bypasses, target.label)
            if gemini.dropped_schema_keywords:
                log.info("schema keywords %s dropped for %s", ",".join(gemini.dropped_schema_keywords), target.label)
            verb = "streamGenerateContent" if gemini.stream else "generateContent"
            return UpstreamCall(verb, orjson.dumps(gemini.body), gemini, stream=gemini.stream)

        return prepare

    async def _answer(
        self, ctx: RequestContext, model: str, stream: bool, max_output: int | None, translate: Translate,
        lookup: Callable[[], Awaitable[TranslationEnv]],
    ) -> Answer:
        """`lookup()`: what the translator needs looked up (stored signatures, fetched media), once the request is
        admitted and routed: a refused key or an unknown model costs no fetch."""
        services = self.services
        ctx.model = model
        # 403 model_not_allowed, then the key's limits (429), before anything reaches Google
        await services.admit(ctx, model, max_output)
        targets = for_endpoint(services.router.resolve(model), "chat", model)
        prepare = self._prepare(translate, await lookup())
        byok = ctx.principal.google_key
        if stream:
            return await self._stream(ctx, targets, prepare, byok)
        response, outcome = await services.dispatcher.complete(targets, prepare, check=check_finish, byok_key=byok, ctx=ctx)
        gemini: GeminiCall = outcome.call.meta
        rctx = ResponseContext(gemini.options, new_completion_id(), int(time.time()), new_call_id)
        ctx.usage = usage_of(response.get("usageMetadata"))
        ctx.response_model = response.get("modelVersion")
        try:
            completion = to_openai(response, rctx)
        except GatewayError as exc:
            exc.headers.update(outcome.headers())
            raise
        if rctx.signatures:
            await services.signatures.put_many(rctx.signatures)
        return Answer(body=orjson.dumps(completion), headers=answer_headers(outcome))

    async def _stream(self, ctx: RequestContext, targets: list[Target], prepare: Any, byok: str | None) -> Answer:
        services = self.services
        keepalive = services.settings.server.keepalive_seconds

        async def start(stream: UpstreamStream, call: UpstreamCall[GeminiCall]) -> Started:
            rctx = ResponseContext(call.meta.options, new_completion_id(), int(time.time()), new_call_id)
            transcoder = ChatStreamTranscoder(ChatStreamTranslator(rctx))
            while True:
                data = await stream.read()
                first = transcoder.open(data or b"")
                if first is not None:
                    return Started(stream, transcoder, first)

        opening = services.dispatcher.open_stream(
            targets, prepare, start, byok_key=byok, ctx=ctx, budget=keepalive * 0.8
        )
        return await stream_answer(
            opening, ctx, keepalive,
            lambda result: self._body(ctx, *result),
            lambda result: answer_headers(result[1]),
        )

    def _body(self, ctx: RequestContext, started: Started, outcome: Outcome) -> AsyncIterator[bytes]:
        transcoder = started.transcoder
        signatures = self.services.signatures

        async def close() -> None:
            ctx.usage = usage_of(transcoder.usage())
            if transcoder.ctx.signatures:
                await signatures.put_many(transcoder.ctx.signatures)

        keepalive = self.services.settings.server.keepalive_seconds
        return pump(ctx, started.stream, transcoder, started.first, keepalive, error_event, close)


def check_finish(response: dict[str, Any]) -> None:
    """The dispatcher's check of a whole answer: a broken finish (malformed call, ...) is retried or an error."""
    broken = broken_finish(response)
    if broken is not None:
        raise broken


def answer_headers(outcome: Outcome) -> dict[str, str]:
    """The gateway's headers of an answer (upstream served, schema keywords dropped); chat and Responses."""
    headers = outcome.headers()
    dropped: list[str] = outcome.call.meta.dropped_schema_keywords  # GeminiCall or ResponsesCall
    if dropped:
        headers["x-gemini-proxy-dropped-schema-keywords"] = ",".join(dropped)
    return headers

