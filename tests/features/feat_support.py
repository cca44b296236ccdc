"""Shared helpers of the issue-3 feature tests (tools, signatures, structured output, thinking, images).

Everything here drives the real gateway over HTTP with the official openai SDK;
the fake Gemini decides the answers (`#fake {...}` directives, docs/fake-gemini.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

CALL_ID = re.compile(r"^call_[A-Za-z0-9_-]{24}$")
BYPASS = "skip_thought_signature_validator"

# Strict-compatible tools (the SDK's stream/parse helpers only accept `strict` function tools).
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a time zone.",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {
                "timezone": {"type": "string"},
                "options": {
                    "type": "object",
                    "properties": {"seconds": {"type": "boolean"}, "format": {"type": "string"}},
                    "required": ["seconds", "format"],
                    "additionalProperties": False,
                },
            },
            "required": ["timezone", "options"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, CLOCK]

# The tool of Google's multimodal-function-response example (seed 003).
GET_IMAGE = {
    "type": "function",
    "function": {
        "name": "get_image",
        "description": "Retrieves the image file reference for a specific order item.",
        "parameters": {"type": "object", "properties": {"item_name": {"type": "string"}}, "required": ["item_name"]},
    },
}


def prompt(text: str, **directive: Any) -> str:
    """User text with a `#fake` directive line."""
    return f"{text}\n#fake {json.dumps(directive)}" if directive else text


def compact(value: Any) -> str:
    """JSON as the fake prints it (orjson: compact, insertion order)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def tool_result(call_id: str, name: str, arguments: str, step: int) -> dict[str, Any]:
    """A tool message whose content is a JSON object the fake will echo in its summary."""
    result = {"tool": name, "step": step, "args": json.loads(arguments)}
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)}


def signature_of(tool_call: Any) -> str | None:
    """`extra_content.google.thought_signature` of an SDK tool call object or a dict."""
    extra = tool_call.get("extra_content") if isinstance(tool_call, dict) else (tool_call.model_extra or {}).get("extra_content")
    return ((extra or {}).get("google") or {}).get("thought_signature")


def rebuilt(content: str | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """An assistant message rebuilt from scratch as LangChain does: no unknown fields survive."""
    message: dict[str, Any] = {"role": "assistant", "content": content or ""}
    if calls:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls
        ]
    return message


@dataclass
class Turn:
    """One assistant answer, whichever way it was obtained."""

    content: str | None
    finish_reason: str | None
    calls: list[dict[str, Any]]  # id, name, arguments, signature (as the client saw them)
    keep: Any  # the assistant message exactly as the SDK (or a faithful accumulator) returns it
    message_extra: dict[str, Any] = field(default_factory=dict)
    chunks: list[Any] = field(default_factory=list)


def _calls_of_message(message: Any) -> list[dict[str, Any]]:
    return [
        {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments, "signature": signature_of(tc)}
        for tc in message.tool_calls or ()
    ]


def turn_from_completion(completion: Any) -> Turn:
    choice = completion.choices[0]
    message = choice.message
    return Turn(message.content, choice.finish_reason, _calls_of_message(message), message, dict(message.model_extra or {}))


def accumulate(chunks: list[Any]) -> Turn:
    """Rebuild the answer from raw `stream=True` chunks, keeping unknown fields (what a careful client does)."""
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    message_extra: dict[str, Any] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                content.append(delta.content)
            message_extra.update(delta.model_extra or {})
            for tc in delta.tool_calls or ():
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": "", "extra": None})
                if tc.id:
                    assert slot["id"] is None, "a call's id is sent once, on its first delta"
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    assert slot["name"] is None, "a call's name is sent once, on its first delta"
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
                extra = (tc.model_extra or {}).get("extra_content")
                if extra:
                    slot["extra"] = extra
            if choice.finish_reason:
                finish = choice.finish_reason
    ordered = [calls[i] for i in sorted(calls)]
    assert sorted(calls) == list(range(len(calls))), "tool-call indexes run 0, 1, 2, ... across the stream"
    text = "".join(content) or None
    keep: dict[str, Any] = {"role": "assistant", "content": text}
    if ordered:
        keep["tool_calls"] = []
        for c in ordered:
            entry = {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            if c["extra"]:
                entry["extra_content"] = c["extra"]
            keep["tool_calls"].append(entry)
    if message_extra.get("extra_content"):
        keep["extra_content"] = message_extra["extra_content"]
    turn_calls = [
        {"id": c["id"], "name": c["name"], "arguments": c["arguments"], "signature": signature_of({"extra_content": c["extra"]})}
        for c in ordered
    ]
    return Turn(text, finish, turn_calls, keep, message_extra, list(chunks))


def first_deltas_well_formed(chunks: list[Any]) -> None:
    """Each call's first delta carries id, type and name; later deltas of that call carry neither id nor name."""
    seen: set[int] = set()
    for chunk in chunks:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or ():
                if tc.index not in seen:
                    seen.add(tc.index)
                    assert tc.id and CALL_ID.match(tc.id), tc
                    assert tc.type == "function"
                    assert tc.function is not None and tc.function.name
                else:
                    assert not tc.id and not (tc.function and tc.function.name), tc


def recorded_generate(fake: Any) -> list[dict[str, Any]]:
    """The fake's recorded generate requests (not token or admin calls)."""
    return [r for r in fake.requests() if r.get("backend") in ("gemini", "vertex") and ":" in r["path"]]


def function_call_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for c in body["contents"] if c["role"] == "model" for p in c["parts"] if "functionCall" in p]


def function_response_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [p["functionResponse"] for c in body["contents"] for p in c["parts"] if "functionResponse" in p]


def declarations(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [d for t in body.get("tools", ()) for d in t.get("functionDeclarations", ())]
