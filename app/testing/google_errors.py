"""Google's error shape (`google.rpc.Status` as JSON) for the fake Gemini server.

Owns: the exception the fake raises for anything Google would refuse, and the
JSON body Google sends for it::

    {"error": {"code": 400, "message": "...", "status": "INVALID_ARGUMENT",
               "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", ...}]}}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
HELP = "type.googleapis.com/google.rpc.Help"


class GoogleError(Exception):
    """An error the fake answers with, in Google's wire shape."""

    def __init__(
        self,
        code: int,
        message: str,
        status: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")
        self.details = details or []

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "status": self.status}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def invalid_argument(message: str, field: str | None = None) -> GoogleError:
    """A 400 INVALID_ARGUMENT; with `field`, a BadRequest detail naming it (as Google does)."""
    details = None
    if field is not None:
        details = [{"@type": BAD_REQUEST, "fieldViolations": [{"field": field, "description": message}]}]
    return GoogleError(400, message, "INVALID_ARGUMENT", details)


def parse_errors(violations: Sequence[tuple[str, str]]) -> GoogleError:
    """A 400 for JSON -> proto parse errors, as Google's converter reports them.

    `violations` are (field path, description) pairs in document order. The message has
    every description on its own line; the BadRequest detail has one field violation
    each, without `field` for a name at the top level (its path is empty).
    """
    field_violations = [
        {"field": path, "description": description} if path else {"description": description}
        for path, description in violations
    ]
    message = "\n".join(description for _, description in violations)
    details = [{"@type": BAD_REQUEST, "fieldViolations": field_violations}]
    return GoogleError(400, message, "INVALID_ARGUMENT", details)
