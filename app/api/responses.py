"""`/v1/responses`: OpenAI's Responses API on the same Gemini calls as chat.

Two endpoints of the request pipeline (pipeline/seam.py):

* `Responses` (`POST /v1/responses`): validate -> the stored conversation of
  `previous_response_id` -> route -> translate (translate/responses_request.py)
  -> call (gateway/dispatch.py, the same retries and fall-back as chat) -> the
  Response object (translate/responses_response.py) or the typed `response.*`
  SSE events (translate/responses_stream.py) -> keep it in the response store,
  and its thought signatures in the signature store, unless `store: false`
  (which keeps nothing: such clients send back the items as returned, or ask
  for `reasoning.encrypted_content`).
* `StoredResponses` (`GET` / `DELETE /v1/responses/{id}`,
  `GET /v1/responses/{id}/input_items`): the response store
  (gateway/responses_store.py), each key seeing only its own responses.
* `InputTokens` (`POST /v1/responses/input_tokens`): the same request,
  counted by Gemini's `countTokens`.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

import orjson

from app.api.chat import answer_headers, check_finish, new_call_id, usage_of
from app.api.sse import pump, stream_answer
from app.api.validation import parse_body
from app.errors import GatewayError, InvalidRequest, NotFound, UpstreamError
from app.gateway.dispatch import Outcome, UpstreamCall
from app.gateway.responses_store import ResponseGone, StoredResponse, conversation, owner_of
from app.gateway.routing import Target, for_endpoint
from app.pipeline.context import RequestContext
from app.pipeline.seam import Answer, Call, Endpoint
from app.schemas.responses import InputItem, ResponsesRequest
from app.services import Services
from app.translate.chat_request import TranslationEnv
from app.translate.responses_items import input_items, stored_input
from app.translate.responses_request import (
    HISTORY,
    ResponsesCall,
    ResponsesOptions,
    count_tokens_body,
    sent_param,
    to_gemini,
)
from app.translate.responses_response import ResponsesContext, whole_answer
from app.translate.responses_stream import ResponsesStreamTranslator
from app.translate.transcoder import StreamTranscoder
from app.upstream.client import UpstreamStream

log = logging.getLogger("gemini_proxy.responses")

RESPONSES_PATHS = ("/v1/responses", "/responses")
INPUT_TOKENS_PATHS = ("/v1/responses/input_tokens", "/responses/input_tokens")
STORED_PREFIXES = ("/v1/responses/", "/responses/")
KEPT_STATUSES = frozenset({"completed", "incomplete"})

# Item ids only need to be unique; response ids name stored conversations, so they stay unguessable.
_item_ids = random.Random()


def new_response_id() -> str:
    """`resp_` and 48 hex digits, as OpenAI's: the time in milliseconds (12 digits), then 144 random bits.

    An id made in a later millisecond sorts later, so the store's index on the ids grows at its end (a random id
    wrote a random page of it: one more page to write and to checkpoint per commit once the table outgrew the cache).
    """
    return f"resp_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(18)}"


def new_item_id(prefix: str) -> str:
    return f"{prefix}_" + _item_ids.randbytes(16).hex()


def _now() -> int:
    return int(time.time())


def new_context(options: ResponsesOptions) -> ResponsesContext:
    return ResponsesContext(options, new_response_id(), _now(), new_item_id, new_call_id, _now)


@dataclass(slots=True)
class Started:
    """A stream whose first events arrived: the upstream stream, its transcoder, the first SSE bytes."""

    stream: UpstreamStream
    transcoder: StreamTranscoder[ResponsesStreamTranslator]
    first: bytes


@dataclass(slots=True)
class Keep:
    """What to store once the answer is known (None: `store: false`)."""

    owner: str
    input_items: list[dict[str, Any]]
    previous_response_id: str | None


class Responses(Endpoint):
    """`POST /v1/responses`."""

    name = "responses"

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, call: Call) -> Answer:
        req = parse_body(call.body, ResponsesRequest)
        ctx = call.ctx
        ctx.stream = bool(req.stream)
        ctx.model = req.model
        try:
            return await self._answer(ctx, req)
        except UpstreamError as exc:
            if exc.status == 400:  # name the Responses parameter this request actually used
                exc.param = sent_param(exc.param, req)
            raise

    async def _history(self, req: ResponsesRequest, owner: str) -> list[InputItem]:
        if req.previous_response_id is None:
            return []
        try:
            items = await conversation(self.services.responses, req.previous_response_id, owner)
        except ResponseGone as gone:
            message = f"Previous response with id '{req.previous_response_id}' not found."
            if gone.response_id != req.previous_response_id:
                message = (
                    f"Previous response with id '{req.previous_response_id}' continues response '{gone.response_id}', "
                    "which was deleted or has expired, so its conversation cannot be rebuilt. Send the earlier turns as "
                    "input items instead."
                )
            raise InvalidRequest(message, param="previous_response_id", code="previous_response_not_found") from None
        return [InputItem.model_validate(item) for item in items]

    async def _looked_up(
        self, ctx: RequestContext, req: ResponsesRequest, given: list[InputItem]
    ) -> tuple[list[InputItem], TranslationEnv]:
        """The stored conversation of `previous_response_id`, and what the translator needs looked up for all items
        (`given`: the request's own, `input_items(req)`; a string input, one user text, needs none)."""
        history = await self._history(req, owner_of(ctx.principal))
        named = [(item, HISTORY) for item in history]
        named += [(item, "input" if isinstance(req.input, str) else f"input[{i}]") for i, item in enumerate(given)]
        return history, await self.services.responses_env(named)

    async def _answer(self, ctx: RequestContext, req: ResponsesRequest) -> Answer:
        services = self.services
        await services.admit(ctx, req.model, req.max_output_tokens)  # 403 model_not_allowed, limits: before Google
        targets = for_endpoint(services.router.resolve(req.model), "chat", req.model, "/v1/responses")
        given = [] if isinstance(req.input, str) else input_items(req)  # (a string: nothing to look up, stored as data)
        history, env = await self._looked_up(ctx, req, given)
        owner = owner_of(ctx.principal)
        keep = Keep(owner, stored_input(req, given, new_item_id), req.previous_response_id) if req.store is not False else None

        def prepare(target: Target) -> UpstreamCall[ResponsesCall]:
            target_env = env if target.upstream.kind != "vertex" else replace(env, vertex=True)
            gemini = to_gemini(req, target.capabilities, target_env, history)
            services.count_signatures(gemini)
            if gemini.signature_bypasses:
                log.info("thought signature bypass used %d time(s) for %s", gemini.signature_bypasses, target.label)
            verb = "streamGenerateContent" if gemini.stream else "generateContent"
            return UpstreamCall(verb, orjson.dumps(gemini.body), gemini, stream=gemini.stream)

        byok = ctx.principal.google_key
        if req.stream:
            return await self._stream(ctx, targets, prepare, byok, keep)
        response, outcome = await services.dispatcher.complete(targets, prepare, check=check_finish, byok_key=byok, ctx=ctx)
        gemini: ResponsesCall = outcome.call.meta
        rctx = new_context(gemini.options)
        ctx.usage = usage_of(response.get("usageMetadata"))
        ctx.response_model = response.get("modelVersion")
        try:
            answer, answer_json = whole_answer(response, rctx)
        except GatewayError as exc:
            exc.headers.update(outcome.headers())
            raise
        if rctx.signatures and keep is not None:  # (`store: false` keeps nothing, signatures included)
            await services.signatures.put_many(rctx.signatures)
        await self._keep(keep, answer, answer_json)
        return Answer(body=answer_json, headers=answer_headers(outcome))

    async def _keep(self, keep: Keep | None, answer: dict[str, Any] | None, answer_json: bytes) -> None:
        if keep is None or answer is None or answer["status"] not in KEPT_STATUSES:
            return
        record = StoredResponse(answer["id"], keep.owner, answer, keep.input_items, keep.previous_response_id,
                                response_json=answer_json)
        await self.services.responses.put(record)

    async def _stream(
        self, ctx: RequestContext, targets: list[Target], prepare: Any, byok: str | None, keep: Keep | None
    ) -> Answer:
        services = self.services
        keepalive = services.settings.server.keepalive_seconds

        async def start(stream: UpstreamStream, call: UpstreamCall[ResponsesCall]) -> Started:
            transcoder = StreamTranscoder(ResponsesStreamTranslator(new_context(call.meta.options)))
            while True:
                data = await stream.read()
                first = transcoder.open(data or b"")
                if first is not None:
                    return Started(stream, transcoder, first)

        opening = services.dispatcher.open_stream(targets, prepare, start, byok_key=byok, ctx=ctx, budget=keepalive * 0.8)
        return await stream_answer(
            opening, ctx, keepalive,
            lambda result: self._body(ctx, *result, keep),
            lambda result: answer_headers(result[1]),
        )  # fmt: skip

    def _body(self, ctx: RequestContext, started: Started, outcome: Outcome, keep: Keep | None) -> AsyncIterator[bytes]:
        transcoder = started.transcoder

        kept = False

        async def finishing() -> None:  # before response.completed: the client's next request finds it stored
            nonlocal kept
            if transcoder.ctx.signatures and keep is not None:
                await self.services.signatures.put_many(transcoder.ctx.signatures)
            kept = True
            builder = transcoder.translator.builder
            await self._keep(keep, builder.final, builder.final_json)

        async def close() -> None:
            ctx.usage = usage_of(transcoder.usage())
            if not kept and transcoder.ctx.signatures and keep is not None:  # a stream cut short: its signatures
                await self.services.signatures.put_many(transcoder.ctx.signatures)

        keepalive = self.services.settings.server.keepalive_seconds
        error_sse = transcoder.translator.error_sse
        return pump(ctx, started.stream, transcoder, started.first, keepalive, error_sse, close, finishing)


class InputTokens(Responses):
    """`POST /v1/responses/input_tokens`: how many input tokens the request would use (Gemini's `countTokens`)."""

    name = "input_tokens"

    async def _answer(self, ctx: RequestContext, req: ResponsesRequest) -> Answer:
        services = self.services
        ctx.stream = False
        await services.admit(ctx, req.model, 0)  # counting tokens produces none
        targets = for_endpoint(services.router.resolve(req.model), "chat", req.model, "/v1/responses/input_tokens")
        history, env = await self._looked_up(ctx, req, input_items(req))
        request = req.model_copy(update={"stream": False, "stream_options": None})

        def prepare(target: Target) -> UpstreamCall[ResponsesCall]:
            vertex = target.upstream.kind == "vertex"
            gemini = to_gemini(request, target.capabilities, replace(env, vertex=vertex) if vertex else env, history)
            body = count_tokens_body(gemini.body, target.model, vertex)
            return UpstreamCall("countTokens", orjson.dumps(body), gemini)

        response, outcome = await services.dispatcher.complete(targets, prepare, byok_key=ctx.principal.google_key, ctx=ctx)
        count = {"object": "response.input_tokens", "input_tokens": int(response.get("totalTokens", 0))}
        return Answer(body=orjson.dumps(count), headers=outcome.headers())


# -- the store: GET / DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items ------------------------------


class StoredResponses(Endpoint):
    """`/v1/responses/{id}` and `/v1/responses/{id}/input_items`."""

    name = "response_store"  # (metrics: not a generation, so not "responses")
    methods = frozenset({"GET", "DELETE", "POST"})

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, call: Call) -> Answer:
        ctx = call.ctx
        path = ctx.path
        rest = next((path[len(p) :] for p in STORED_PREFIXES if path.startswith(p)), "")
        response_id, _, sub = rest.partition("/")
        query = dict(parse_qsl(call.query.decode("latin-1")))
        owner = owner_of(ctx.principal)
        if not response_id or sub not in ("", "input_items", "cancel") or (ctx.method == "POST") != (sub == "cancel"):
            raise NotFound(f"Unknown request URL: {ctx.method} {path}.", code="unknown_url")
        if ctx.method == "DELETE" and sub == "":
            if not await self.services.responses.delete(response_id, owner):
                raise _unknown(response_id)
            return _json({"id": response_id, "object": "response", "deleted": True})
        record = await self.services.responses.get(response_id, owner)
        if record is None:
            raise _unknown(response_id)
        if sub == "cancel":
            raise InvalidRequest("Only responses created with background=true can be cancelled.", param="response_id")
        if sub == "input_items":
            return _json(_page(record.input_items, query))
        if query.get("stream", "false").lower() == "true":
            raise InvalidRequest("Stored responses cannot be streamed again; omit 'stream'.", param="stream")
        return _json(record.response)


def _unknown(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id", code="response_not_found")


def _json(body: dict[str, Any]) -> Answer:
    return Answer(body=orjson.dumps(body))


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> dict[str, Any]:
    """One page of a list of items, as OpenAI's cursor pages: `order` (desc), `after` (an item id), `limit` (20, 1-100)."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(f"Invalid value for 'order': '{order}'. Supported values are: 'asc' and 'desc'.", param="order")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise InvalidRequest("Invalid value for 'limit': expected an integer from 1 to 100.", param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = query.get("after")
    if after:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            raise InvalidRequest(f"Invalid value for 'after': no item with id '{after}'.", param="after")
        ordered = ordered[ids.index(after) + 1 :]
    data = ordered[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > limit,
    }
