"""Google's error body (`google.rpc.Status`) -> `UpstreamError` with the OpenAI status.

One table (`translate/tables.py`, docs/gemini-facts.md#errors) decides status, type and code;
this module reads the body: message, `ErrorInfo.reason`, `RetryInfo`
(-> `Retry-After`), `QuotaFailure` quota ids (a daily quota is not worth
retrying: `x-should-retry: false`).
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from app.errors import UpstreamError
from app.translate.tables import (
    CONTEXT_LENGTH_PATTERN,
    CREDENTIAL_REASONS,
    GOOGLE_STATUS_TO_OPENAI,
    param_for_google_message,
)

# openai-python gives up on Retry-After above 120 s; tell it so explicitly.
SDK_MAX_RETRY_AFTER = 120.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def parse_duration(value: Any) -> float | None:
    """Protobuf Duration JSON (`"54s"`, `"0.5s"`) -> seconds."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1))
    return None


def _error_object(body: bytes | Any) -> dict[str, Any]:
    data: Any = body
    if isinstance(body, (bytes, bytearray)):
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return {"message": body[:500].decode("utf-8", "replace").strip()}
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data["error"]
    return data if isinstance(data, dict) else {}


def error_from_google(status: int, body: bytes | Any) -> UpstreamError:
    """Build the client-facing error for a Google error answer (HTTP or mid-stream)."""
    err = _error_object(body)
    code = err.get("code")
    if status == 200 and isinstance(code, int):
        status = code
    message = str(err.get("message") or f"Upstream returned HTTP {status}.")
    reason = None
    retry_after = None
    quota_ids: list[str] = []
    for detail in err.get("details") or ():
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", ""))
        if kind.endswith("ErrorInfo") and reason is None:
            reason = detail.get("reason")
        elif kind.endswith("RetryInfo"):
            retry_after = parse_duration(detail.get("retryDelay"))
        elif kind.endswith("QuotaFailure"):
            quota_ids.extend(str(v.get("quotaId", "")) for v in detail.get("violations") or () if isinstance(v, dict))
    http, kind, code = GOOGLE_STATUS_TO_OPENAI.get(status, (502, "server_error", "upstream_error"))
    headers: dict[str, str] = {}
    if retry_after is not None and http in (429, 503):
        headers["retry-after"] = str(max(1, math.ceil(retry_after)))
    daily = any("PerDay" in q for q in quota_ids)
    if http == 429 and (daily or (retry_after or 0) > SDK_MAX_RETRY_AFTER) or status == 402:
        headers["x-should-retry"] = "false"
    param = param_for_google_message(message) if http == 400 else None
    if http == 404 and "model" in message.lower():
        code, param = "model_not_found", "model"
    if http == 400 and CONTEXT_LENGTH_PATTERN.search(message):
        code = "context_length_exceeded"
    return UpstreamError(
        message,
        google_code=status,
        google_status=str(err.get("status") or ""),
        reason=reason,
        retry_after=retry_after,
        quota_ids=tuple(quota_ids),
        status=http,
        type=kind,
        code=code,
        param=param,
        headers=headers,
    )


def is_credentials_error(error: UpstreamError) -> bool:
    """Google refused the credentials themselves (not the request)."""
    return error.reason in CREDENTIAL_REASONS or error.google_code == 401
