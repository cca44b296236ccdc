"""The one error hierarchy of the gateway, and how it becomes OpenAI's error JSON.

Every error a client can see is a `GatewayError`; its `status`, `type`, `code`
and `param` fill OpenAI's body `{"error": {"message", "type", "param", "code"}}`
so that the OpenAI SDKs raise the matching exception class::

    GatewayError                      500 server_error
    ├── InvalidRequest                400 invalid_request_error
    │   ├── UnsupportedParameter      400 code=unsupported_parameter
    │   └── ContentFiltered           400 code=content_filter (blocked prompt)
    ├── AuthenticationFailed          401 invalid_request_error / invalid_api_key (no key too)
    ├── ModelNotAllowed               403 invalid_request_error / model_not_allowed (the key may not use it)
    ├── NotFound                      404 not_found_error (model_not_found)
    ├── PayloadTooLarge               413 invalid_request_error
    ├── RateLimited                   429 rate_limit_error (+ Retry-After)
    ├── UpstreamError                 status from the Google error table
    │   └── UpstreamUnavailable       502/504: connection failures and timeouts
    ├── UpstreamCredentialsFailed     502: our own Google credentials were refused
    └── RetryableAnswer               502: an answer a new try may fix
        └── BrokenToolCall            502 code=malformed_function_call (translate/chat_response.py)

Anything that is not a `GatewayError` is reported as a generic 500 carrying only
the request id; its details go to the log, never to the client.
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers: dict[str, str] = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class ContentFiltered(InvalidRequest):
    code = "content_filter"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"  # (OpenAI's type for a bad key; the SDKs raise AuthenticationError on the 401)
    code = "invalid_api_key"


class ModelNotAllowed(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "model_not_allowed"

    def __init__(self, model: str, key_name: str, **kwargs: Any) -> None:
        kwargs.setdefault("param", "model")
        super().__init__(f"The API key `{key_name}` may not use the model `{model}`.", **kwargs)


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str, **kwargs: Any) -> None:
        kwargs.setdefault("param", "model")
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.", **kwargs)


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """A non-2xx answer from Google, already mapped to the OpenAI status and type.

    `google_status` / `google_code` keep what Google said (e.g. 429
    RESOURCE_EXHAUSTED), `retry_after` the `RetryInfo` delay in seconds,
    `reason` the `ErrorInfo.reason`, `quota_ids` the QuotaFailure quota ids.
    `answer` is Google's HTTP answer itself (status, content type, body), when
    there was one: the native Gemini routes pass it on untouched.
    """

    answer: tuple[int, str, bytes] | None = None

    def __init__(
        self,
        message: str,
        *,
        google_code: int,
        google_status: str = "",
        reason: str | None = None,
        retry_after: float | None = None,
        quota_ids: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.google_code = google_code
        self.google_status = google_status
        self.reason = reason
        self.retry_after = retry_after
        self.quota_ids = quota_ids

    @property
    def daily_quota(self) -> bool:
        return any("PerDay" in q for q in self.quota_ids)


class UpstreamUnavailable(UpstreamError):
    """Could not reach Google (connect error, reset, timeout)."""

    def __init__(self, message: str, *, status: int = 502, **kwargs: Any) -> None:
        kwargs.setdefault("google_code", 0)
        super().__init__(message, status=status, type="server_error", code="upstream_unavailable", **kwargs)


class UpstreamCredentialsFailed(GatewayError):
    """Google refused the gateway's own credentials: the operator must act; clients learn nothing more."""

    status = 502
    type = "server_error"
    code = "upstream_auth_failed"

    def __init__(self) -> None:
        super().__init__("The gateway could not authenticate to its upstream. The operator has been notified in the logs.")


class RetryableAnswer(GatewayError):
    """Google answered 200, but with something a new try may fix (e.g. a malformed function call)."""

    status = 502
    type = "server_error"


_BRANCH_LABELS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "bytes"})


def loc_to_path(loc: tuple[int | str, ...]) -> str:
    """`('messages', 0, 'content', 'list[...]', 1, 'text')` -> `messages[0].content[1].text`.

    Pydantic puts union-branch labels (`str`, `list[...]`, class names,
    `function-after[...]`) into error locations; they are not fields, so they go.
    """
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _BRANCH_LABELS or "[" in part or part[:1].isupper():
            continue
        else:
            path += f".{part}" if path else part
    return path


def internal_error(request_id: str) -> GatewayError:
    return GatewayError(f"The server had an error while processing your request (request id {request_id}).")
