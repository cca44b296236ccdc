"""The one thought-signature policy (docs/design.md#thought-signatures).

Gemini 3 rejects a tool conversation whose model steps in the current turn lost
their `thoughtSignature`. OpenAI clients often drop unknown fields, so:

1. Out: a signature on a `functionCall` part is returned on that tool call as
   `extra_content.google.thought_signature`, byte for byte (only the first call
   of a parallel step has one, as Gemini sends it); a signature on a text or
   other part becomes the message's `extra_content.google.thought_signature`.
2. Back in: taken from those fields when the client kept them;
3. else restored from the signature store: keys are the tool-call id, or
   `text_key(content)` for a text answer (the gateway fetches them before
   translation, so the translator stays pure);
4. else, for a Gemini 3 call in the current turn only, the documented bypass
   value is sent and counted.

The same store remembers Gemini's own `functionCall.id` (when Gemini sends
one) behind our `call_...` id, so that it goes back on the `functionCall` and
its `functionResponse` in later turns.

The Responses API (translate/responses_*.py) carries them the same way on its
`function_call` items and answer messages (`extra_content`), and also, when the
client asks for `include: ["reasoning.encrypted_content"]`, as the
`encrypted_content` of a reasoning item (`to_encrypted_content`), the field
stateless Responses clients keep.

This module holds the pure part: where signatures sit, which keys to look up,
and the current-turn rule. The store itself lives in `app/gateway/signatures.py`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

BYPASS_SIGNATURE = "skip_thought_signature_validator"


def from_extra_content(extra: Mapping[str, Any] | None) -> str | None:
    """`extra_content.google.thought_signature`, if present and a string."""
    if not extra:
        return None
    google = extra.get("google")
    if isinstance(google, Mapping):
        sig = google.get("thought_signature")
        if isinstance(sig, str) and sig:
            return sig
    return None


def to_extra_content(signature: str) -> dict[str, Any]:
    return {"google": {"thought_signature": signature}}


ENCRYPTED_PREFIX = "gemini-thought-signature:"


def to_encrypted_content(signature: str) -> str:
    """A signature as a Responses reasoning item's `encrypted_content` (opaque to the client)."""
    return ENCRYPTED_PREFIX + signature


def from_encrypted_content(value: str | None) -> str | None:
    """The signature in a reasoning item's `encrypted_content`, if it is one of ours (byte for byte)."""
    if value and value.startswith(ENCRYPTED_PREFIX) and len(value) > len(ENCRYPTED_PREFIX):
        return value[len(ENCRYPTED_PREFIX) :]
    return None


def text_key(text: str) -> str:
    """Store key for the signature of an assistant answer, from its text as the client sees it."""
    return "text:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def call_id_key(tool_call_id: str) -> str:
    """Store key for Gemini's own `functionCall.id` behind one of our `call_...` ids."""
    return "gid:" + tool_call_id


def legacy_call_key(name: str, arguments: str) -> str:
    """Store key for a deprecated `function_call`, which has no id."""
    return text_key(f"fn:{name}:{arguments}")


def wanted_keys(messages: Iterable[Any]) -> list[str]:
    """Store keys of the signatures the client did not send back (tool-call ids, text keys)."""
    keys: list[str] = []
    for msg in messages:
        if msg.role != "assistant":
            continue
        if msg.tool_calls:
            keys.extend(tc.id for tc in msg.tool_calls if from_extra_content(tc.extra_content) is None)
            keys.extend(call_id_key(tc.id) for tc in msg.tool_calls)
        if from_extra_content(msg.extra_content) is not None:
            continue
        elif msg.function_call is not None:
            keys.append(legacy_call_key(msg.function_call.name, msg.function_call.arguments))
        elif isinstance(msg.content, str) and msg.content:
            keys.append(text_key(msg.content))
    return keys


def _is_ordinary_user_content(content: Mapping[str, Any]) -> bool:
    return content.get("role", "user") == "user" and any("functionResponse" not in p for p in content["parts"])


def enforce_current_turn(contents: list[dict[str, Any]]) -> int:
    """Give the first functionCall part of every model step in the current turn a signature.

    The current turn starts after the last user content holding ordinary content
    (not only function responses). Parts that still lack a signature get the
    bypass value. Returns how many were bypassed.
    """
    start = 0
    for i in range(len(contents) - 1, -1, -1):
        if _is_ordinary_user_content(contents[i]):
            start = i + 1
            break
    bypassed = 0
    for content in contents[start:]:
        if content.get("role") != "model":
            continue
        for part in content["parts"]:
            if "functionCall" in part:
                if not part.get("thoughtSignature"):
                    part["thoughtSignature"] = BYPASS_SIGNATURE
                    bypassed += 1
                break
    return bypassed
