"""`POST /v1/embeddings` <-> Gemini's embedding calls: pure functions, no I/O (docs/parameters.md#embeddings).

Request side:

* `plan_embeddings(req)` checks what only this endpoint knows (text inputs, the encoding, the Google
  options) and returns an `EmbeddingPlan`; every refusal is a 400 naming the OpenAI parameter;
* `batches(plan)` cuts the inputs into batches of at most `BATCH_LIMIT` (Google refuses more than 100
  requests in one `batchEmbedContents`); the endpoint sends them concurrently;
* `embed_call(plan, texts, model, caps, vertex)` builds one batch's call for one target, in the shape
  that backend takes (docs/gemini-facts.md#embeddings):
  - Gemini Developer API: `:batchEmbedContents`, one `requests[]` entry per input, each with `model`,
    `content`, `taskType`, `title`, `outputDimensionality` (what google-genai sends);
  - Vertex AI, Gemini embedding models: `:embedContent` for one input, `:batchEmbedContents` for more,
    the options inside `embedContentConfig`;
  - Vertex AI, the older text-embedding models (`caps.embeddings_api == "predict"`): `:predict` with
    `instances` (snake_case `task_type`) and `parameters.outputDimensionality`;
  - on Vertex always `autoTruncate: false`: an input over the model's limit is a 400, as on the Gemini
    API and OpenAI, where Vertex would cut it silently.

Response side:

* `read_batch(call, answer)` takes one answer's vectors (one per input, checked) and token count.
  The bytes of a `batchEmbedContents` answer (megabytes of numbers: 100 x 3072 values) are scanned
  rather than parsed (`scan_batch`): each vector stays the JSON array Google wrote, checked to hold
  only numbers;
* `to_openai(plan, results)` reassembles the batches in input order into OpenAI's list: `index` is the
  position in `input`; `float` lists (Google's arrays copied as they are, when nothing needs
  rescaling) or `base64` (the vector as little-endian float32, exactly as OpenAI encodes it;
  openai-python asks for it by default and decodes it itself; the conversion is translate/float32.py). With `dimensions`, each
  vector is rescaled to unit length, as OpenAI's are (Google leaves reduced-dimension vectors of
  gemini-embedding-001 unnormalised). Usage is Google's token count; where an answer carries none, it
  is estimated (about four characters per token) and `x-gemini-proxy-usage: estimated` says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from app.errors import GatewayError, InvalidRequest
from app.schemas.openai import EmbeddingRequest
from app.translate.capabilities import ModelCapabilities
from app.translate.float32 import arrays_float32_base64, float32_base64

# Google: "at most 100 requests can be in one batch" (batchEmbedContents). Vertex's `:predict` takes up
# to 250 instances; one size for every backend keeps the batches the same whichever target serves them.
BATCH_LIMIT = 100
PREDICT_TOKENS = 20_000  # Vertex :predict (text-embedding-*): input tokens a call (docs/gemini-facts.md)
# OpenAI: an `input` array holds at most 2048 items.
MAX_INPUTS = 2048
ESTIMATED = "estimated"

Encoding = Literal["float", "base64"]


@dataclass(frozen=True, slots=True)
class EmbeddingPlan:
    """What one embeddings request asks for, checked."""

    model: str  # as the client named it (echoed in the answer)
    texts: list[str]
    encoding: Encoding = "float"
    dimensions: int | None = None
    task_type: str | None = None
    title: str | None = None


@dataclass(frozen=True, slots=True)
class EmbedCall:
    """One upstream call: the verb (`batchEmbedContents`, `embedContent`, `predict`), its body, and how many inputs."""

    verb: str
    body: dict[str, Any]
    count: int


@dataclass(frozen=True, slots=True)
class BatchResult:
    vectors: list[list[float]] | None  # None when `arrays` holds them unparsed
    tokens: int | None  # Google's count; None when the answer carries none
    arrays: list[memoryview] | None = None  # each vector's JSON array, as Google wrote it (`scan_batch`)


# -- request ------------------------------------------------------------------------------------


def _invalid(message: str, param: str = "input", code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_TOKENS = (
    "'input' holds token arrays, which Gemini cannot take: it embeds text, and its tokenizer is not "
    "OpenAI's. Send the text itself (a string or an array of strings)."
)


def texts_of(value: Any) -> list[str]:
    """OpenAI's `input` -> the texts to embed; a 400 naming `input` for anything else."""
    if isinstance(value, str):
        if not value:
            raise _invalid("'input' must not be an empty string.")
        return [value]
    if not isinstance(value, list):
        raise _invalid(
            f"Invalid type for 'input': expected a string or an array of strings, got {_json_type(value)}.", code="invalid_type"
        )
    if not value:
        raise _invalid("'input' must not be an empty array.")
    if len(value) > MAX_INPUTS:
        raise _invalid(f"'input' holds {len(value)} items; at most {MAX_INPUTS} are allowed in one request.")
    if all(_is_token(item) for item in value) or all(
        isinstance(item, list) and all(_is_token(t) for t in item) for item in value
    ):
        raise _invalid(_TOKENS, code="unsupported_value")
    for index, item in enumerate(value):
        if isinstance(item, str):
            if not item:
                raise _invalid(f"'input[{index}]' must not be an empty string.")
            continue
        raise _invalid(
            f"Invalid type for 'input[{index}]': expected a string, got {_json_type(item)}.", code="invalid_type"
        )
    return value


