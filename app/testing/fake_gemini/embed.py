"""Embedding calls: `:embedContent` and `:batchEmbedContents` (both backends), `:predict` (Vertex AI).

Owns: the request shape each backend takes, checked as strictly as the
generate bodies (`gemini_schema.parse_request` for unknown fields, types and
enum values, then the embedding rules below), deterministic vectors
(`embedding_values`) and the answers with their token counts.

* Gemini Developer API: options at the top of each request (`taskType`,
  `title`, `outputDimensionality`); every `batchEmbedContents` entry names its
  `model`, which must be the model of the URL; at most 100 entries
  (`BATCH_LIMIT`, Google's "at most 100 requests can be in one batch"); a text
  over the model's input limit is a 400. Answers carry `usageMetadata`
  (`promptTokenCount`, `promptTokenDetails`), as the API sends today; the
  directive `{"no_usage": true}` leaves it out (as it did in 2025).
* Vertex AI: `:embedContent` and `:batchEmbedContents` with the options in
  `embedContentConfig`, for the Gemini embedding models; `:predict` with
  `instances` (`content`, snake_case `task_type`, `title`) and `parameters`
  (`outputDimensionality`, `autoTruncate`) for the older text-embedding models
  (at most 250 instances and 20,000 input tokens a call, `PREDICT_TOKENS`; a Gemini
  embedding model takes one instance). A text over the model's limit is truncated
  unless `autoTruncate` is false, and then a 400.
* Everywhere: an empty text, a dimensionality outside 1..the model's size, a
  model that does not embed (404) are refused.

A `#fake {...}` line in any text (stripped before embedding) or a queued
script applies to the whole call: `error` / `fail_*`, `first_byte_delay_ms`,
`reset_before_response`, `no_usage`.
"""

from __future__ import annotations

import array
import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from app.testing.fake_gemini import body as rq
from app.testing.fake_gemini.catalogue import ModelSpec
from app.testing.fake_gemini.delivery import Delivery, deliver
from app.testing.fake_gemini.directives import parse_directive, split_inline
from app.testing.fake_gemini.failures import pick_failure, to_google_error
from app.testing.fake_gemini.state import FakeState
from app.testing.gemini_schema import parse_request
from app.testing.google_errors import GoogleError, invalid_argument

if TYPE_CHECKING:
    from app.testing.fake_gemini.api import Call

GEMINI_METHODS = ("embedContent", "batchEmbedContents")
VERTEX_METHODS = ("embedContent", "batchEmbedContents", "predict")
BATCH_LIMIT = 100
PREDICT_LIMIT = 250
PREDICT_TOKENS = 20_000  # input tokens of one :predict call, counted before truncation (over: a 400)
RETRIEVAL_DOCUMENT = "RETRIEVAL_DOCUMENT"


def embedding_values(
    spec_or_model: ModelSpec | str, text: str, dimensions: int | None = None, task_type: str | None = None,
    title: str | None = None,
) -> list[float]:
    """The fake's vector for `text`: derived from a hash of (model, task type, title, text), unit length
    at the model's full size, float32 values; `dimensions` keeps the first ones (Matryoshka truncation,
    not rescaled, as gemini-embedding-001 does). A title counts only with RETRIEVAL_DOCUMENT."""
    from app.testing.fake_gemini.catalogue import MODELS

    spec = MODELS[spec_or_model] if isinstance(spec_or_model, str) else spec_or_model
    size = spec.embed_dims
    used_title = title if task_type == RETRIEVAL_DOCUMENT and title else ""
    key = "\x00".join((spec.id, task_type or "", used_title, text)).encode()
    raw = struct.unpack(f"<{size}h", hashlib.shake_256(key).digest(2 * size))
    norm = math.hypot(*raw) or 1.0
    values = array.array("f", [v / norm for v in raw]).tolist()
    return values[:dimensions] if dimensions else values


def text_tokens(text: str) -> int:
    return max(1, rq.estimate_tokens(len(text)))


@dataclass
class Item:
    """One text to embed, with its options (from the request, its entry, or `embedContentConfig`)."""

    text: str
    task_type: str | None = None
    title: str | None = None
    dimensions: int | None = None
    auto_truncate: bool = True


def _too_long(tokens: int, limit: int) -> GoogleError:
    return invalid_argument(f"The input token count ({tokens}) exceeds the maximum number of tokens allowed ({limit}).")


def _text_of_content(content: Any, where: str) -> str:
    parts = rq.parts(content) if isinstance(content, dict) else []
    if not parts:
        raise invalid_argument(f"* {where}.content.parts: contents.parts must not be empty.\n")
    texts = []
    for index, part in enumerate(parts):
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid_argument(f"* {where}.content.parts[{index}]: only text parts can be embedded by this model.\n")
        texts.append(text)
    joined = " ".join(texts)  # several parts of one content make one embedding
    if not joined.strip():
        raise invalid_argument(f"* {where}.content: the text to embed is empty.\n")
    return joined


