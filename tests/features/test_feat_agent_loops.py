"""Agent loops written for OpenAI, run against Gemini 3 through the gateway (issue 3, "Thought signatures").

The fake Gemini enforces Gemini 3's rule: in the current turn the first
functionCall of every model step must carry the signature it issued for that
call, or the request is a 400. Each loop below runs two user turns (5 tool
steps with 2 parallel calls, then 2 more steps) and must see zero 400s, no
bypass value (fake and gateway counters) and no re-encoded signature.

* keep: the client appends the assistant message as the SDK returns it
  (`extra_content` kept). Run against a gateway whose signature store is
  disabled, so the signatures can only have come back from the client.
* rebuild: the client rebuilds messages from id/type/name/arguments only,
  as LangChain does; the gateway's store must restore every signature.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway_harness import signature_bypasses

from .feat_support import (
    BYPASS,
    CALL_ID,
    CLOCK,
    TOOLS,
    WEATHER,
    Turn,
    accumulate,
    compact,
    first_deltas_well_formed,
    function_call_parts,
    prompt,
    rebuilt,
    recorded_generate,
    tool_result,
    turn_from_completion,
)

MODELS = ["gemini-3-pro-preview", "gemini-3-flash-preview"]
HOW = ["plain", "helper", "raw"]


def one_turn(client: Any, model: str, messages: list[Any], how: str) -> Turn:
    if how == "plain":
        return turn_from_completion(client.chat.completions.create(model=model, messages=messages, tools=TOOLS))
    if how == "helper":
        with client.chat.completions.stream(model=model, messages=messages, tools=TOOLS) as stream:
            events = list(stream)
            final = stream.get_final_completion()
        turn = turn_from_completion(final)
        turn.chunks = [e.chunk for e in events if e.type == "chunk"]
        first_deltas_well_formed(turn.chunks)
        done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
        assert [e.name for e in done] == [c["name"] for c in turn.calls]
        for event in done:
            assert json.loads(event.arguments) == event.parsed_arguments
        return turn
    chunks = list(client.chat.completions.create(model=model, messages=messages, tools=TOOLS, stream=True))
    first_deltas_well_formed(chunks)
    return accumulate(chunks)


async def one_turn_async(client: Any, model: str, messages: list[Any], how: str) -> Turn:
    if how == "plain":
        return turn_from_completion(await client.chat.completions.create(model=model, messages=messages, tools=TOOLS))
    if how == "helper":
        async with client.chat.completions.stream(model=model, messages=messages, tools=TOOLS) as stream:
            events = [e async for e in stream]
            final = await stream.get_final_completion()
        turn = turn_from_completion(final)
        turn.chunks = [e.chunk for e in events if e.type == "chunk"]
        first_deltas_well_formed(turn.chunks)
        return turn
    stream = await client.chat.completions.create(model=model, messages=messages, tools=TOOLS, stream=True)
    chunks = [c async for c in stream]
    first_deltas_well_formed(chunks)
    return accumulate(chunks)


class Conversation:
    """The agent's side: messages, the signatures it saw, and the checks made after every answer."""

    def __init__(self, keep: bool, dump: bool = False) -> None:
        self.keep = keep
        self.dump = dump
        self.messages: list[Any] = [{"role": "system", "content": "You are a careful travel agent."}]
        self.call_ids: list[str] = []
        self.call_signatures: list[str] = []  # the signature of each step, in order
        self.text_signatures: list[str] = []

    def user(self, text: str, **directive: Any) -> None:
        self.messages.append({"role": "user", "content": prompt(text, **directive)})
        self.turn_start = len(self.messages)

    def tool_step(self, turn: Turn, parallel: int, step: int) -> None:
        assert turn.finish_reason == "tool_calls"
        assert turn.content in (None, "")
        assert len(turn.calls) == parallel
        assert [c["name"] for c in turn.calls] == ["get_weather", "get_time"][:parallel]
        for call in turn.calls:
            assert CALL_ID.match(call["id"]), call["id"]
            assert call["id"] not in self.call_ids, "tool-call ids are unique across the conversation"
            self.call_ids.append(call["id"])
            assert isinstance(json.loads(call["arguments"]), dict)
        # Only the first call of a parallel step carries a signature, as Gemini sends it.
        assert turn.calls[0]["signature"], "the first call of each step carries its thought signature"
        assert all(c["signature"] is None for c in turn.calls[1:])
        self.call_signatures.append(turn.calls[0]["signature"])
        self.messages.append(self._kept(turn) if self.keep else rebuilt(turn.content, turn.calls))
        for call in turn.calls:
            self.messages.append(tool_result(call["id"], call["name"], call["arguments"], step))

    def final_answer(self, turn: Turn, steps: int) -> None:
        assert turn.finish_reason == "stop"
        assert not turn.calls
        assert turn.content.startswith(f"Function results after {steps} round(s): ")
        # Every result of this turn reached Gemini as a functionResponse, under its call's name, in order.
        results = [
            json.loads(m["content"]) for m in self.messages[self.turn_start :] if isinstance(m, dict) and m["role"] == "tool"
        ]
        assert len(results) == steps * 2
        summary = turn.content.split(": ", 1)[1]
        assert summary == "; ".join(f"{r['tool']}={compact(r)}" for r in results)
        signature = ((turn.message_extra.get("extra_content") or {}).get("google") or {}).get("thought_signature")
        assert signature, "Gemini 3's answer signature is returned as message.extra_content"
        self.text_signatures.append(signature)
        self.messages.append(self._kept(turn) if self.keep else rebuilt(turn.content, []))

    def _kept(self, turn: Turn) -> Any:
        """The SDK object itself, or (`dump`) its full `model_dump()` with every null and extra field."""
        if self.dump and not isinstance(turn.keep, dict):
            return turn.keep.model_dump()
        return turn.keep


