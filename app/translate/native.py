"""The little the native Gemini routes do to what they pass through (docs/design.md#native-gemini-api).

The native routes (app/api/native.py) send the client's body to Google and
Google's answer back untouched. What is here is the exception to that, each a
pure function:

* `forwarded_query`: the client's query string without its credentials
  (`key`, `access_token`); everything else (`alt=sse`, `pageSize`, ...) as sent.
* `rename_body_models`: three verbs name the model again in the body
  (`embedContent`: `model`; `batchEmbedContents`: `requests[].model`;
  `countTokens`: `generateContentRequest.model`), and Google wants the URL's
  model there; when routing renamed the model (an alias), those fields are
  renamed too. The only case where the body changes.
* `vertex_model_to_gemini` / `vertex_models_to_gemini`: on a Vertex AI
  upstream, its publisher models shown as the Gemini API's `Model` resources
  (name, id, version), so that google-genai's `models.list()` / `models.get()`
  read them.
* `sniff_usage`: `usageMetadata` and `modelVersion` read from the end of an
  answer (the last event of a stream) without parsing the rest, for the access
  log and metrics.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_plus

import orjson

CREDENTIAL_PARAMS = frozenset({"key", "access_token"})
BODY_MODELS = frozenset({"embedContent", "batchEmbedContents", "countTokens"})  # verbs whose body names the model

_USAGE = b'"usageMetadata"'
_SNIFF_SPAN = 8192  # at most this much is parsed; Google's tail from usageMetadata on is a few hundred bytes
_TRAILER = b" \t\r\n]"  # after the last object: SSE's blank line, the streamed array's `]`


def forwarded_query(query: bytes) -> str:
    """`?...` for the upstream URL: the client's query string less its credentials, else "" (pieces kept as sent)."""
    if not query:
        return ""
    if b"key" not in query and b"access_token" not in query and b"%" not in query:
        return "?" + query.decode("latin-1")  # nothing to drop (the usual `alt=sse`)
    kept = [
        piece
        for piece in query.decode("latin-1").split("&")
        if piece and unquote_plus(piece.partition("=")[0]) not in CREDENTIAL_PARAMS
    ]
    return "?" + "&".join(kept) if kept else ""


def rename_body_models(body: bytes, verb: str, requested: str, model: str) -> bytes:
    """A body of `verb` whose model fields naming `requested` are renamed to `models/{model}` (`BODY_MODELS`).

    The body is returned as it came when nothing names `requested` (or it is not
    the JSON object the verb takes: Google will say what is wrong with it).
    """
    if verb not in BODY_MODELS:
        return body
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(payload, dict):
        return body
    if verb == "batchEmbedContents":
        holders = payload.get("requests")
        if not isinstance(holders, list):
            return body
    else:
        holders = [payload if verb == "embedContent" else payload.get("generateContentRequest")]
    names = (requested, f"models/{requested}")
    renamed = False
    for holder in holders:
        if isinstance(holder, dict) and holder.get("model") in names:
            holder["model"] = f"models/{model}"
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


def sniff_usage(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(`usageMetadata`, `modelVersion`) of the last answer object in `data`, each None when not found.

    Google puts `usageMetadata` after the candidates, followed only by short
    fields (`modelVersion`, `responseId`, `createTime`), so the object's tail
    from that key on, made an object of its own, is all that is parsed: one
    search and a few hundred bytes. A JSON key in raw bytes cannot be mistaken
    for text (inside a string its quotes would be escaped); a tail that does
    not parse (another key order, a cut answer) leaves usage unknown.
    """
    at = data.rfind(_USAGE)
    if at < 0 or len(data) - at > _SNIFF_SPAN:
        return None, None
    try:
        tail = orjson.loads(b"{" + data[at:].rstrip(_TRAILER))
    except orjson.JSONDecodeError:
        return None, None
    usage, version = tail.get("usageMetadata"), tail.get("modelVersion")
    return (usage if isinstance(usage, dict) else None, version if isinstance(version, str) else None)