def encoding_of(value: Any) -> Encoding:
    if value is None or value == "float":
        return "float"
    if value == "base64":
        return "base64"
    shown = value if isinstance(value, str) else repr(value)
    raise _invalid(
        f"Invalid value for 'encoding_format' = {shown}. Supported values: ['float', 'base64'].", param="encoding_format"
    )


def plan_embeddings(req: EmbeddingRequest) -> EmbeddingPlan:
    texts = texts_of(req.input)
    encoding = encoding_of(req.encoding_format)
    google = req.google_options()
    task_type = google.task_type.upper() if google is not None and google.task_type else None
    title = google.title if google is not None else None
    return EmbeddingPlan(req.model, texts, encoding, req.dimensions, task_type, title)


def batches(plan: EmbeddingPlan, token_limit: int | None = None) -> list[list[str]]:
    """The inputs in order, cut every `BATCH_LIMIT` texts and, with `token_limit` (Vertex's `:predict` takes at most
    `PREDICT_TOKENS` input tokens a call), before a text whose `upper_tokens` (and the title's, sent with each)
    would take a batch over it (a text over it alone is a batch of its own: Google's answer about it is the
    client's)."""
    texts = plan.texts
    if token_limit is None:
        return [texts[i : i + BATCH_LIMIT] for i in range(0, len(texts), BATCH_LIMIT)]
    title = upper_tokens(plan.title) if plan.title else 0  # sent with every instance
    out: list[list[str]] = []
    batch: list[str] = []
    tokens = 0
    for text in texts:
        size = upper_tokens(text) + title
        if batch and (len(batch) == BATCH_LIMIT or tokens + size > token_limit):
            out.append(batch)
            batch, tokens = [], 0
        batch.append(text)
        tokens += size
    if batch:
        out.append(batch)
    return out


def upper_tokens(text: str) -> int:
    """At least as many tokens as Google's tokenizer makes of `text`: one per UTF-8 byte (its byte fallback's worst
    case: digits, emoji, rare characters; English text runs ~4 bytes a token)."""
    return max(1, len(text.encode()))