def check_round_trip(fake: Any, gateway: Any, bypasses_before: int, convo: Conversation, requests: int) -> None:
    stats = fake.stats()
    assert stats["errors_returned"] == 0
    assert stats["generate_requests"] == requests
    assert stats["signature_bypasses"] == 0
    assert stats["signatures_reencoded"] == 0
    assert signature_bypasses(gateway) == bypasses_before
    bodies = [r["body"] for r in recorded_generate(fake)]
    # The last request holds the whole history: every step's first call carries its signature, byte for byte.
    last = bodies[-1]
    sent = [p.get("thoughtSignature") for p in function_call_parts(last)]
    firsts = [
        c["parts"][0].get("thoughtSignature")
        for c in last["contents"]
        if c["role"] == "model" and "functionCall" in c["parts"][0]
    ]
    assert firsts == convo.call_signatures
    assert BYPASS not in sent
    # The first turn's text answer went back with its signature (from the client or the store).
    model_texts = [p for c in last["contents"] if c["role"] == "model" for p in c["parts"] if "text" in p]
    assert model_texts and model_texts[0].get("thoughtSignature") == convo.text_signatures[0]


def run_conversation(client: Any, model: str, how: str, keep: bool, dump: bool = False) -> Conversation:
    convo = Conversation(keep, dump)
    convo.user("Plan a day in Lisbon.", tool_steps=5, parallel=2)
    for step in range(5):
        convo.tool_step(one_turn(client, model, convo.messages, how), 2, step)
    convo.final_answer(one_turn(client, model, convo.messages, how), 5)
    convo.user("And the next day?", tool_steps=2, parallel=2)
    for step in range(2):
        convo.tool_step(one_turn(client, model, convo.messages, how), 2, step)
    convo.final_answer(one_turn(client, model, convo.messages, how), 2)
    return convo


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("model", MODELS)
def test_loop_keeping_extra_content(storeless_client, storeless_gateway, fake, model, how):
    before = signature_bypasses(storeless_gateway)
    convo = run_conversation(storeless_client, model, how, keep=True)
    check_round_trip(fake, storeless_gateway, before, convo, requests=9)


@pytest.mark.parametrize("how", ["plain", "helper"])
def test_loop_keeping_full_model_dump(storeless_client, storeless_gateway, fake, how):
    """`messages.append(message.model_dump())`: nulls and SDK-only fields (parsed, parsed_arguments) are tolerated."""
    before = signature_bypasses(storeless_gateway)
    convo = run_conversation(storeless_client, "gemini-3-pro-preview", how, keep=True, dump=True)
    check_round_trip(fake, storeless_gateway, before, convo, requests=9)
    assert any(isinstance(m, dict) and "function_call" in m and m["function_call"] is None for m in convo.messages)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("model", MODELS)
def test_loop_rebuilding_messages_like_langchain(client, gateway, fake, model, how):
    before = signature_bypasses(gateway)
    convo = run_conversation(client, model, how, keep=False)
    check_round_trip(fake, gateway, before, convo, requests=9)
    # Nothing but id/type/name/arguments went back: the store restored every signature.
    for message in convo.messages:
        for call in message.get("tool_calls", ()) if isinstance(message, dict) else ():
            assert set(call) == {"id", "type", "function"}


async def run_conversation_async(client: Any, model: str, how: str, keep: bool) -> Conversation:
    convo = Conversation(keep)
    convo.user("Plan a day in Porto.", tool_steps=5, parallel=2)
    for step in range(5):
        convo.tool_step(await one_turn_async(client, model, convo.messages, how), 2, step)
    convo.final_answer(await one_turn_async(client, model, convo.messages, how), 5)
    convo.user("And the next day?", tool_steps=2, parallel=2)
    for step in range(2):
        convo.tool_step(await one_turn_async(client, model, convo.messages, how), 2, step)
    convo.final_answer(await one_turn_async(client, model, convo.messages, how), 2)
    return convo


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_async_loop_keeping_extra_content(storeless_async_client, storeless_gateway, fake, how):
    before = signature_bypasses(storeless_gateway)
    convo = await run_conversation_async(storeless_async_client, "gemini-3-pro-preview", how, keep=True)
    check_round_trip(fake, storeless_gateway, before, convo, requests=9)


