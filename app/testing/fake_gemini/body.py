"""Reading a `GenerateContentRequest` the way Google's proto-JSON parser does.

Owns: field access that accepts both lowerCamelCase and snake_case names
(proto-JSON takes both, map keys and Struct values excepted), and the
questions the rest of the fake asks about a request: roles, the current
turn, the latest user text, declared functions, function-response rounds,
and a deterministic token estimate.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

_CAMEL_RE = re.compile(r"[A-Z]")
MEDIA_TOKENS = 258  # what Google bills for one image


def snake(name: str) -> str:
    return _CAMEL_RE.sub(lambda m: "_" + m.group(0).lower(), name)


def get(obj: Any, name: str, default: Any = None) -> Any:
    """`obj[name]` under its camelCase or snake_case spelling."""
    if not isinstance(obj, dict):
        return default
    if name in obj:
        return obj[name]
    return obj.get(snake(name), default)


def gen_config(body: dict[str, Any]) -> dict[str, Any]:
    cfg = get(body, "generationConfig")
    return cfg if isinstance(cfg, dict) else {}


def thinking_config(body: dict[str, Any]) -> dict[str, Any]:
    cfg = get(gen_config(body), "thinkingConfig")
    return cfg if isinstance(cfg, dict) else {}


def function_calling_config(body: dict[str, Any]) -> dict[str, Any]:
    cfg = get(get(body, "toolConfig"), "functionCallingConfig")
    return cfg if isinstance(cfg, dict) else {}


def contents(body: dict[str, Any]) -> list[dict[str, Any]]:
    items = get(body, "contents")
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def parts(content: dict[str, Any]) -> list[dict[str, Any]]:
    items = content.get("parts")
    return [p for p in items if isinstance(p, dict)] if isinstance(items, list) else []


def role(content: dict[str, Any]) -> str:
    return content.get("role") or "user"


def function_call(part: dict[str, Any]) -> dict[str, Any] | None:
    call = get(part, "functionCall")
    return call if isinstance(call, dict) else None


def function_response(part: dict[str, Any]) -> dict[str, Any] | None:
    resp = get(part, "functionResponse")
    return resp if isinstance(resp, dict) else None


def signature(part: dict[str, Any]) -> str | None:
    sig = get(part, "thoughtSignature")
    return sig if isinstance(sig, str) else None


def is_ordinary_user(content: dict[str, Any]) -> bool:
    """A `user` Content holding something other than function responses."""
    return role(content) == "user" and any(function_response(p) is None for p in parts(content))


def current_turn_start(items: list[dict[str, Any]]) -> int:
    """Index of the most recent ordinary user Content (0 when there is none)."""
    for index in range(len(items) - 1, -1, -1):
        if is_ordinary_user(items[index]):
            return index
    return 0


def response_rounds(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The function responses of the current turn, one list per returning `user` Content."""
    rounds = []
    for content in items[current_turn_start(items) + 1 :]:
        if role(content) == "user":
            found = [r for p in parts(content) if (r := function_response(p)) is not None]
            if found:
                rounds.append(found)
    return rounds


def latest_user_text(items: list[dict[str, Any]]) -> str:
    """Text of the most recent `user` Content that has text ("" when none has)."""
    for content in reversed(items):
        if role(content) != "user":
            continue
        texts = [p["text"] for p in parts(content) if isinstance(p.get("text"), str)]
        if any(t.strip() for t in texts):
            return "\n".join(texts)
    return ""


def declared_functions(body: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    tools = get(body, "tools")
    for tool in tools if isinstance(tools, list) else []:
        decls = get(tool, "functionDeclarations")
        if isinstance(decls, list):
            found.extend(d for d in decls if isinstance(d, dict))
    return found


def parameters_schema(decl: dict[str, Any]) -> Any:
    schema = get(decl, "parametersJsonSchema")
    return schema if schema is not None else get(decl, "parameters")


def estimate_tokens(text_chars: int) -> int:
    return math.ceil(text_chars / 4)


def _part_chars(part: dict[str, Any]) -> tuple[int, int]:
    """(characters of text-like data, number of media parts) in one part."""
    if isinstance(part.get("text"), str):
        return len(part["text"]), 0
    for name in ("functionCall", "functionResponse", "executableCode", "codeExecutionResult"):
        value = get(part, name)
        if value is not None:
            return len(orjson.dumps(value)), 0
    if get(part, "inlineData") is not None or get(part, "fileData") is not None:
        return 0, 1
    return 0, 0


def prompt_tokens(body: dict[str, Any]) -> int:
    """Deterministic prompt size: ~chars/4 of all request text, 258 per media part, at least 1."""
    chars = media = 0
    every = list(contents(body))
    system = get(body, "systemInstruction")
    if isinstance(system, dict):
        every.append(system)
    for content in every:
        for part in parts(content):
            c, m = _part_chars(part)
            chars += c
            media += m
    tools = get(body, "tools")
    if isinstance(tools, list) and tools:
        chars += len(orjson.dumps(tools))
    return max(1, estimate_tokens(chars) + media * MEDIA_TOKENS)
