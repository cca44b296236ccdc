"""`translate/signatures.py`: the pure part of the thought-signature policy (docs/design.md#thought-signatures).

`enforce_current_turn` implements the validation rule of docs/gemini-facts.md#thought-signatures: in the current turn (every step
since the last user content holding ordinary content, not only function responses) the first
`functionCall` part of every model step must carry a signature; the bypass value fills the gaps.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from app.schemas.openai import Message
from app.translate.signatures import (
    BYPASS_SIGNATURE,
    call_id_key,
    enforce_current_turn,
    from_extra_content,
    legacy_call_key,
    text_key,
    to_extra_content,
    wanted_keys,
)

SIG = "CiQB0e2Kb9XDvqZ1+/signature=="


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "parts": list(parts) or [{"text": "hi"}]}


def model(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "model", "parts": list(parts)}


def call(name: str = "f", sig: str | None = None) -> dict[str, Any]:
    part: dict[str, Any] = {"functionCall": {"name": name, "args": {}}}
    if sig:
        part["thoughtSignature"] = sig
    return part


def result(name: str = "f") -> dict[str, Any]:
    return {"functionResponse": {"name": name, "response": {"output": "ok"}}}


def signatures_of(contents: list[dict[str, Any]]) -> list[list[str | None]]:
    return [[p.get("thoughtSignature") for p in c["parts"]] for c in contents if c["role"] == "model"]


def test_each_step_of_the_current_turn_gets_one_signature_on_its_first_call() -> None:
    contents = [
        user(),
        model({"text": "Let me look."}, call("a"), call("b")),  # parallel: only the first call
        user(result("a"), result("b")),
        model(call("c", SIG)),  # already signed: untouched
        user(result("c")),
        model(call("d")),
        user(result("d")),
    ]
    assert enforce_current_turn(contents) == 2
    assert signatures_of(contents) == [[None, BYPASS_SIGNATURE, None], [SIG], [BYPASS_SIGNATURE]]


def test_older_turns_are_not_touched() -> None:
    contents = [user(), model(call("old")), user(result("old")), model({"text": "done"}), user({"text": "new question"}), model(call("new")), user(result("new"))]
    assert enforce_current_turn(contents) == 1
    assert signatures_of(contents) == [[None], [None], [BYPASS_SIGNATURE]]


def test_a_user_content_with_text_next_to_function_responses_starts_a_new_turn() -> None:
    contents = [user(), model(call("a")), user(result("a"), {"text": "also, do b"}), model(call("b")), user(result("b"))]
    assert enforce_current_turn(contents) == 1
    assert signatures_of(contents) == [[None], [BYPASS_SIGNATURE]]


def test_media_counts_as_ordinary_content() -> None:
    image = {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    contents = [user(), model(call("a")), user(result("a")), user(image), model(call("b")), user(result("b"))]
    assert enforce_current_turn(contents) == 1
    assert signatures_of(contents) == [[None], [BYPASS_SIGNATURE]]


def test_without_an_ordinary_user_content_the_whole_history_is_the_current_turn() -> None:
    contents = [model(call("a")), user(result("a")), model(call("b")), user(result("b"))]
    assert enforce_current_turn(contents) == 2


def test_a_missing_role_is_a_user_content() -> None:
    contents = [{"parts": [{"text": "hi"}]}, model(call("a")), {"parts": [result("a")]}]
    assert enforce_current_turn(contents) == 1


def test_a_turn_that_ends_with_the_users_question_needs_nothing() -> None:
    contents = [user(), model(call("a")), user(result("a")), model({"text": "answer"}), user({"text": "thanks"})]
    before = copy.deepcopy(contents)
    assert enforce_current_turn(contents) == 0
    assert contents == before


def test_text_only_steps_and_text_signatures_are_left_alone() -> None:
    contents = [user(), model({"text": "thinking aloud", "thoughtSignature": SIG}), model({"text": "more"}, call("a")), user(result("a"))]
    assert enforce_current_turn(contents) == 1
    assert signatures_of(contents) == [[SIG], [None, BYPASS_SIGNATURE]]


def test_an_empty_signature_counts_as_missing() -> None:
    contents = [user(), model(call("a", "")), user(result("a"))]
    assert enforce_current_turn(contents) == 1
    assert signatures_of(contents) == [[BYPASS_SIGNATURE]]


def test_running_twice_bypasses_nothing_more() -> None:
    contents = [user(), model(call("a")), user(result("a"))]
    assert enforce_current_turn(contents) == 1
    assert enforce_current_turn(contents) == 0


# -- extra_content ---------------------------------------------------------------------------


def test_extra_content_round_trip_is_byte_for_byte() -> None:
    for sig in (SIG, "4uWsz_JZzy8_eWe1-url-safe", "skip_thought_signature_validator"):
        assert from_extra_content(to_extra_content(sig)) == sig
    assert to_extra_content(SIG) == {"google": {"thought_signature": SIG}}


@pytest.mark.parametrize(
    "extra",
    [None, {}, {"google": None}, {"google": "x"}, {"google": {}}, {"google": {"thought_signature": ""}}, {"google": {"thought_signature": 5}}, {"openai": {"thought_signature": SIG}}],
)
def test_extra_content_without_a_usable_signature(extra: Any) -> None:
    assert from_extra_content(extra) is None


def test_store_keys() -> None:
    assert text_key("hello") == text_key("hello") != text_key("hello ")
    assert text_key("hello").startswith("text:") and len(text_key("x" * 10_000)) == len(text_key("y"))
    assert legacy_call_key("f", '{"a":1}') != legacy_call_key("f", '{"a":2}') != legacy_call_key("g", '{"a":1}')
    assert legacy_call_key("f", "{}") not in (text_key("{}"), text_key("f"), "f")  # never collides with a text answer


def test_wanted_keys_are_the_signatures_the_client_dropped() -> None:
    messages = [
        Message.model_validate(m)
        for m in [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "assistant", "content": "Kept", "extra_content": {"google": {"thought_signature": SIG}}},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "call_b", "type": "function", "function": {"name": "f", "arguments": "{}"}, "extra_content": {"google": {"thought_signature": SIG}}},
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "x"},
            {"role": "assistant", "content": None, "function_call": {"name": "g", "arguments": "{\"x\":1}"}},
            {"role": "assistant", "content": [{"type": "text", "text": "parts"}]},
            {"role": "assistant", "content": ""},
        ]
    ]  # fmt: skip
    assert wanted_keys(messages) == [
        text_key("Hello!"),
        "call_a",
        call_id_key("call_a"),  # Gemini's own call ids are never carried by clients
        call_id_key("call_b"),
        legacy_call_key("g", '{"x":1}'),
    ]


def test_wanted_keys_include_the_text_of_an_answer_that_also_called_tools() -> None:
    message = Message.model_validate(
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"},
             "extra_content": {"google": {"thought_signature": SIG}}},
        ]}
    )  # fmt: skip
    assert wanted_keys([message]) == [call_id_key("call_a"), text_key("Let me look.")]