@pytest.mark.anyio
@pytest.mark.parametrize("how", HOW)
async def test_async_loop_rebuilding_messages(async_client, gateway, fake, how):
    before = signature_bypasses(gateway)
    convo = await run_conversation_async(async_client, "gemini-3-flash-preview", how, keep=False)
    check_round_trip(fake, gateway, before, convo, requests=9)


# -- the last resort: the documented bypass value ---------------------------------------------------


def foreign_history(current_turn: bool) -> list[dict[str, Any]]:
    """Tool calls the gateway never saw (ids unknown, no extra_content), e.g. from another model."""
    calls = [
        {"id": "toolu_01A", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "celsius", "days": 1}'}},
        {"id": "toolu_01B", "type": "function", "function": {"name": "get_time", "arguments": '{"timezone": "Europe/Oslo", "options": {"seconds": false, "format": "24h"}}'}},
    ]
    history: list[dict[str, Any]] = [
        {"role": "user", "content": prompt("Weather and time in Oslo?", reply="It is sunny.")},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "toolu_01A", "content": '{"temp": 3}'},
        {"role": "tool", "tool_call_id": "toolu_01B", "content": "09:00"},
    ]
    if not current_turn:
        history += [
            {"role": "assistant", "content": "It is 3 degrees and 09:00 in Oslo."},
            {"role": "user", "content": prompt("Thanks! Anything else?", reply="You are welcome.")},
        ]
    return history


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_calls_in_current_turn_get_the_bypass(client, gateway, fake, stream):
    before = signature_bypasses(gateway)
    answer = client.chat.completions.create(
        model="gemini-3-pro-preview", messages=foreign_history(True), tools=TOOLS, stream=stream
    )
    text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices) if stream else answer.choices[0].message.content
    assert text == "It is sunny."
    stats = fake.stats()
    assert stats["errors_returned"] == 0
    assert stats["signature_bypasses"] == 1  # the first call of the step only
    assert signature_bypasses(gateway) == before + 1
    parts = function_call_parts(fake.last_body())
    assert [p.get("thoughtSignature") for p in parts] == [BYPASS, None]


def test_unknown_calls_in_older_turns_need_no_bypass(client, gateway, fake):
    before = signature_bypasses(gateway)
    answer = client.chat.completions.create(model="gemini-3-pro-preview", messages=foreign_history(False), tools=TOOLS)
    assert answer.choices[0].message.content == "You are welcome."
    stats = fake.stats()
    assert stats["errors_returned"] == 0
    assert stats["signature_bypasses"] == 0
    assert signature_bypasses(gateway) == before
    assert all("thoughtSignature" not in p for p in function_call_parts(fake.last_body()))


def test_dropped_signature_without_store_falls_back_to_bypass(storeless_client, storeless_gateway, fake):
    """Client drops extra_content and the gateway remembers nothing: the bypass keeps the loop alive."""
    before = signature_bypasses(storeless_gateway)
    messages: list[Any] = [{"role": "user", "content": prompt("Go.", tool_steps=2, parallel=1)}]
    for step in range(2):
        turn = turn_from_completion(
            storeless_client.chat.completions.create(model="gemini-3-pro-preview", messages=messages, tools=[WEATHER, CLOCK])
        )
        assert turn.finish_reason == "tool_calls" and turn.calls[0]["signature"]
        messages.append(rebuilt(turn.content, turn.calls))
        messages.append(tool_result(turn.calls[0]["id"], turn.calls[0]["name"], turn.calls[0]["arguments"], step))
    final = storeless_client.chat.completions.create(model="gemini-3-pro-preview", messages=messages, tools=TOOLS)
    assert final.choices[0].message.content.startswith("Function results after 2 round(s)")
    stats = fake.stats()
    assert stats["errors_returned"] == 0
    # The second request had one step to bypass, the third two.
    assert stats["signature_bypasses"] == 3
    assert signature_bypasses(storeless_gateway) == before + 3


@pytest.mark.parametrize("how", HOW)
def test_gemini_25_signatures_round_trip_too(client, fake, how):
    """Gemini 2.5 signs the first part when it thinks with tools; optional to return, but returned byte for byte."""
    messages: list[Any] = [{"role": "user", "content": prompt("Go", tool_steps=2, parallel=2)}]
    sent = []
    for step in range(2):
        turn = one_turn(client, "gemini-2.5-flash", messages, how)
        assert turn.finish_reason == "tool_calls" and turn.calls[0]["signature"]
        assert all(c["signature"] is None for c in turn.calls[1:])
        sent.append(turn.calls[0]["signature"])
        messages.append(rebuilt(turn.content, turn.calls))
        messages += [tool_result(c["id"], c["name"], c["arguments"], step) for c in turn.calls]
    final = one_turn(client, "gemini-2.5-flash", messages, how)
    assert final.content.startswith("Function results after 2 round(s)")
    parts = function_call_parts(fake.last_body())
    assert [p.get("thoughtSignature") for p in parts] == [sent[0], None, sent[1], None]
    stats = fake.stats()
    assert stats["errors_returned"] == 0 and stats["signatures_reencoded"] == 0 and stats["signature_bypasses"] == 0
