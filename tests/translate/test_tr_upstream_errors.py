"""`upstream/errors.error_from_google`: Google's error body -> the client-facing OpenAI error.

Bodies are Google's `google.rpc.Status` JSON as the API sends it (docs/gemini-facts.md#errors); the
openai SDK decides what a client does with our answer (exception class, whether it retries).
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from app.upstream.errors import SDK_MAX_RETRY_AFTER, error_from_google, is_credentials_error, parse_duration

RETRY = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA = "type.googleapis.com/google.rpc.QuotaFailure"
INFO = "type.googleapis.com/google.rpc.ErrorInfo"
HELP = "type.googleapis.com/google.rpc.Help"


def google_error(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


def quota_429(delay: str | None, quota_id: str = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier") -> dict[str, Any]:
    details: list[dict[str, Any]] = [
        {
            "@type": QUOTA,
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
                    "quotaValue": "10",
                }
            ],
        },
        {"@type": HELP, "links": [{"description": "Learn more", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
    ]
    if delay is not None:
        details.append({"@type": RETRY, "retryDelay": delay})
    return google_error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details.", *details)


def sdk_view(exc: Any) -> tuple[type[Exception], bool]:
    """(exception class, would the openai SDK retry) for the answer the gateway sends for `exc`."""
    client = openai.OpenAI(api_key="k", base_url="http://gateway.invalid/v1")
    request = httpx.Request("POST", "http://gateway.invalid/v1/chat/completions")
    response = httpx.Response(exc.status, headers=exc.headers, content=exc.body_bytes(), request=request)
    error = client._make_status_error("m", body=exc.body()["error"], response=response)
    retry = client._should_retry(response)
    if retry:
        timeout = client._calculate_retry_timeout(1, openai._base_client.FinalRequestOptions(method="post", url="/x"), response.headers)
        assert timeout <= SDK_MAX_RETRY_AFTER
    return type(error), retry


@pytest.mark.parametrize("body_form", ["bytes", "parsed"])
def test_429_with_retry_info_gives_retry_after(body_form: str) -> None:
    body = quota_429("54s")
    exc = error_from_google(429, orjson.dumps(body) if body_form == "bytes" else body)
    assert (exc.status, exc.type, exc.code) == (429, "rate_limit_error", "rate_limit_exceeded")
    assert exc.headers == {"retry-after": "54"}
    assert exc.retry_after == 54.0 and exc.google_status == "RESOURCE_EXHAUSTED"
    assert exc.quota_ids == ("GenerateRequestsPerMinutePerProjectPerModel-FreeTier",)
    assert exc.message.startswith("You exceeded your current quota")
    assert sdk_view(exc) == (openai.RateLimitError, True)


def test_fractional_retry_delay_rounds_up_to_a_whole_second() -> None:
    exc = error_from_google(429, quota_429("0.5s"))
    assert exc.headers["retry-after"] == "1" and exc.retry_after == 0.5
    assert error_from_google(429, quota_429("12.2s")).headers["retry-after"] == "13"


def test_long_retry_delay_tells_sdks_not_to_retry() -> None:
    exc = error_from_google(429, quota_429("68405s"))
    assert exc.headers == {"retry-after": "68405", "x-should-retry": "false"}
    assert sdk_view(exc) == (openai.RateLimitError, False)


def test_delay_at_the_sdk_limit_is_still_retried() -> None:
    exc = error_from_google(429, quota_429(f"{int(SDK_MAX_RETRY_AFTER)}s"))
    assert "x-should-retry" not in exc.headers


def test_daily_quota_is_not_worth_retrying_even_with_a_short_delay() -> None:
    exc = error_from_google(429, quota_429("30s", "GenerateRequestsPerDayPerProjectPerModel-FreeTier"))
    assert exc.headers == {"retry-after": "30", "x-should-retry": "false"}
    assert sdk_view(exc) == (openai.RateLimitError, False)


def test_429_without_retry_info_has_no_retry_after() -> None:
    exc = error_from_google(429, quota_429(None))
    assert exc.headers == {} and exc.retry_after is None
    assert sdk_view(exc) == (openai.RateLimitError, True)


def test_503_overloaded_with_retry_info() -> None:
    body = google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", {"@type": RETRY, "retryDelay": "3s"})
    exc = error_from_google(503, body)
    assert (exc.status, exc.type) == (503, "server_error")
    assert exc.headers == {"retry-after": "3"}
    assert sdk_view(exc) == (openai.InternalServerError, True)


def test_retry_info_on_a_400_is_not_sent() -> None:
    body = google_error(400, "INVALID_ARGUMENT", "bad", {"@type": RETRY, "retryDelay": "3s"})
    assert error_from_google(400, body).headers == {}


def test_api_key_invalid_is_recognised_as_a_credentials_failure() -> None:
    body = google_error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        {"@type": INFO, "reason": "API_KEY_INVALID", "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": "API key not valid. Please pass a valid API key."},
    )
    exc = error_from_google(400, body)
    assert exc.reason == "API_KEY_INVALID" and exc.google_code == 400
    assert is_credentials_error(exc)  # the dispatcher turns it into 502 (own key) or 401 (the client's key)


def test_first_error_info_reason_wins_and_ordinary_400_is_not_a_credentials_error() -> None:
    body = google_error(
        403,
        "PERMISSION_DENIED",
        "Generative Language API has not been used in project 1 before or it is disabled.",
        {"@type": INFO, "reason": "SERVICE_DISABLED"},
        {"@type": INFO, "reason": "OTHER"},
    )
    exc = error_from_google(403, body)
    assert (exc.status, exc.type, exc.reason) == (403, "permission_error", "SERVICE_DISABLED")
    assert is_credentials_error(exc)
    assert not is_credentials_error(error_from_google(400, google_error(400, "INVALID_ARGUMENT", "bad")))
    assert is_credentials_error(error_from_google(401, google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")))


@pytest.mark.parametrize(
    "message",
    [
        "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576).",
        "The input token count exceeds the maximum number of tokens allowed 1048576.",
    ],
)
def test_context_length(message: str) -> None:
    exc = error_from_google(400, google_error(400, "INVALID_ARGUMENT", message))
    assert (exc.status, exc.type, exc.code) == (400, "invalid_request_error", "context_length_exceeded")
    assert sdk_view(exc)[0] is openai.BadRequestError


def test_array_body_is_unwrapped() -> None:
    body = orjson.dumps([google_error(400, "INVALID_ARGUMENT", "Penalty is not enabled for models/gemini-2.5-flash")])
    exc = error_from_google(400, body)
    assert exc.message == "Penalty is not enabled for models/gemini-2.5-flash"
    assert (exc.status, exc.param, exc.google_status) == (400, "presence_penalty", "INVALID_ARGUMENT")


def test_unknown_model_is_model_not_found() -> None:
    body = google_error(404, "NOT_FOUND", "models/gemini-9-ultra is not found for API version v1beta, or is not supported for generateContent.")
    exc = error_from_google(404, body)
    assert (exc.status, exc.code, exc.param) == (404, "model_not_found", "model")
    assert sdk_view(exc)[0] is openai.NotFoundError


def test_402_is_insufficient_quota_without_retries() -> None:
    exc = error_from_google(402, google_error(402, "RESOURCE_EXHAUSTED", "Your prepaid credits are used up."))
    assert (exc.status, exc.type, exc.code) == (429, "insufficient_quota", "insufficient_quota")
    assert exc.headers == {"x-should-retry": "false"}
    assert sdk_view(exc) == (openai.RateLimitError, False)


def test_mid_stream_error_takes_its_status_from_the_error_object() -> None:
    event = google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", {"@type": RETRY, "retryDelay": "7s"})
    exc = error_from_google(200, event)
    assert (exc.status, exc.type, exc.google_code) == (429, "rate_limit_error", 429)
    assert exc.body() == {"error": {"message": "Resource has been exhausted (e.g. check quota).", "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}}


@pytest.mark.parametrize(
    "status, body, message",
    [
        (502, b"<html><body>Bad Gateway</body></html>", "<html><body>Bad Gateway</body></html>"),
        (500, b"", "Upstream returned HTTP 500."),
        (503, b"{}", "Upstream returned HTTP 503."),
        (500, b"[]", "Upstream returned HTTP 500."),
        (504, b'{"error": "deadline"}', "Upstream returned HTTP 504."),
    ],
)
def test_bodies_that_are_not_google_errors(status: int, body: bytes, message: str) -> None:
    exc = error_from_google(status, body)
    assert exc.message == message
    assert exc.status == status and exc.type == "server_error"


def test_status_google_never_documents_is_a_bad_gateway() -> None:
    exc = error_from_google(418, google_error(418, "UNKNOWN", "teapot"))
    assert (exc.status, exc.type, exc.code) == (502, "server_error", "upstream_error")


def test_non_400_messages_do_not_get_a_param() -> None:
    assert error_from_google(500, google_error(500, "INTERNAL", "thinking failed")).param is None


@pytest.mark.parametrize(
    "value, seconds",
    [("54s", 54.0), ("0.5s", 0.5), ("68405s", 68405.0), (" 3s ", 3.0), ("3", None), ("-1s", None), (3, None), (None, None), ("1m", None)],
)
def test_parse_duration(value: Any, seconds: float | None) -> None:
    assert parse_duration(value) == seconds