def _check_dimensions(spec: ModelSpec, value: Any) -> int | None:
    if value is None:
        return None
    if not 1 <= value <= spec.embed_dims:
        raise invalid_argument(
            f"Output dimensionality {value} is out of range for models/{spec.id}: it must be between 1 and {spec.embed_dims}."
        )
    return int(value)


def _gemini_items(method: str, spec: ModelSpec, payload: Any) -> list[Item]:
    if method == "embedContent":
        entries = [parse_request(payload, "gemini", "EmbedContentRequest")]
        names = ["EmbedContentRequest"]
    else:
        request = parse_request(payload, "gemini", "BatchEmbedContentsRequest")
        entries = request.get("requests") or []
        if not entries:
            raise invalid_argument("* BatchEmbedContentsRequest.requests: at least one request is required.\n")
        if len(entries) > BATCH_LIMIT:
            raise invalid_argument(
                f"* BatchEmbedContentsRequest.requests: at most {BATCH_LIMIT} requests can be in one batch\n"
            )
        names = [f"BatchEmbedContentsRequest.requests[{i}]" for i in range(len(entries))]
    items = []
    for entry, where in zip(entries, names, strict=True):
        model = entry.get("model")
        if method == "batchEmbedContents" or model is not None:
            if model != f"models/{spec.id}" and model != spec.id:
                raise invalid_argument(
                    f"* {where}.model: the model of each request must be the model of the URL (models/{spec.id}); "
                    f"got {model!r}.\n"
                )
        text = _text_of_content(entry.get("content"), where)
        dims = _check_dimensions(spec, entry.get("outputDimensionality"))
        items.append(Item(text, entry.get("taskType"), entry.get("title"), dims, auto_truncate=False))
    return items


def _vertex_config(spec: ModelSpec, entry: dict[str, Any]) -> dict[str, Any]:
    config = entry.get("embedContentConfig") or {}
    return {
        "task_type": config.get("taskType"),
        "title": config.get("title"),
        "dimensions": _check_dimensions(spec, config.get("outputDimensionality")),
        "auto_truncate": config.get("autoTruncate", True),
    }


def _vertex_items(method: str, spec: ModelSpec, payload: Any) -> list[Item]:
    if method == "predict":
        return _predict_items(spec, payload)
    if spec.vertex_embed != "embed_content":
        raise invalid_argument(f"models/{spec.id} does not support {method}; use predict.")
    if method == "embedContent":
        entry = parse_request(payload, "vertex", "EmbedContentRequest")
        return [Item(_text_of_content(entry.get("content"), "EmbedContentRequest"), **_vertex_config(spec, entry))]
    request = parse_request(payload, "vertex", "BatchEmbedContentsRequest")
    entries = request.get("requests") or []
    if not entries:
        raise invalid_argument("requests must not be empty.")
    if len(entries) > BATCH_LIMIT:
        raise invalid_argument(f"At most {BATCH_LIMIT} requests can be in one batch; got {len(entries)}.")
    items = []
    for index, entry in enumerate(entries):
        model = entry.get("model")
        if model is not None and model.rsplit("/", 1)[-1] != spec.id:
            raise invalid_argument(f"requests[{index}].model must be the model of the URL ({spec.id}).")
        text = _text_of_content(entry.get("content"), f"BatchEmbedContentsRequest.requests[{index}]")
        items.append(Item(text, **_vertex_config(spec, entry)))
    return items


_INSTANCE_KEYS = frozenset({"content", "task_type", "title", "mimeType"})
_PARAMETER_KEYS = frozenset({"outputDimensionality", "autoTruncate"})


def _predict_items(spec: ModelSpec, payload: Any) -> list[Item]:
    request = parse_request(payload, "vertex", "PredictRequest")
    instances = request.get("instances") or []
    if not instances:
        raise invalid_argument("instances must not be empty.")
    limit = PREDICT_LIMIT if spec.vertex_embed == "predict" else 1
    if len(instances) > limit:
        raise invalid_argument(f"models/{spec.id} takes at most {limit} instance(s) per request; got {len(instances)}.")
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict) or set(parameters) - _PARAMETER_KEYS:
        raise invalid_argument(f"parameters: unknown field(s) {sorted(set(parameters) - _PARAMETER_KEYS)}.")
    dims = _check_dimensions(spec, parameters.get("outputDimensionality"))
    auto_truncate = parameters.get("autoTruncate", True)
    items = []
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict) or set(instance) - _INSTANCE_KEYS:
            raise invalid_argument(f"instances[{index}]: expected {{content, task_type?, title?}}.")
        text = instance.get("content")
        if not isinstance(text, str) or not text.strip():
            raise invalid_argument(f"instances[{index}].content: the text to embed is empty or not a string.")
        task_type = instance.get("task_type")
        if task_type is not None and task_type not in _TASK_TYPES:
            raise invalid_argument(f"instances[{index}].task_type: unknown task type {task_type!r}.")
        items.append(Item(text, task_type, instance.get("title"), dims, auto_truncate))
    tokens = sum(text_tokens(item.text) for item in items)
    if tokens > PREDICT_TOKENS:
        raise invalid_argument(f"The input token count is {tokens} but the model supports up to {PREDICT_TOKENS} "
                               "input tokens per request. Reduce the number of instances or their length.")
    return items


