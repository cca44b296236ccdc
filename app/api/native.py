"""The native Gemini API behind the gateway's keys: `/{v1beta|v1|v1alpha}/models/...` passed through.

An endpoint of the request pipeline (pipeline/seam.py), reached by path
prefix; docs/design.md#native-gemini-api has the decisions. Routes:

    POST /{version}/models/{model}:{verb}   generateContent, streamGenerateContent (with ?alt=sse or
                                            without: a streamed JSON array), countTokens, embedContent,
                                            batchEmbedContents
    GET  /{version}/models                  the first upstream's model list (router order, falling back),
                                            only the models the caller's key may use
    GET  /{version}/models/{model}          the model resource of the routed model

A forwarder with auth: the client authenticates with its gateway key
(`x-goog-api-key`, `?key=` or `Authorization: Bearer`), a model the key may not
use is a 403 (`Principal.check_model`), `{model}` goes through
the router (aliases, routes, fall-back targets), and the generic dispatcher
calls Google with the gateway's own credentials (keys, retries, fall-back).
The client's key never goes upstream: credentials are dropped from the query
(`alt=sse`, `pageSize`, ... stay) and no client header is forwarded. The body
goes to Google and Google's answer comes back byte for byte, streams as their
bytes arrive, never parsed; on Vertex AI the path is rewritten to Vertex's
form (translate/native.py has the few exceptions). Usage for the access log
and metrics is read from the answer's tail (`sniff_usage`).

Errors are Google's: an error answer from Google is passed on with its status
and body; the gateway's own errors (no key, unknown model, every key resting,
Google unreachable) are rendered in Google's shape `{"error": {"code",
"message", "status"}}`.

`/v1/models` and `/v1/models/{id}` are also OpenAI's model routes
(api/models.py): a `GET` there is this endpoint's only when the client is
Google's (`x-goog-api-key` or `x-goog-api-client` header, or `key`,
`pageSize` or `pageToken` in the query); every `POST` under `/v1/models/` is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from app.api.chat import usage_of
from app.errors import GatewayError, InvalidRequest, NotFound, UpstreamError, UpstreamUnavailable
from app.gateway.dispatch import Outcome, UpstreamCall
from app.gateway.routing import MODEL_ID, Target
from app.pipeline.auth import MISSING_KEY_MESSAGE
from app.pipeline.context import Principal, RequestContext
from app.pipeline.seam import Answer, Call, Endpoint
from app.services import Services
from app.translate.capabilities import ModelCapabilities
from app.translate.native import (
    forwarded_query,
    rename_body_models,
    sniff_usage,
    vertex_model_to_gemini,
    vertex_models_to_gemini,
)
from app.translate.tables import HTTP_TO_GOOGLE_STATUS
from app.upstream.client import UpstreamStream

log = logging.getLogger("gemini_proxy.native")

PREFIXES = ("/v1beta/", "/v1alpha/", "/v1/models")
VERSIONS = frozenset({"v1beta", "v1", "v1alpha"})
VERBS = frozenset({"generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents"})
STREAM_VERB = "streamGenerateContent"
# The `endpoint` label of metrics, per verb ("" is the model routes).
ENDPOINT_NAMES = {verb: f"native.{verb}" for verb in VERBS} | {"": "native.models"}

GOOGLE_CLIENT_HEADERS = frozenset({b"x-goog-api-key", b"x-goog-api-client"})
_GOOGLE_QUERY = re.compile(rb"(?:^|&)(?:key|pageSize|pageToken)=")
_GENERATING = frozenset({"generateContent", STREAM_VERB})  # the verbs whose answers cost output tokens
_MAX_OUTPUT = re.compile(rb'"maxOutputTokens"\s*:\s*(\d{1,12})')  # a limited key's reservation (limits)
_NO_CAPABILITIES = ModelCapabilities()

NATIVE_MISSING_KEY = (
    "You didn't provide an API key. Send your gateway key in the x-goog-api-key header (as google-genai does), "
    "as the key query parameter, or as Authorization: Bearer YOUR_KEY."
)


def google_error(exc: GatewayError, request_id: str) -> dict[str, Any]:
    """A gateway error in Google's shape (`google.rpc.Status`), the message ending with the request id."""
    message = NATIVE_MISSING_KEY if exc.message == MISSING_KEY_MESSAGE else exc.message
    return {
        "error": {
            "code": exc.status,
            "message": f"{message} (request id {request_id})",
            "status": HTTP_TO_GOOGLE_STATUS.get(exc.status, "UNKNOWN"),
        }
    }


