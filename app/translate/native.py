"""The little the native Gemini routes do to what they pass through (docs/design.md#native-gemini-api).

The native routes (app/api/native.py) send the client's body to Google and
Google's answer back untouched. What is here is the exception to that, each a
pure function:

* `forwarded_query`: the client's query string without its credentials
  (`key`, `access_token`); everything else (`alt=sse`, `pageSize`, ...) as sent.
* `rename_batch_models`: `batchEmbedContents` repeats the model in every
  request of the batch (`requests[].model`), and Google wants the URL's model
  there; when routing renamed the model (an alias), those fields are renamed
  too. The only case where the body changes.
* `vertex_model_to_gemini` / `vertex_models_to_gemini`: on a Vertex AI
  upstream, its publisher models shown as the Gemini API's `Model` resources
  (name, id, version), so that google-genai's `models.list()` / `models.get()`
  read them.
* `sniff_usage`: `usageMetadata` and `modelVersion` read from the end of an
  answer (the last event of a stream) without parsing the rest, for the access
  log and metrics.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

import orjson

CREDENTIAL_PARAMS = frozenset({"key", "access_token"})

_USAGE = b'"usageMetadata"'
_MODEL_VERSION = b'"modelVersion"'
_SNIFF_SPAN = 8192  # bytes read after a key: usage is a few hundred
_decode = json.JSONDecoder().raw_decode


def forwarded_query(query: bytes) -> str:
    """`?...` for the upstream URL: the client's query string less its credentials, else "" (pieces kept as sent)."""
    if not query:
        return ""
    kept = [
        piece
        for piece in query.decode("latin-1").split("&")
        if piece and unquote_plus(piece.partition("=")[0]) not in CREDENTIAL_PARAMS
    ]
    return "?" + "&".join(kept) if kept else ""


def rename_batch_models(body: bytes, requested: str, model: str) -> bytes:
    """A `batchEmbedContents` body whose `requests[].model` name `requested` renamed to `models/{model}`.

    The body is returned as it came when nothing names `requested` (or it is not
    a JSON object with `requests`: Google will say what is wrong with it).
    """
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    requests = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(requests, list):
        return body
    names = (requested, f"models/{requested}")
    renamed = False
    for request in requests:
        if isinstance(request, dict) and request.get("model") in names:
            request["model"] = f"models/{model}"
            renamed = True
    return orjson.dumps(payload) if renamed else body


def vertex_model_to_gemini(model: dict[str, Any]) -> dict[str, Any]:
    """A Vertex `PublisherModel` (`publishers/google/models/{id}`) as a Gemini API `Model` resource."""
    model_id = str(model.get("name", "")).rsplit("/", 1)[-1]
    resource: dict[str, Any] = {"name": f"models/{model_id}", "baseModelId": model_id, "displayName": model_id}
    if "versionId" in model:
        resource["version"] = model["versionId"]
    return resource


def vertex_models_to_gemini(page: dict[str, Any]) -> dict[str, Any]:
    """A page of Vertex's `publishers.models.list` as a page of the Gemini API's `models.list`."""
    out: dict[str, Any] = {
        "models": [vertex_model_to_gemini(m) for m in page.get("publisherModels") or () if isinstance(m, dict)]
    }
    if page.get("nextPageToken"):
        out["nextPageToken"] = page["nextPageToken"]
    return out


def _value_after(data: bytes, key: bytes) -> Any:
    """The JSON value of the last `key` in `data` (a raw JSON key, quotes included), or None."""
    at = data.rfind(key)
    if at < 0:
        return None
    text = data[at + len(key) : at + len(key) + _SNIFF_SPAN].decode("utf-8", "replace")
    colon = text.find(":")
    if colon < 0 or text[:colon].strip():
        return None
    start = len(text) - len(text[colon + 1 :].lstrip())
    try:
        value, _ = _decode(text, start)
    except ValueError:
        return None
    return value


def sniff_usage(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(`usageMetadata`, `modelVersion`) of the last answer object in `data`, each None when not found whole.

    A JSON key in raw bytes cannot be mistaken for text: inside a string the
    quotes around it would be escaped. Only a few hundred bytes after the key
    are decoded.
    """
    usage = _value_after(data, _USAGE)
    version = _value_after(data, _MODEL_VERSION)
    return (
        usage if isinstance(usage, dict) else None,
        version if isinstance(version, str) else None,
    )
