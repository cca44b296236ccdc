"""Injected failures: which error a request gets, and how it looks on the wire.

Owns: picking the failure for one request from its directive (`error` with
`fail_times`/`fail_key` counted server-side, `fail_api_keys`,
`fail_projects`), and turning an `ErrorSpec` into a `GoogleError` with the
details Google attaches (QuotaFailure + Help for 429, RetryInfo when a delay
is given, ErrorInfo for a reason, any raw details).
"""

from __future__ import annotations

from typing import Literal

from app.testing.fake_gemini.directives import Directive, ErrorSpec
from app.testing.google_errors import (
    ERROR_INFO,
    HELP,
    QUOTA_FAILURE,
    RETRY_INFO,
    STATUS_NAMES,
    GoogleError,
)

Backend = Literal["gemini", "vertex"]

_GEMINI_429 = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
    "To monitor your current usage, head to: https://ai.dev/usage?tab=rate-limit."
)
_VERTEX_429 = (
    "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details."
)
_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: (
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
        "cookie or other valid authentication credential. See "
        "https://developers.google.com/identity/sign-in/web/devconsole-project."
    ),
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    500: (
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting"
    ),
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
DEFAULT_QUOTA_ID = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
SERVICES = {"gemini": "generativelanguage.googleapis.com", "vertex": "aiplatform.googleapis.com"}


def to_google_error(spec: ErrorSpec, backend: Backend, model: str) -> GoogleError:
    """The `GoogleError` an `ErrorSpec` stands for, with Google's usual details."""
    if spec.message is not None:
        message = spec.message
    elif spec.status == 429:
        message = _GEMINI_429 if backend == "gemini" else _VERTEX_429
    else:
        message = _MESSAGES.get(spec.status, "fake-gemini injected error")
    details: list[dict] = []
    if spec.status == 429 and (backend == "gemini" or spec.quota_id):
        per_day = "PerDay" in (spec.quota_id or "")
        details.append(
            {
                "@type": QUOTA_FAILURE,
                "violations": [
                    {
                        "quotaMetric": f"{SERVICES[backend]}/generate_content_free_tier_requests",
                        "quotaId": spec.quota_id or DEFAULT_QUOTA_ID,
                        "quotaDimensions": {"location": "global", "model": model},
                        "quotaValue": "250" if per_day else "10",
                    }
                ],
            }
        )
        details.append(
            {
                "@type": HELP,
                "links": [
                    {
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                    }
                ],
            }
        )
    if spec.reason:
        details.append(
            {
                "@type": ERROR_INFO,
                "reason": spec.reason,
                "domain": "googleapis.com",
                "metadata": {"service": SERVICES[backend]},
            }
        )
    if spec.retry_delay:
        details.append({"@type": RETRY_INFO, "retryDelay": spec.retry_delay})
    details.extend(spec.details)
    status_name = spec.status_name or STATUS_NAMES.get(spec.status, "UNKNOWN")
    return GoogleError(spec.status, message, status_name, details)


def pick_failure(
    directive: Directive,
    *,
    credential: str | None,
    project: str | None,
    fail_counts: dict[str, int],
) -> ErrorSpec | None:
    """The error this request must get, if any (counts `fail_times` in `fail_counts`)."""
    if credential is not None and credential in directive.fail_api_keys:
        return directive.fail_api_keys[credential]
    if project is not None and project in directive.fail_projects:
        return directive.fail_projects[project]
    if directive.fail_times is not None:
        seen = fail_counts.get(directive.fail_key, 0)
        fail_counts[directive.fail_key] = seen + 1
        if seen >= directive.fail_times:
            return None
        return directive.error or ErrorSpec()
    return directive.error