def _content(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def _options(plan: EmbeddingPlan) -> dict[str, Any]:
    """taskType, title, outputDimensionality: as the Gemini API and Vertex's embedContentConfig spell them."""
    options: dict[str, Any] = {}
    if plan.task_type is not None:
        options["taskType"] = plan.task_type
    if plan.title is not None:
        options["title"] = plan.title
    if plan.dimensions is not None:
        options["outputDimensionality"] = plan.dimensions
    return options


def embed_call(plan: EmbeddingPlan, texts: Sequence[str], model: str, caps: ModelCapabilities, vertex: bool) -> EmbedCall:
    """The call for one batch of `texts` on one target (`model`: the Gemini model id)."""
    options = _options(plan)
    if not vertex:
        name = f"models/{model}"
        requests = [{"model": name, "content": _content(t), **options} for t in texts]
        return EmbedCall("batchEmbedContents", {"requests": requests}, len(texts))
    if caps.embeddings_api == "predict":
        extra: dict[str, Any] = {}
        if plan.task_type is not None:
            extra["task_type"] = plan.task_type
        if plan.title is not None:
            extra["title"] = plan.title
        parameters: dict[str, Any] = {"autoTruncate": False}  # over the limit: a 400, as OpenAI (Vertex truncates)
        if plan.dimensions is not None:
            parameters["outputDimensionality"] = plan.dimensions
        body: dict[str, Any] = {"instances": [{"content": t, **extra} for t in texts], "parameters": parameters}
        return EmbedCall("predict", body, len(texts))
    config = {"embedContentConfig": {**options, "autoTruncate": False}}  # (as above)
    if len(texts) == 1:
        return EmbedCall("embedContent", {"content": _content(texts[0]), **config}, 1)
    return EmbedCall("batchEmbedContents", {"requests": [{"content": _content(t), **config} for t in texts]}, len(texts))


# -- response -----------------------------------------------------------------------------------


def _bad_answer(detail: str) -> GatewayError:
    return GatewayError(f"The upstream sent an embeddings answer the gateway cannot read: {detail}.", status=502,
                        code="upstream_bad_answer")


def _values(embedding: Any, where: str) -> list[float]:
    values = embedding.get("values") if isinstance(embedding, dict) else None
    if not isinstance(values, list):
        raise _bad_answer(f"{where} has no `values`")
    return values


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _statistics_tokens(items: list[Any]) -> int | None:
    """Σ per-embedding `statistics.token_count` (Vertex), when every item has one."""
    total = 0
    for item in items:
        stats = item.get("statistics") if isinstance(item, dict) else None
        count = _count(stats.get("token_count", stats.get("tokenCount"))) if isinstance(stats, dict) else None
        if count is None:
            return None
        total += count
    return total


_VALUES_KEY = b'"values"'
_TOKENS_KEY = b'"promptTokenCount"'
_INT_AFTER_COLON = re.compile(rb"\s*:\s*(\d+)")
_BLANKS = b" \t\r\n"
_NOT_IN_A_NUMBER_ARRAY = (b'"', b"[", b"{", b"}")


def scan_batch(data: bytes, count: int) -> BatchResult | None:
    """A `batchEmbedContents` answer read without parsing its numbers: each vector's JSON array as
    Google wrote it (a view into `data`), and `usageMetadata.promptTokenCount`.

    Only the shape `... [{"values": [numbers]}, {"values": [numbers]}, ...] ...` with exactly
    `count` arrays is taken: between two arrays nothing but `}, {"values":`, inside an array no
    string, array or object (each a memchr over the array, the only passes over the numbers).
    Anything else (per-embedding statistics, an unexpected shape) returns None: the parser reads it.
    """
    find = data.find
    view = memoryview(data)
    arrays: list[memoryview] = []
    first = pos = key = find(_VALUES_KEY)
    while key >= 0:
        if arrays and data[pos:key].translate(None, _BLANKS) != b"},{":
            return None
        start = find(b"[", key + len(_VALUES_KEY))
        if start < 0 or data[key + len(_VALUES_KEY) : start].strip() != b":":
            return None
        end = find(b"]", start)
        if end < 0 or any(find(c, start + 1, end) >= 0 for c in _NOT_IN_A_NUMBER_ARRAY):
            return None
        arrays.append(view[start : end + 1])
        pos = end + 1
        key = find(_VALUES_KEY, pos)
    if len(arrays) != count:
        return None
    head, tail = data[: max(first, 0)], data[pos:]  # around the arrays: small
    if b'"statistics"' in head or b'"statistics"' in tail:
        return None
    tokens = None
    for part in (tail, head):
        at = part.find(_TOKENS_KEY)
        if at >= 0:
            match = _INT_AFTER_COLON.match(part, at + len(_TOKENS_KEY))
            if match is None:
                return None
            tokens = int(match.group(1))
            break
    return BatchResult(None, tokens, arrays)


def read_batch(call: EmbedCall, answer: dict[str, Any] | bytes) -> BatchResult:
    """One answer (parsed, or its bytes) -> its vectors, one per input of `call` (else a 502), and
    Google's token count. The bytes of a `batchEmbedContents` answer are scanned, not parsed
    (`scan_batch`); anything unexpected goes through the parser."""
    if isinstance(answer, bytes):
        if call.verb == "batchEmbedContents":
            scanned = scan_batch(answer, call.count)
            if scanned is not None:
                return scanned
        try:
            parsed = orjson.loads(answer)
        except orjson.JSONDecodeError:
            raise _bad_answer("it is not JSON") from None
        if isinstance(parsed, list):  # the array form some Google front ends use
            parsed = parsed[0] if parsed else {}
        if not isinstance(parsed, dict):
            raise _bad_answer("it is not a JSON object")
        answer = parsed
    usage = answer.get("usageMetadata")
    tokens = _count(usage.get("promptTokenCount")) if isinstance(usage, dict) else None
    if call.verb == "embedContent":
        return BatchResult([_values(answer.get("embedding"), "the answer")], tokens)
    if call.verb == "predict":
        predictions = answer.get("predictions")
        if not isinstance(predictions, list):
            raise _bad_answer("no `predictions`")
        items = [p.get("embeddings") if isinstance(p, dict) else None for p in predictions]
        vectors = [_values(item, f"prediction {i}") for i, item in enumerate(items)]
        tokens = _statistics_tokens(items)
    else:
        embeddings = answer.get("embeddings")
        if not isinstance(embeddings, list):
            raise _bad_answer("no `embeddings`")
        vectors = [_values(item, f"embedding {i}") for i, item in enumerate(embeddings)]
        if tokens is None:
            tokens = _statistics_tokens(embeddings)
    if len(vectors) != call.count:
        raise _bad_answer(f"{len(vectors)} embeddings for {call.count} inputs")
    return BatchResult(vectors, tokens)


def estimate_tokens(text: str) -> int:
    """About four characters per token (Google's and OpenAI's rule of thumb), at least 1."""
    return max(1, math.ceil(len(text) / 4))


def unit(vector: list[float]) -> list[float]:
    norm = math.hypot(*vector)
    if norm == 0.0 or norm == 1.0:
        return vector
    inverse = 1.0 / norm
    return [x * inverse for x in vector]


@dataclass(frozen=True, slots=True)
class EmbeddingAnswer:
    body: bytes  # OpenAI's embeddings list, as JSON
    prompt_tokens: int
    headers: dict[str, str]


_ITEM = b'{"object":"embedding","index":%d,"embedding":'
_NOT_NUMBERS = "a vector holds something that is not a number"


def to_openai(plan: EmbeddingPlan, results: Sequence[BatchResult]) -> EmbeddingAnswer:
    """The batches' answers, in input order -> OpenAI's embeddings list (JSON bytes), its usage, extra headers.

    Unparsed arrays (`scan_batch`) are copied as they are when floats are asked for without
    `dimensions` (one copy, by the final join), and turned into base64 in one go when base64 is
    (translate/float32.py); otherwise each vector is parsed, rescaled and encoded.
    """
    pieces: list[bytes | memoryview] = [b'{"object":"list","data":[']
    prompt_tokens = 0
    estimated = False
    index = 0
    rescale = plan.dimensions is not None
    base64_ = plan.encoding == "base64"
    for result in results:
        first = index
        if result.arrays is not None and not rescale:
            if base64_:
                try:
                    encoded_arrays = arrays_float32_base64(result.arrays)
                except ValueError:
                    raise _bad_answer(_NOT_NUMBERS) from None
                for encoded in encoded_arrays:
                    pieces += (b"," if index else b"") + _ITEM % index, b'"', encoded, b'"}'
                    index += 1
            else:
                for raw in result.arrays:
                    pieces += (b"," if index else b"") + _ITEM % index, raw, b"}"
                    index += 1
        else:
            try:
                vectors = result.vectors if result.vectors is not None else [orjson.loads(a) for a in result.arrays or ()]
            except orjson.JSONDecodeError:
                raise _bad_answer(_NOT_NUMBERS) from None
            for vector in vectors:
                if rescale:
                    vector = unit(vector)
                encoded = b'"' + float32_base64(vector) + b'"' if base64_ else orjson.dumps(vector)
                pieces += (b"," if index else b"") + _ITEM % index, encoded, b"}"
                index += 1
        if result.tokens is not None:
            prompt_tokens += result.tokens
        else:
            estimated = True
            prompt_tokens += sum(estimate_tokens(t) for t in plan.texts[first:index])
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    pieces += b'],"model":', orjson.dumps(plan.model), b',"usage":', orjson.dumps(usage), b"}"
    return EmbeddingAnswer(b"".join(pieces), prompt_tokens, {"x-gemini-proxy-usage": ESTIMATED} if estimated else {})
