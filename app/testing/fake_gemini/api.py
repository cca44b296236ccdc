"""The Google-shaped endpoints: models, generate, stream, countTokens and the embedding calls, on both backends.

Owns: URL parsing (`models/{model}:{method}` under `/v1beta`, `/v1alpha` or `/v1`;
`/{v1|v1beta1}/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}`),
recording each request, the order of checks (auth -> model -> JSON ->
`gemini_schema` validation -> per-model rules -> history/signatures ->
directive -> injected failure) and handing the planned answer to `delivery`.
Embedding calls (`:embedContent`, `:batchEmbedContents`, Vertex `:predict`)
go to `embed.py` once auth and the model are checked; Imagen's `:predict`
(both backends) to `imagen.py`.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

from app.testing.fake_gemini import auth, catalogue, embed, imagen, render
from app.testing.fake_gemini import body as rq
from app.testing.fake_gemini.delivery import Delivery, deliver, json_response
from app.testing.fake_gemini.directives import parse_directive, split_inline
from app.testing.fake_gemini.failures import pick_failure, to_google_error
from app.testing.fake_gemini.reply import plan_reply
from app.testing.fake_gemini.signatures import check_history
from app.testing.fake_gemini.state import STATE, FakeState
from app.testing.fake_gemini.strictness import check_model_rules
from app.testing.gemini_schema import validate_generate_content
from app.testing.google_errors import GoogleError

Backend = Literal["gemini", "vertex"]
ARRAY_ERRORS = web.RequestKey("fake_gemini_array_errors", bool)
ENTRY = web.RequestKey("fake_gemini_entry", dict)
RECORDED_HEADERS = (
    "content-type",
    "accept",
    "user-agent",
    "x-goog-api-client",
    "x-goog-user-project",
    "x-server-timeout",
    "x-goog-request-params",
)
METHODS = ("generateContent", "streamGenerateContent", "countTokens")


@dataclass
class Call:
    """One generate-family request, as far as the URL and credentials tell."""

    backend: Backend
    version: str
    model: str
    method: str
    credential: str | None = None  # API key (gemini) or access token (vertex)
    project: str | None = None
    location: str | None = None

    @property
    def stream(self) -> bool:
        return self.method == "streamGenerateContent"


async def _latency(state: FakeState) -> None:
    if state.latency_ms:
        await asyncio.sleep(state.latency_ms / 1000)


def _record(request: web.Request, state: FakeState, **fields: Any) -> dict[str, Any]:
    """Record the request (status and outcome are filled in later) and remember the entry on it."""
    headers = {h: request.headers[h] for h in RECORDED_HEADERS if h in request.headers}
    entry = state.record(
        {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": headers,
            "status": None,
            **fields,
        }
    )
    request[ENTRY] = entry
    return entry


def _page_size(request: web.Request) -> int:
    try:
        return int(request.query.get("pageSize", 0))
    except ValueError:
        raise GoogleError(400, "Invalid value for pageSize.") from None


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    entry = _record(request, state, backend="gemini", model=None)
    entry["api_key"] = auth.check_api_key(request, state)
    await _latency(state)
    return json_response(catalogue.list_models(_page_size(request), request.query.get("pageToken")))


async def list_publisher_models(request: web.Request) -> web.Response:
    """`GET /{v1|v1beta1}/publishers/google/models` (Vertex, bearer token)."""
    state = request.app[STATE]
    entry = _record(request, state, backend="vertex", model=None)
    entry["token"] = auth.check_bearer(request, state)
    await _latency(state)
    return json_response(catalogue.list_publisher_models(_page_size(request), request.query.get("pageToken")))


async def get_publisher_model(request: web.Request) -> web.Response:
    """`GET /{v1|v1beta1}/publishers/google/models/{model}` (Vertex, bearer token)."""
    state = request.app[STATE]
    name = request.match_info["model"]
    entry = _record(request, state, backend="vertex", model=name)
    entry["token"] = auth.check_bearer(request, state)
    await _latency(state)
    spec = catalogue.MODELS.get(name)
    if spec is None:
        raise GoogleError(404, f"Publisher model `publishers/google/models/{name}` not found.")
    return json_response(catalogue.publisher_model(spec))


async def get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["tail"]
    entry = _record(request, state, backend="gemini", model=name)
    entry["api_key"] = auth.check_api_key(request, state)
    await _latency(state)
    spec = catalogue.find_model(name, request.match_info["version"], for_generate=False)
    return json_response(catalogue.model_resource(spec))


def _split_method(tail: str, extra: tuple[str, ...] = ()) -> tuple[str, str]:
    model, sep, method = tail.rpartition(":")
    if not sep or (method not in METHODS and method not in extra):
        raise GoogleError(404, "Method not found.")
    return model, method


async def gemini_call(request: web.Request) -> web.StreamResponse:
    """`POST /{v1beta|v1alpha|v1}/models/{model}:{method}` (API key)."""
    state = request.app[STATE]
    model, method = _split_method(request.match_info["tail"], (*embed.GEMINI_METHODS, "predict"))
    call = Call("gemini", request.match_info["version"], model.removeprefix("models/"), method)
    request[ARRAY_ERRORS] = call.stream and request.query.get("alt") != "sse"
    entry = _record(request, state, backend="gemini", model=call.model, stream=call.stream)
    payload, bad_json = await _read_json(request, entry)
    call.credential = entry["api_key"] = auth.check_api_key(request, state)
    spec = catalogue.find_model(call.model, call.version, for_generate=True, method=method)
    if bad_json is not None:
        raise bad_json
    if method in embed.GEMINI_METHODS:
        return await embed.answer(request, state, call, spec, payload, entry)
    if method == "predict":
        return await imagen.answer(request, state, call, spec, payload, entry)
    return await _dispatch(request, state, call, spec, payload)


def _vertex_not_found(call: Call) -> GoogleError:
    return GoogleError(
        404,
        f"Publisher Model `projects/{call.project}/locations/{call.location}/publishers/google/"
        f"models/{call.model}` was not found or your project does not have access to it. Please "
        "ensure you are using a valid model version. For more information, see: "
        "https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions",
    )


async def vertex_call(request: web.Request) -> web.StreamResponse:
    """`POST /{v1|v1beta1}/projects/{p}/locations/{l}/publishers/google/models/{model}:{method}` (bearer)."""
    state = request.app[STATE]
    info = request.match_info
    model, method = _split_method(info["tail"], embed.VERTEX_METHODS)
    call = Call("vertex", info["version"], model, method, project=info["project"], location=info["location"])
    request[ARRAY_ERRORS] = call.stream and request.query.get("alt") != "sse"
    entry = _record(
        request, state, backend="vertex", model=model, stream=call.stream, project=call.project, location=call.location
    )
    payload, bad_json = await _read_json(request, entry)
    call.credential = entry["token"] = auth.check_bearer(request, state)
    spec = catalogue.MODELS.get(model)
    images = spec is not None and spec.imagen
    embeds = method in embed.VERTEX_METHODS and not images
    serves = (method == "predict") if images else (spec is not None and (spec.embeds if embeds else spec.generates))
    if spec is None or "vertex" not in spec.backends or not serves:
        raise _vertex_not_found(call)
    if bad_json is not None:
        raise bad_json
    if images:
        return await imagen.answer(request, state, call, spec, payload, entry)
    if embeds:
        return await embed.answer(request, state, call, spec, payload, entry)
    return await _dispatch(request, state, call, spec, payload)


async def _read_json(request: web.Request, entry: dict[str, Any]) -> tuple[Any, GoogleError | None]:
    """(the parsed body, the 400 to raise once auth passed if it is not JSON); records it."""
    raw = await request.read()
    try:
        entry["body"] = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        entry["body"] = raw.decode("utf-8", "replace")
        return None, GoogleError(400, f"Invalid JSON payload received. {exc}")
    return entry["body"], None


async def _dispatch(
    request: web.Request, state: FakeState, call: Call, spec: catalogue.ModelSpec, payload: Any
) -> web.StreamResponse:
    entry = request[ENTRY]
    if not isinstance(payload, dict):
        raise GoogleError(400, "Invalid JSON payload received. Expected an object.")
    if call.method == "countTokens":
        await _latency(state)
        return json_response(_count_tokens(payload, call.backend))
    state.counters["generate_requests"] += 1
    state.counters["stream_requests"] += call.stream
    validate_generate_content(payload, call.backend)
    check_model_rules(spec, payload, call.backend)
    signatures = check_history(payload, spec, call.backend, state.signer)
    state.counters["signature_bypasses"] += signatures.bypasses
    state.counters["signatures_reencoded"] += signatures.reencoded

    inline, user_text = split_inline(rq.latest_user_text(rq.contents(payload)))
    script = state.scripts.popleft() if state.scripts else {}
    state.counters["scripts_applied"] += bool(script)
    merged = {**inline, **script}
    entry["directive"] = merged or None
    directive = parse_directive(merged)

    failure = pick_failure(
        directive, credential=call.credential, project=call.project, fail_counts=state.fail_counts
    )
    error = to_google_error(failure, call.backend, spec.id) if failure is not None else None
    plan = plan_reply(payload, spec, directive, user_text, backend=call.backend, signer=state.signer)
    response_id = state.next_response_id()
    create_time = None
    if call.backend == "vertex":
        create_time = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    sse = request.query.get("alt") == "sse"
    if call.stream:
        answer: Any = render.stream_responses(plan, response_id, create_time)
    else:
        answer = render.whole_response(plan, response_id, create_time)
    delivery = Delivery(directive, call.stream, sse, answer, failure, error, entry)
    return await deliver(request, state, delivery)


def _count_tokens(payload: dict[str, Any], backend: Backend) -> dict[str, Any]:
    inner = rq.get(payload, "generateContentRequest")
    total = rq.prompt_tokens(inner if isinstance(inner, dict) else payload)
    details = [{"modality": "TEXT", "tokenCount": total}]
    if backend == "vertex":
        return {"totalTokens": total, "totalBillableCharacters": total * 4, "promptTokensDetails": details}
    return {"totalTokens": total, "promptTokensDetails": details}


def add_routes(app: web.Application) -> None:
    gemini = r"/{version:v1beta|v1alpha|v1}/models"
    vertex = r"/{version:v1beta1|v1}/projects/{project}/locations/{location}/publishers/google/models/{tail}"
    app.router.add_get(gemini, list_models)
    app.router.add_get(gemini + "/{tail}", get_model)
    app.router.add_post(gemini + "/{tail}", gemini_call)
    app.router.add_post(vertex, vertex_call)
    app.router.add_get(r"/{version:v1beta1|v1}/publishers/google/models", list_publisher_models)
    app.router.add_get(r"/{version:v1beta1|v1}/publishers/google/models/{model}", get_publisher_model)
    app.router.add_post("/token", auth.token_endpoint)