def only_allowed(listing: bytes, principal: Principal) -> bytes:
    """A model listing keeping only the models the caller's key may use (`models/x` names)."""
    try:
        page = orjson.loads(listing)
    except orjson.JSONDecodeError:
        return listing
    if not isinstance(page, dict) or not isinstance(page.get("models"), list):
        return listing
    page["models"] = [m for m in page["models"] if isinstance(m, dict) and principal.allows(str(m.get("name", "")))]
    return orjson.dumps(page)


def parse_path(method: str, path: str) -> tuple[str, str, str]:
    """(API version, model, verb) of a native path; the model is "" for the list, the verb "" for a GET."""
    version, _, rest = path[1:].partition("/")
    if version not in VERSIONS or not (rest == "models" or rest.startswith("models/")):
        raise NotFound(
            f"The gateway does not serve {path}: its native Gemini routes are /{{v1beta|v1|v1alpha}}/models, "
            "/models/{model} and /models/{model}:{generateContent|streamGenerateContent|countTokens|embedContent|"
            "batchEmbedContents}.",
            code="unknown_url",
        )
    name = rest[len("models/") :]
    model, colon, verb = name.rpartition(":")
    if not colon:
        model, verb = name, ""
    if verb:
        if verb not in VERBS:
            raise NotFound(f"Method not found: models/{model}:{verb} is not served by the gateway.", code="unknown_url")
        if method != "POST":
            raise _not_allowed(method, path, "POST")
    elif method != "GET":
        raise _not_allowed(method, path, "GET")
    if (verb or name) and not model:
        raise InvalidRequest("The model name is empty.", param="model")
    return version, model, verb


def _not_allowed(method: str, path: str, allowed: str) -> GatewayError:
    return GatewayError(
        f"Method {method} is not allowed for {path}; use {allowed}.", status=405, type="invalid_request_error",
        code="method_not_allowed", headers={"allow": allowed},
    )


def _check_model_id(model: str) -> None:
    """Refuse a Gemini model id that could lead outside `models/` in the upstream URL."""
    if MODEL_ID.fullmatch(model) is None:
        raise InvalidRequest(f"Invalid model name '{model}'.", param="model", code="invalid_value")


def _note_usage(ctx: RequestContext, data: bytes) -> None:
    meta, version = sniff_usage(data)
    ctx.usage = usage_of(meta)
    ctx.response_model = version


def _passed_on(ctx: RequestContext, exc: UpstreamError, answer: tuple[int, str, bytes]) -> Answer:
    """Google's own error answer, as it came (with the dispatcher's headers: attempts, Retry-After)."""
    status, content_type, body = answer
    ctx.failed(exc)
    return Answer(status=status, body=body, headers=exc.headers, content_type=content_type.encode("latin-1"))


