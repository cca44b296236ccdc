"""Directives: how a test tells the fake what to answer.

Owns: finding the `#fake {JSON}` line in the latest user text, checking its
keys and types (a typo is a 400, never silently ignored), merging it with a
queued `/_fake/script` directive (the script's keys win), and `ErrorSpec`,
the description of an injected Google error. The keys are documented in
docs/fake-gemini.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.testing.google_errors import GoogleError

DIRECTIVE_LINE = re.compile(r"^[ \t]*#fake[ \t]+(\{.*\})[ \t]*(?:\r?\n|\Z)", re.MULTILINE)

FINISH_REASONS = frozenset(
    """FINISH_REASON_UNSPECIFIED STOP MAX_TOKENS SAFETY RECITATION LANGUAGE OTHER BLOCKLIST
    PROHIBITED_CONTENT SPII MALFORMED_FUNCTION_CALL IMAGE_SAFETY IMAGE_PROHIBITED_CONTENT
    IMAGE_OTHER IMAGE_RECITATION NO_IMAGE UNEXPECTED_TOOL_CALL TOO_MANY_TOOL_CALLS
    MISSING_THOUGHT_SIGNATURE MALFORMED_RESPONSE ESCALATION PUP_LIMITED_DISABLED CONTINUATION
    MODEL_ARMOR""".split()
)
BLOCK_REASONS = frozenset(
    """BLOCK_REASON_UNSPECIFIED BLOCKED_REASON_UNSPECIFIED SAFETY OTHER BLOCKLIST
    PROHIBITED_CONTENT IMAGE_SAFETY MODEL_ARMOR JAILBREAK""".split()
)


def directive_error(message: str) -> GoogleError:
    return GoogleError(400, f"fake-gemini: invalid #fake directive: {message}")


@dataclass(frozen=True)
class ErrorSpec:
    """An error to answer with: before any byte, or mid-stream after `after_chunks` chunks."""

    status: int = 503
    message: str | None = None
    status_name: str | None = None
    retry_delay: str | None = None
    quota_id: str | None = None
    reason: str | None = None
    details: tuple[dict[str, Any], ...] = ()
    after_chunks: int | None = None
    raw: bool = False


@dataclass(frozen=True)
class ToolCallSpec:
    name: str
    args: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True)
class Directive:
    reply: str | None = None
    chunks: int | None = None
    chunk_delay_ms: int = 0
    first_byte_delay_ms: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    finish_reason: str | None = None
    finish_message: str | None = None
    block_prompt: str | None = None
    error: ErrorSpec | None = None
    fail_times: int | None = None
    fail_key: str = "default"
    fail_api_keys: dict[str, ErrorSpec] = field(default_factory=dict)
    fail_projects: dict[str, ErrorSpec] = field(default_factory=dict)
    reset_before_response: bool = False
    reset_after_chunks: int | None = None
    stall_after_chunks: int | None = None
    tool_calls: tuple[ToolCallSpec, ...] = ()
    tool_steps: int | None = None
    parallel: int = 1
    call_ids: bool = False
    thoughts: str | None = None
    image: bool = False
    grounding: bool = False
    code_execution: bool = False
    partial_args: bool = False
    no_usage: bool = False  # embedding answers without usageMetadata
    rai_filtered: int = 0  # Imagen: how many of the samples the safety filter takes
    enhanced_prompt: str | None = None  # Imagen: the rewritten prompt each prediction returns


def _typed(kind: type, what: str) -> Callable[[str, Any], Any]:
    def convert(key: str, value: Any) -> Any:
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
        if not ok or (kind is int and value < 0):
            raise directive_error(f"`{key}` must be {what}")
        return value

    return convert


def _enum(values: frozenset[str], what: str) -> Callable[[str, Any], str]:
    def convert(key: str, value: Any) -> str:
        if not isinstance(value, str) or value not in values:
            raise directive_error(f"`{key}` must be a {what}, got {value!r}")
        return value

    return convert


_ERROR_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "status": _typed(int, "an HTTP status code"),
    "message": _typed(str, "a string"),
    "status_name": _typed(str, "a google.rpc.Code name"),
    "retry_delay": _typed(str, 'a duration such as "7s"'),
    "quota_id": _typed(str, "a string"),
    "reason": _typed(str, "an ErrorInfo reason"),
    "details": lambda k, v: tuple(_typed(list, "a list of detail objects")(k, v)),
    "after_chunks": _typed(int, "a non-negative integer"),
    "raw": _typed(bool, "true or false"),
}


def _error(key: str, value: Any) -> ErrorSpec:
    if not isinstance(value, dict):
        raise directive_error(f"`{key}` must be an object")
    unknown = set(value) - set(_ERROR_KEYS)
    if unknown:
        raise directive_error(f"unknown key(s) in `{key}`: {', '.join(sorted(unknown))}")
    return ErrorSpec(**{k: _ERROR_KEYS[k](f"{key}.{k}", v) for k, v in value.items()})


def _error_map(key: str, value: Any) -> dict[str, ErrorSpec]:
    if not isinstance(value, dict):
        raise directive_error(f"`{key}` must be an object of error objects")
    return {str(k): _error(f"{key}.{k}", v) for k, v in value.items()}


def _tool_calls(key: str, value: Any) -> tuple[ToolCallSpec, ...]:
    if not isinstance(value, list):
        raise directive_error(f"`{key}` must be a list of {{name, args}} objects")
    calls = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise directive_error(f"each `{key}` entry needs a string `name`")
        args = item.get("args", {})
        if not isinstance(args, dict) or set(item) - {"name", "args", "id"}:
            raise directive_error(f"`{key}` entries are {{name, args (object), id?}}")
        calls.append(ToolCallSpec(item["name"], args, item.get("id")))
    return tuple(calls)


def _usage(key: str, value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
        raise directive_error(f"`{key}` must map usageMetadata count names to integers")
    return dict(value)


def _positive(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise directive_error(f"`{key}` must be an integer >= 1")
    return value


_KEYS: dict[str, Callable[[str, Any], Any]] = {
    "reply": _typed(str, "a string"),
    "chunks": _positive,
    "chunk_delay_ms": _typed(int, "a non-negative integer"),
    "first_byte_delay_ms": _typed(int, "a non-negative integer"),
    "usage": _usage,
    "finish_reason": _enum(FINISH_REASONS, "FinishReason"),
    "finish_message": _typed(str, "a string"),
    "block_prompt": _enum(BLOCK_REASONS, "BlockReason"),
    "error": _error,
    "fail_times": _typed(int, "a non-negative integer"),
    "fail_key": _typed(str, "a string"),
    "fail_api_keys": _error_map,
    "fail_projects": _error_map,
    "reset_before_response": _typed(bool, "true or false"),
    "reset_after_chunks": _typed(int, "a non-negative integer"),
    "stall_after_chunks": _typed(int, "a non-negative integer"),
    "tool_calls": _tool_calls,
    "tool_steps": _typed(int, "a non-negative integer"),
    "parallel": _positive,
    "call_ids": _typed(bool, "true or false"),
    "thoughts": _typed(str, "a string"),
    "image": _typed(bool, "true or false"),
    "grounding": _typed(bool, "true or false"),
    "code_execution": _typed(bool, "true or false"),
    "partial_args": _typed(bool, "true or false"),
    "no_usage": _typed(bool, "true or false"),
    "rai_filtered": _typed(int, "a non-negative integer"),
    "enhanced_prompt": _typed(str, "a string"),
}
KNOWN_KEYS = frozenset(_KEYS)


def parse_directive(raw: dict[str, Any]) -> Directive:
    """Check a directive object's keys and types; raise a 400 naming the problem."""
    unknown = set(raw) - KNOWN_KEYS
    if unknown:
        raise directive_error(f"unknown key(s): {', '.join(sorted(unknown))}")
    return Directive(**{k: _KEYS[k](k, v) for k, v in raw.items() if v is not None})


def split_inline(text: str) -> tuple[dict[str, Any], str]:
    """(the `#fake {...}` object found in `text` or {}, the text without that line)."""
    match = DIRECTIVE_LINE.search(text)
    if match is None:
        return {}, text.strip()
    try:
        found = orjson.loads(match.group(1))
    except orjson.JSONDecodeError as exc:
        raise directive_error(f"not JSON: {exc}") from None
    if not isinstance(found, dict):
        raise directive_error("must be a JSON object")
    cleaned = (text[: match.start()] + text[match.end() :]).strip()
    return found, cleaned


def check_script(raw: Any) -> list[dict[str, Any]]:
    """Validate a `/_fake/script` body (one directive object or a list of them)."""
    items = raw if isinstance(raw, list) else [raw]
    for item in items:
        if not isinstance(item, dict):
            raise directive_error("a script is a directive object or a list of them")
        parse_directive(item)
    return items