def check_request(backend: str, method: str, spec: ModelSpec, payload: Any) -> list[Item]:
    """The texts (with their options) of one embedding call, or the GoogleError (400) Google answers it with."""
    if backend == "vertex":
        return _vertex_items(method, spec, payload)
    return _gemini_items(method, spec, payload)


def _task_types() -> frozenset[str]:
    from app.testing.gemini_schema_tables import ENUMS

    return frozenset(ENUMS["TaskType"])


_TASK_TYPES = _task_types()


def _directive(items: Sequence[Item], state: FakeState) -> dict[str, Any]:
    """The `#fake` lines of every text (each text loses its line) merged, then a queued script."""
    merged: dict[str, Any] = {}
    for item in items:
        found, cleaned = split_inline(item.text)
        if found:
            merged.update(found)
            item.text = cleaned or item.text
    script = state.scripts.popleft() if state.scripts else {}
    state.counters["scripts_applied"] += bool(script)
    return {**merged, **script}


def _embed(spec: ModelSpec, item: Item, vertex: bool) -> tuple[list[float], int, bool]:
    """(values, tokens, truncated) for one item; over-long texts are refused or truncated."""
    tokens = text_tokens(item.text)
    text, truncated = item.text, False
    if tokens > spec.input_token_limit:
        if not vertex or not item.auto_truncate:
            raise _too_long(tokens, spec.input_token_limit)
        text, tokens, truncated = text[: spec.input_token_limit * 4], spec.input_token_limit, True
    return embedding_values(spec, text, item.dimensions, item.task_type, item.title), tokens, truncated


def _gemini_answer(call: Call, vectors: list[tuple[list[float], int, bool]], usage: bool) -> dict[str, Any]:
    total = sum(tokens for _, tokens, _ in vectors)
    metadata = {"promptTokenCount": total, "promptTokenDetails": [{"modality": "TEXT", "tokenCount": total}]}
    if call.method == "embedContent":
        answer: dict[str, Any] = {"embedding": {"values": vectors[0][0]}}
    else:
        answer = {"embeddings": [{"values": values} for values, _, _ in vectors]}
    if usage:
        answer["usageMetadata"] = metadata
    return answer


def _vertex_answer(call: Call, vectors: list[tuple[list[float], int, bool]], usage: bool) -> dict[str, Any]:
    total = sum(tokens for _, tokens, _ in vectors)
    metadata = {"promptTokenCount": total, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]}
    if call.method == "predict":
        predictions = [
            {"embeddings": {"values": values, "statistics": {"token_count": tokens, "truncated": truncated}}}
            for values, tokens, truncated in vectors
        ]
        return {"predictions": predictions, "metadata": {"billableCharacterCount": total * 4}}
    if call.method == "embedContent":
        values, _, truncated = vectors[0]
        answer: dict[str, Any] = {"embedding": {"values": values}, "truncated": truncated}
    else:
        answer = {"embeddings": [{"values": values} for values, _, _ in vectors]}
    if usage:
        answer["usageMetadata"] = metadata
    return answer


async def answer(
    request: web.Request, state: FakeState, call: Call, spec: ModelSpec, payload: Any, entry: dict[str, Any]
) -> web.StreamResponse:
    """Check one embedding call (`spec`: a model that embeds on this backend), then answer it, or fail
    it as its directive says."""
    vertex = call.backend == "vertex"
    items = check_request(call.backend, call.method, spec, payload)
    state.counters["embed_requests"] += 1
    raw = _directive(items, state)
    directive = parse_directive(raw)
    entry["directive"] = raw or None
    failure = pick_failure(directive, credential=call.credential, project=call.project, fail_counts=state.fail_counts)
    error = to_google_error(failure, call.backend, spec.id) if failure is not None else None
    vectors = [] if error is not None else [_embed(spec, item, vertex) for item in items]
    state.counters["embeddings_returned"] += len(vectors)
    usage = not directive.no_usage
    body = _vertex_answer(call, vectors, usage) if vertex else _gemini_answer(call, vectors, usage)
    delivery = Delivery(directive, False, False, body, failure, error, entry)
    return await deliver(request, state, delivery)