class NativeGemini(Endpoint):
    """The native Gemini routes (see the module docstring)."""

    name = "native"
    methods = frozenset({"GET", "POST"})
    query_key = True

    def __init__(self, services: Services) -> None:
        self.services = services

    def claims(self, scope: Any) -> bool:
        if not scope["path"].startswith("/v1/"):
            return True  # /v1beta/ and /v1alpha/ are Google's API only
        method = scope["method"]
        if method != "GET":
            return method == "POST"
        for name, _ in scope["headers"]:
            if name in GOOGLE_CLIENT_HEADERS:
                return True
        return _GOOGLE_QUERY.search(scope.get("query_string", b"")) is not None

    def error_body(self, exc: GatewayError, request_id: str) -> bytes:
        return orjson.dumps(google_error(exc, request_id))

    async def __call__(self, call: Call) -> Answer:
        ctx = call.ctx
        version, model, verb = parse_path(ctx.method, ctx.path)
        ctx.endpoint = ENDPOINT_NAMES[verb]
        try:
            if verb == STREAM_VERB:
                return await self._stream(call, version, model)
            if verb:
                return await self._call(call, version, model, verb)
            return await self._get(call, version, model)
        except UpstreamError as exc:
            if exc.answer is None:
                raise
            return _passed_on(ctx, exc, exc.answer)

    async def _targets(self, ctx: RequestContext, model: str, body: bytes = b"", verb: str = "") -> list[Target]:
        ctx.model = model
        max_output = None if verb in _GENERATING else 0
        if ctx.principal.limited and body and max_output is None:
            found = _MAX_OUTPUT.search(body)  # the body is Google's, passed on unparsed
            max_output = int(found.group(1)) if found else None
        await self.services.admit(ctx, model, max_output)  # 403 (in Google's shape), limits (429): before Google
        return self.services.router.resolve(model)

    def _prepare(self, body: bytes, model: str, verb: str) -> Callable[[Target], UpstreamCall[None]]:
        def prepare(target: Target) -> UpstreamCall[None]:
            if model:
                _check_model_id(target.model)
            sent = body
            if target.model != model:
                sent = rename_body_models(body, verb, model, target.model)
            return UpstreamCall(verb, sent, None, stream=verb == STREAM_VERB)

        return prepare

    async def _dispatch(
        self, ctx: RequestContext, targets: list[Target], prepare: Callable[[Target], UpstreamCall[Any]],
        once: Callable[[Target, UpstreamCall[Any], dict[str, str]], Awaitable[Any]],
    ) -> tuple[Any, Outcome]:
        return await self.services.dispatcher.run(targets, prepare, once, byok_key=ctx.principal.google_key, ctx=ctx)

    async def _call(self, call: Call, version: str, model: str, verb: str) -> Answer:
        ctx = call.ctx
        targets = await self._targets(ctx, model, call.body, verb)
        query = forwarded_query(call.query)
        client = self.services.client

        async def once(target: Target, upstream: UpstreamCall[None], headers: dict[str, str]) -> tuple[bytes, str]:
            url = target.upstream.endpoint.native_url(version, target.model, verb) + query
            return await client.request("POST", url, headers, upstream.body)  # JSON: the session's default type

        (data, content_type), outcome = await self._dispatch(ctx, targets, self._prepare(call.body, model, verb), once)
        _note_usage(ctx, data)
        return Answer(body=data, headers=outcome.headers(), content_type=content_type.encode("latin-1"))

    async def _stream(self, call: Call, version: str, model: str) -> Answer:
        ctx = call.ctx
        ctx.stream = True
        targets = await self._targets(ctx, model, call.body, STREAM_VERB)
        query = forwarded_query(call.query)
        client = self.services.client

        async def once(target: Target, upstream: UpstreamCall[None], headers: dict[str, str]) -> UpstreamStream:
            url = target.upstream.endpoint.native_url(version, target.model, STREAM_VERB) + query
            return await client.open_stream(url, upstream.body, headers)

        stream, outcome = await self._dispatch(ctx, targets, self._prepare(call.body, model, STREAM_VERB), once)
        content_type = stream.content_type
        sse = content_type.startswith("text/event-stream")
        return Answer(
            stream=self._pump(ctx, stream, sse), headers=outcome.headers(), content_type=content_type.encode("latin-1")
        )

    async def _pump(self, ctx: RequestContext, stream: UpstreamStream, sse: bool) -> AsyncIterator[bytes]:
        """Google's stream, each read as it comes; the usage from the last reads."""
        previous = last = b""
        try:
            while not stream.done:
                data = await stream.read()
                if data:
                    previous, last = last, data
                    yield data
        except GatewayError as exc:  # stalled or broken after the answer started
            ctx.failed(exc)
            log.warning("native stream ended with an error: %s %s", exc.status, exc.message[:200])
            if sse:  # google-genai raises on an event whose first key is "error"
                yield b"data: " + self.error_body(exc, ctx.request_id) + b"\r\n\r\n"
            # a streamed JSON array is left unclosed: its client sees it is incomplete
        finally:
            stream.close()
            meta, version = sniff_usage(last)
            if meta is None and previous:
                meta, version = sniff_usage(previous + last)
            ctx.usage = usage_of(meta)
            ctx.response_model = version

    async def _get(self, call: Call, version: str, model: str) -> Answer:
        ctx = call.ctx
        if model:  # a metadata read: the model allow-list (403), but no limits (no rpm slot, no tokens reserved)
            ctx.model = model
            ctx.principal.check_model(model)
            targets = self.services.router.resolve(model)
        else:
            targets = [Target(upstream, "", _NO_CAPABILITIES) for upstream in self.services.router.order]
        query = forwarded_query(call.query)
        client = self.services.client

        async def once(target: Target, _: UpstreamCall[None], headers: dict[str, str]) -> tuple[bytes, str]:
            endpoint = target.upstream.endpoint
            url = endpoint.native_model_url(version, target.model) + query
            data, content_type = await client.request("GET", url, headers)
            if endpoint.kind != "vertex":
                return data, content_type
            try:
                page = orjson.loads(data)
            except orjson.JSONDecodeError:
                page = None
            if not isinstance(page, dict):
                raise UpstreamUnavailable("The upstream sent an answer that is not a JSON object.")
            shown = vertex_model_to_gemini(page) if model else vertex_models_to_gemini(page)
            return orjson.dumps(shown), "application/json; charset=UTF-8"

        (data, content_type), outcome = await self._dispatch(ctx, targets, self._prepare(b"", model, ""), once)
        if not model and ctx.principal.allowed is not None:
            data = only_allowed(data, ctx.principal)
        return Answer(body=data, headers=outcome.headers(), content_type=content_type.encode("latin-1"))
