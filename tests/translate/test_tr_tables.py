"""The enumeration tables (`translate/tables.py`): finish reasons, blocked prompts, Google statuses.

google-genai's enums are the oracle for "every upstream value has a row"; the openai SDK's own
status -> exception mapping is the oracle for the statuses we answer with.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from google.genai import types as gtypes

from app.errors import ContentFiltered
from app.translate.chat_request import ResponseOptions
from app.translate.chat_response import BrokenToolCall, ResponseContext, prompt_blocked, to_openai
from app.translate.chat_stream import ChatStreamTranslator
from app.translate.tables import (
    BROKEN_TOOL_CALL_FINISHES,
    GEMINI_FINISH_TO_OPENAI,
    GOOGLE_STATUS_TO_OPENAI,
    gemini_finish_reason_to_openai,
    param_for_google_message,
)

OPENAI_FINISHES = {"stop", "length", "tool_calls", "content_filter", "function_call"}
SAFETY_FAMILY = {
    "SAFETY", "RECITATION", "LANGUAGE", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT", "IMAGE_OTHER", "IMAGE_RECITATION", "NO_IMAGE", "ESCALATION",
    "PUP_LIMITED_DISABLED", "MODEL_ARMOR",
}  # fmt: skip


def ctx(**options: Any) -> ResponseContext:
    return ResponseContext(ResponseOptions(model="m", **options), "chatcmpl-t", 1, lambda: "call_t")


# -- finish reasons --------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [r.value for r in gtypes.FinishReason])
def test_every_gemini_finish_reason_has_a_row(reason: str) -> None:
    assert reason in GEMINI_FINISH_TO_OPENAI
    assert GEMINI_FINISH_TO_OPENAI[reason] in OPENAI_FINISHES - {"tool_calls", "function_call"}


def test_the_table_has_no_rows_for_values_google_does_not_have() -> None:
    assert set(GEMINI_FINISH_TO_OPENAI) == {r.value for r in gtypes.FinishReason}


@pytest.mark.parametrize("reason", sorted(SAFETY_FAMILY))
def test_safety_family_is_content_filter_even_with_tool_calls(reason: str) -> None:
    assert gemini_finish_reason_to_openai(reason, False) == "content_filter"
    assert gemini_finish_reason_to_openai(reason, True) == "content_filter"


@pytest.mark.parametrize(
    "reason, calls, expected",
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),  # Gemini says STOP when it called functions
        (None, False, "stop"),  # a stream that ended without one
        (None, True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("MAX_TOKENS", True, "tool_calls"),
        ("CONTINUATION", False, "length"),
        ("FINISH_REASON_UNSPECIFIED", False, "stop"),
        ("OTHER", False, "content_filter"),
        ("TOO_MANY_TOOL_CALLS", False, "stop"),
        ("MISSING_THOUGHT_SIGNATURE", False, "stop"),
        ("A_REASON_FROM_THE_FUTURE", False, "stop"),
        ("A_REASON_FROM_THE_FUTURE", True, "tool_calls"),
    ],
)
def test_finish_reason_mapping(reason: str | None, calls: bool, expected: str) -> None:
    assert gemini_finish_reason_to_openai(reason, calls) == expected


def test_broken_tool_call_finishes_never_reach_a_client_as_an_answer() -> None:
    assert BROKEN_TOOL_CALL_FINISHES == {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"}
    for reason in BROKEN_TOOL_CALL_FINISHES:
        response = {"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": reason, "finishMessage": "bad"}]}
        with pytest.raises(BrokenToolCall) as raised:
            to_openai(response, ctx())
        assert raised.value.code == "malformed_function_call" and raised.value.reason == reason
        with pytest.raises(BrokenToolCall):
            ChatStreamTranslator(ctx()).feed(response)


# -- blocked prompts -----------------------------------------------------------------------------

BLOCK_REASONS = sorted({r.value for r in gtypes.BlockedReason} | {"BLOCK_REASON_UNSPECIFIED"})  # + Gemini API spelling


@pytest.mark.filterwarnings("ignore:BLOCK_REASON_UNSPECIFIED is not a valid BlockedReason")  # Gemini API spelling
@pytest.mark.parametrize("reason", BLOCK_REASONS)
def test_every_block_reason_is_a_content_filter_error(reason: str) -> None:
    response = {"promptFeedback": {"blockReason": reason}, "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3}}
    gtypes.GenerateContentResponse.model_validate(response)
    blocked = prompt_blocked(response)
    assert isinstance(blocked, ContentFiltered)
    assert (blocked.status, blocked.code, blocked.param) == (400, "content_filter", "messages")
    assert reason in blocked.message
    with pytest.raises(ContentFiltered):
        to_openai(response, ctx())
    with pytest.raises(ContentFiltered):
        ChatStreamTranslator(ctx()).feed(response)


def test_prompt_feedback_without_a_block_is_not_an_error() -> None:
    response = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
        "promptFeedback": {"safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]},
    }
    assert prompt_blocked(response) is None
    assert to_openai(response, ctx())["choices"][0]["message"]["content"] == "hi"
    assert prompt_blocked({"promptFeedback": {}}) is None


# -- Google status -> OpenAI status --------------------------------------------------------------

SDK_CLASS = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    429: openai.RateLimitError,
    500: openai.InternalServerError,
    502: openai.InternalServerError,
    503: openai.InternalServerError,
    504: openai.InternalServerError,
}


def sdk_exception(status: int, kind: str, code: str | None) -> openai.APIStatusError:
    client = openai.OpenAI(api_key="k", base_url="http://gateway.invalid/v1", max_retries=0)
    body = {"error": {"message": "m", "type": kind, "param": None, "code": code}}
    response = httpx.Response(status, json=body, request=httpx.Request("POST", "http://gateway.invalid/v1/chat/completions"))
    return client._make_status_error("m", body=body["error"], response=response)


@pytest.mark.parametrize(
    "google, expected",
    [
        (400, (400, "invalid_request_error")),  # INVALID_ARGUMENT / FAILED_PRECONDITION
        (401, (401, "invalid_request_error")),  # (OpenAI's type for a bad key)
        (402, (429, "insufficient_quota")),  # OpenAI's convention for billing
        (403, (403, "permission_error")),
        (404, (404, "not_found_error")),
        (429, (429, "rate_limit_error")),
        (500, (500, "server_error")),
        (503, (503, "server_error")),
        (504, (504, "server_error")),
    ],
)
def test_google_status_table_matches_the_reference(google: int, expected: tuple[int, str]) -> None:
    status, kind, _ = GOOGLE_STATUS_TO_OPENAI[google]
    assert (status, kind) == expected


@pytest.mark.parametrize("google", sorted(GOOGLE_STATUS_TO_OPENAI))
def test_every_mapped_status_raises_the_sdk_exception_clients_expect(google: int) -> None:
    status, kind, code = GOOGLE_STATUS_TO_OPENAI[google]
    exc = sdk_exception(status, kind, code)
    expected = SDK_CLASS.get(status, openai.APIStatusError)
    assert isinstance(exc, expected)
    assert (exc.status_code, exc.type, exc.code) == (status, kind, code)


@pytest.mark.parametrize(
    "message, param",
    [
        ("Penalty is not enabled for models/gemini-2.5-flash", "presence_penalty"),
        ("frequency_penalty must be between -2 and 2", "frequency_penalty"),
        ("Logprobs is not enabled for models/gemini-2.5-pro", "logprobs"),
        ("Multiple candidates is not enabled for this model", "n"),
        ("You can only set only one of thinking budget and thinking level.", "reasoning_effort"),
        ("* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed.", "stop"),
        ("Unable to submit request because it has a maxOutputTokens value of 70000 but the supported range is from 1 (inclusive) to 65537 (exclusive).", "max_completion_tokens"),
        ("* GenerateContentRequest.tools[0].function_declarations[0].name: Invalid function name.", "tools"),
        ("* GenerateContentRequest.contents[1].parts: contents.parts must not be empty.", "messages"),
        ("Something nobody mapped", None),
    ],
)
def test_google_400_messages_name_the_openai_parameter(message: str, param: str | None) -> None:
    assert param_for_google_message(message) == param
