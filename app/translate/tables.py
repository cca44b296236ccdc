"""Enumerations mapped as tables: finish reasons, error statuses (both ways), Google messages -> OpenAI parameters
(chat, embeddings).

Every value of Gemini's `FinishReason` enum has a row (a test checks this
against google-genai's enum); unknown future values fall back to `stop`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

OpenAIFinish = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]

GEMINI_FINISH_TO_OPENAI: Mapping[str, OpenAIFinish] = {
    "FINISH_REASON_UNSPECIFIED": "stop",
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "OTHER": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "MALFORMED_FUNCTION_CALL": "stop",  # never reaches a client: retried, then an error (docs/design.md#endings)
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_OTHER": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "NO_IMAGE": "content_filter",
    "UNEXPECTED_TOOL_CALL": "stop",  # never reaches a client: retried, then an error
    "TOO_MANY_TOOL_CALLS": "stop",
    "MISSING_THOUGHT_SIGNATURE": "stop",
    "MALFORMED_RESPONSE": "stop",
    "ESCALATION": "content_filter",
    "PUP_LIMITED_DISABLED": "content_filter",
    "CONTINUATION": "length",
    "MODEL_ARMOR": "content_filter",
}

# Endings that must not reach the client as a normal answer (docs/design.md#endings).
BROKEN_TOOL_CALL_FINISHES = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})


def gemini_finish_reason_to_openai(reason: str | None, has_tool_calls: bool) -> OpenAIFinish:
    mapped = GEMINI_FINISH_TO_OPENAI.get(reason or "STOP", "stop")
    if has_tool_calls and mapped in ("stop", "length"):
        return "tool_calls"
    return mapped


# Google HTTP status -> (OpenAI status, OpenAI error type, OpenAI code): docs/gemini-facts.md#errors.
GOOGLE_STATUS_TO_OPENAI: Mapping[int, tuple[int, str, str | None]] = {
    400: (400, "invalid_request_error", None),
    401: (401, "invalid_request_error", "invalid_api_key"),  # (OpenAI's type for a bad key, as the gateway's own 401)
    402: (429, "insufficient_quota", "insufficient_quota"),
    403: (403, "permission_error", None),
    404: (404, "not_found_error", None),
    408: (408, "timeout_error", None),
    409: (409, "conflict_error", None),
    413: (413, "invalid_request_error", "request_too_large"),
    429: (429, "rate_limit_error", "rate_limit_exceeded"),
    499: (499, "server_error", "cancelled"),
    500: (500, "server_error", None),
    501: (501, "server_error", None),
    502: (502, "server_error", None),
    503: (503, "server_error", None),
    504: (504, "server_error", "timeout"),
}

# HTTP status -> google.rpc.Code name, the `status` of Google's error body (the native routes' own errors).
HTTP_TO_GOOGLE_STATUS: Mapping[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# ErrorInfo reasons meaning the gateway's own credentials failed (operator problem).
CREDENTIAL_REASONS = frozenset(
    {
        "API_KEY_INVALID",
        "API_KEY_SERVICE_BLOCKED",
        "API_KEY_HTTP_REFERRER_BLOCKED",
        "API_KEY_IP_ADDRESS_BLOCKED",
        "ACCESS_TOKEN_EXPIRED",
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        "SERVICE_DISABLED",
        "CONSUMER_INVALID",
    }
)

CONTEXT_LENGTH_PATTERN = re.compile(r"input token count.*(exceeds the maximum|but the model supports up to)", re.IGNORECASE)

# A Google 400 message -> the OpenAI parameter it is about (first match wins).
GOOGLE_MESSAGE_TO_PARAM: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), param)
    for pattern, param in (
        (r"presence.?penalty|penalty is not enabled", "presence_penalty"),
        (r"frequency.?penalty", "frequency_penalty"),
        (r"logprobs", "logprobs"),
        (r"multiple candidates|candidate.?count", "n"),
        (r"thinking|budget|thought", "reasoning_effort"),
        (r"stop.?sequences", "stop"),
        (r"max.?output.?tokens", "max_completion_tokens"),
        (r"temperature", "temperature"),
        (r"top.?p\b", "top_p"),
        (r"top.?k\b", "top_k"),
        (r"response.?(json.?)?schema|response.?mime", "response_format"),
        (r"response.?modalit", "modalities"),
        (r"function|tool", "tools"),
        (r"safety", "extra_body.google.safety_settings"),
        (r"cached.?content", "extra_body.google.cached_content"),
        (r"contents|parts|inline.?data|file.?data|mime", "messages"),
        (r"seed", "seed"),
    )
)


def param_for_google_message(message: str) -> str | None:
    for pattern, param in GOOGLE_MESSAGE_TO_PARAM:
        if pattern.search(message):
            return param
    return None


# A Google 400 about an embeddings call -> the OpenAI parameter of `POST /v1/embeddings` it is about.
GOOGLE_EMBEDDING_MESSAGE_TO_PARAM: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), param)
    for pattern, param in (
        (r"output.?dimensionality|dimension", "dimensions"),
        (r"task.?type", "extra_body.google.task_type"),
        (r"\btitle\b", "extra_body.google.title"),
        (r"token|content|parts|text|instances|requests|input", "input"),
        (r"\bmodel\b", "model"),
    )
)


def embedding_param_for_google_message(message: str) -> str | None:
    for pattern, param in GOOGLE_EMBEDDING_MESSAGE_TO_PARAM:
        if pattern.search(message):
            return param
    return None


# A Google 400 about an images call -> the OpenAI parameter of `/v1/images/*` it is about (else `prompt`).
GOOGLE_IMAGES_MESSAGE_TO_PARAM: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), param)
    for pattern, param in (
        (r"aspect.?ratio|image.?size|sample.?image.?size", "size"),
        (r"compression", "output_compression"),
        (r"mime|output.?options", "output_format"),
        (r"sample.?count|candidate", "n"),
        (r"safety.?setting", "moderation"),
        (r"inline.?data|image", "image"),
        (r"\bmodel\b", "model"),
    )
)


def images_param_for_google_message(message: str) -> str:
    for pattern, param in GOOGLE_IMAGES_MESSAGE_TO_PARAM:
        if pattern.search(message):
            return param
    return "prompt"
