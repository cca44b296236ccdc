"""Tools end to end (issue 3, "Tools"): declarations, tool_choice, answers, history, streaming shapes.

Requests go through the real gateway with the openai SDK; what reached Gemini
is read back from the fake's request log.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from app.testing.fake_gemini.extras import PNG_BASE64
from gateway_harness import signature_bypasses

from .feat_support import (
    CALL_ID,
    CLOCK,
    GET_IMAGE,
    TOOLS,
    WEATHER,
    accumulate,
    declarations,
    first_deltas_well_formed,
    function_call_parts,
    function_response_parts,
    prompt,
    rebuilt,
    tool_result,
    turn_from_completion,
)

PNG_URL = "data:image/png;base64," + PNG_BASE64


def function_config(body: dict[str, Any]) -> dict[str, Any] | None:
    return (body.get("toolConfig") or {}).get("functionCallingConfig")


# -- answers: ids, finish reasons, streaming shape ---------------------------------------------------


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-pro-preview"])
@pytest.mark.parametrize("gemini_ids", [False, True])
def test_tool_call_ids_and_finish_reason(client, fake, model, gemini_ids):
    directive = {"tool_steps": 1, "parallel": 2, "call_ids": gemini_ids}
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt("Weather?", **directive)}], tools=TOOLS
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"  # Gemini said STOP
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert all(CALL_ID.match(c.id) and c.type == "function" for c in calls)
    assert len({c.id for c in calls}) == 2
    args = json.loads(calls[0].function.arguments)
    assert set(args) == {"city", "unit", "days"} and args["unit"] in ("celsius", "fahrenheit")
    # The ids stay what the client echoes back: the gateway maps them to names and order.
    messages = [
        {"role": "user", "content": prompt("Weather?", **directive)},
        choice.message,
        tool_result(calls[1].id, "get_time", calls[1].function.arguments, 0),  # out of order on purpose
        tool_result(calls[0].id, "get_weather", calls[0].function.arguments, 0),
    ]
    final = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    assert final.choices[0].finish_reason == "stop"
    responses = function_response_parts(fake.last_body())
    assert [r["name"] for r in responses] == ["get_weather", "get_time"]  # call order, not message order
    assert responses[0]["response"]["tool"] == "get_weather"
    assert fake.stats()["errors_returned"] == 0


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-flash-preview"])
def test_streamed_parallel_calls(client, fake, model):
    messages = [{"role": "user", "content": prompt("Both please", tool_steps=1, parallel=3)}]
    whole = client.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    chunks = list(client.chat.completions.create(model=model, messages=messages, tools=TOOLS, stream=True))
    first_deltas_well_formed(chunks)
    turn = accumulate(chunks)
    assert turn.finish_reason == "tool_calls"
    assert [c["name"] for c in turn.calls] == ["get_weather", "get_time", "get_weather"]
    assert all(CALL_ID.match(c["id"]) for c in turn.calls)
    # Same arguments as the non-streamed answer (the fake synthesizes them deterministically).
    assert [json.loads(c["arguments"]) for c in turn.calls] == [
        json.loads(c.function.arguments) for c in whole.choices[0].message.tool_calls
    ]
    # The finish reason comes on its own closing chunk, after every call delta (as OpenAI sends it).
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].delta.tool_calls is None
    assert all(c.choices[0].finish_reason is None for c in chunks if c.choices and c.choices[0].delta.tool_calls)


def test_stream_helper_with_parallel_calls_across_chunks(client, fake):
    """Calls whose arguments arrive in pieces (partialArgs), one after the other: running index, valid JSON."""
    messages = [{"role": "user", "content": prompt("Go", tool_steps=1, parallel=2, partial_args=True)}]
    with client.chat.completions.stream(model="gemini-3-pro-preview", messages=messages, tools=TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    chunks = [e.chunk for e in events if e.type == "chunk"]
    first_deltas_well_formed(chunks)
    argument_deltas = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    assert len(argument_deltas) > 4  # pieces, not whole arguments
    assert {e.index for e in argument_deltas} == {0, 1}
    done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert [(e.index, e.name) for e in done] == [(0, "get_weather"), (1, "get_time")]
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    whole = client.chat.completions.create(
        model="gemini-3-pro-preview",
        messages=[{"role": "user", "content": prompt("Go", tool_steps=1, parallel=2)}],
        tools=TOOLS,
    )
    expected = [json.loads(c.function.arguments) for c in whole.choices[0].message.tool_calls]
    assert [json.loads(c.function.arguments) for c in calls] == expected
    assert [c.function.parsed_arguments for c in calls] == expected
    # The reassembled arguments are what Gemini signed: the next step is accepted without a bypass.
    follow = messages + [rebuilt(None, [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in calls])]
    follow += [tool_result(c.id, c.function.name, c.function.arguments, 0) for c in calls]
    answer = client.chat.completions.create(model="gemini-3-pro-preview", messages=follow, tools=TOOLS)
    assert answer.choices[0].message.content.startswith("Function results after 1 round(s)")
    stats = fake.stats()
    assert stats["errors_returned"] == 0 and stats["signature_bypasses"] == 0 and stats["signatures_reencoded"] == 0


# -- declarations ------------------------------------------------------------------------------------


def test_names_gemini_rejects_are_renamed_and_restored(client, fake):
    long_name = "7" + "x" * 63  # a valid OpenAI name (64 characters) that needs a prefix
    odd = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
        for name in ("9lives", "-dash", "_9lives", long_name)
    ]
    messages: list[Any] = [{"role": "user", "content": prompt("Call them all", tool_steps=1, parallel=4)}]
    first = client.chat.completions.create(model="gemini-3-pro-preview", messages=messages, tools=odd)
    sent = [d["name"] for d in declarations(fake.last_body())]
    assert sent[0] == "_9lives" and sent[1] == "_-dash" and sent[2] not in ("_9lives",)
    assert len(sent[3]) <= 64 and len(set(sent)) == 4
    assert all(n[0].isalpha() or n[0] == "_" for n in sent)
    calls = first.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["9lives", "-dash", "_9lives", long_name]
    # History: the original names go back and are renamed the same way.
    messages.append(first.choices[0].message)
    messages += [tool_result(c.id, c.function.name, c.function.arguments, 0) for c in calls]
    final = client.chat.completions.create(model="gemini-3-pro-preview", messages=messages, tools=odd)
    body = fake.last_body()
    assert [p["functionCall"]["name"] for p in function_call_parts(body)] == sent
    assert [r["name"] for r in function_response_parts(body)] == sent
    assert final.choices[0].finish_reason == "stop"
    # A named tool_choice is renamed too.
    client.chat.completions.create(
        model="gemini-3-pro-preview",
        messages=[{"role": "user", "content": "pick"}],
        tools=odd,
        tool_choice={"type": "function", "function": {"name": "9lives"}},
    )
    assert function_config(fake.last_body()) == {"mode": "ANY", "allowedFunctionNames": ["_9lives"]}
    assert fake.stats()["errors_returned"] == 0


def test_tools_without_arguments_are_declared_without_parameters(client, fake):
    tools = [
        {"type": "function", "function": {"name": "now", "description": "The time."}},
        {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "reset", "parameters": {"type": "object", "properties": {}, "additionalProperties": False, "required": []}, "strict": True}},
        WEATHER,
    ]
    completion = client.chat.completions.create(
        model="gemini-3-pro-preview", messages=[{"role": "user", "content": prompt("x", tool_steps=1, parallel=3)}], tools=tools
    )
    decls = declarations(fake.last_body())
    assert decls[0] == {"name": "now", "description": "The time."}
    assert decls[1] == {"name": "ping"}
    assert decls[2] == {"name": "reset"}
    assert "parametersJsonSchema" in decls[3] and "parameters" not in decls[3]
    calls = completion.choices[0].message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [("now", "{}"), ("ping", "{}"), ("reset", "{}")]


class _Lookup(BaseModel):
    key: str
    limit: int


def test_strict_tools_are_accepted(client, fake):
    tool = openai.pydantic_function_tool(_Lookup)
    assert tool["function"]["strict"] is True
    completion = client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": prompt("x", tool_steps=1)}], tools=[tool]
    )
    decl = declarations(fake.last_body())[0]
    assert decl["name"] == "_Lookup"
    assert decl["parametersJsonSchema"]["properties"]["key"]["type"] == "string"
    assert set(json.loads(completion.choices[0].message.tool_calls[0].function.arguments)) == {"key", "limit"}




# -- tool_choice -------------------------------------------------------------------------------------

_ONLY_TIME = {"type": "function", "function": {"name": "get_time"}}


@pytest.mark.parametrize(
    "tool_choice, directive, config, declared, called",
    [
        ("auto", {"tool_steps": 1}, {"mode": "AUTO"}, ["get_weather", "get_time"], ["get_weather"]),
        ("none", {"tool_steps": 1}, {"mode": "NONE"}, ["get_weather", "get_time"], []),
        ("required", {}, {"mode": "ANY"}, ["get_weather", "get_time"], ["get_weather"]),
        (
            {"type": "function", "function": {"name": "get_time"}},
            {},
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
            ["get_weather", "get_time"],
            ["get_time"],
        ),
        (
            {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [_ONLY_TIME]}},
            {},
            {"mode": "ANY", "allowedFunctionNames": ["get_time"]},
            ["get_weather", "get_time"],
            ["get_time"],
        ),
        (
            {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [_ONLY_TIME]}},
            {"tool_steps": 1},
            {"mode": "AUTO"},
            ["get_time"],
            ["get_time"],
        ),
    ],
    ids=["auto", "none", "required", "named", "allowed-required", "allowed-auto"],
)
@pytest.mark.parametrize("stream", [False, True])
def test_tool_choice(client, fake, tool_choice, directive, config, declared, called, stream):
    messages = [{"role": "user", "content": prompt("What now?", **directive)}]
    if stream:
        turn = accumulate(list(client.chat.completions.create(
            model="gemini-3-pro-preview", messages=messages, tools=TOOLS, tool_choice=tool_choice, stream=True
        )))
    else:
        turn = turn_from_completion(client.chat.completions.create(
            model="gemini-3-pro-preview", messages=messages, tools=TOOLS, tool_choice=tool_choice
        ))
    body = fake.last_body()
    assert function_config(body) == config
    assert [d["name"] for d in declarations(body)] == declared
    assert [c["name"] for c in turn.calls] == called
    assert turn.finish_reason == ("tool_calls" if called else "stop")
    if not called:
        assert turn.content == "Echo: What now?"


def test_tool_choice_naming_an_undeclared_function_is_a_400(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gemini-2.5-flash",
            messages=[{"role": "user", "content": "x"}],
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "launch"}},
        )
    assert info.value.body["param"] == "tool_choice" and "launch" in info.value.body["message"]
    assert fake.stats()["generate_requests"] == 0


# -- deprecated functions / function_call ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_deprecated_functions_loop(client, fake, gateway, stream):
    functions = [WEATHER["function"], CLOCK["function"]]
    before = signature_bypasses(gateway)
    messages: list[Any] = [{"role": "user", "content": prompt("Legacy agent", tool_steps=2, parallel=1)}]
    for step in range(2):
        kwargs: dict[str, Any] = dict(model="gemini-3-pro-preview", messages=messages, functions=functions, function_call="auto")
        if stream:
            chunks = list(client.chat.completions.create(**kwargs, stream=True))
            deltas = [c.choices[0].delta.function_call for c in chunks if c.choices and c.choices[0].delta.function_call]
            assert deltas and deltas[0].name
            name, arguments = deltas[0].name, "".join(d.arguments or "" for d in deltas)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            assert finish == ["function_call"]
            assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
        else:
            completion = client.chat.completions.create(**kwargs)
            message = completion.choices[0].message
            assert completion.choices[0].finish_reason == "function_call"
            assert message.tool_calls is None and message.function_call is not None
            name, arguments = message.function_call.name, message.function_call.arguments
        # The fake calls the declared functions in turn: get_weather, then get_time.
        assert name == ["get_weather", "get_time"][step]
        assert set(json.loads(arguments)) == [{"city", "unit", "days"}, {"timezone", "options"}][step]
        # Rebuilt without extra_content: the gateway restores the signature itself.
        messages.append({"role": "assistant", "content": None, "function_call": {"name": name, "arguments": arguments}})
        messages.append({"role": "function", "name": name, "content": json.dumps({"step": step})})
    final = client.chat.completions.create(model="gemini-3-pro-preview", messages=messages, functions=functions)
    assert final.choices[0].message.content == 'Function results after 2 round(s): get_weather={"step":0}; get_time={"step":1}'
    stats = fake.stats()
    assert stats["errors_returned"] == 0 and stats["signature_bypasses"] == 0 and stats["signatures_reencoded"] == 0
    assert signature_bypasses(gateway) == before


def test_deprecated_function_call_named_and_none(client, fake):
    functions = [WEATHER["function"], CLOCK["function"]]
    named = client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "time?"}], functions=functions,
        function_call={"name": "get_time"},
    )
    assert function_config(fake.last_body()) == {"mode": "ANY", "allowedFunctionNames": ["get_time"]}
    assert named.choices[0].message.function_call.name == "get_time"
    assert named.choices[0].finish_reason == "function_call"
    none = client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": prompt("hi", tool_steps=1)}], functions=functions,
        function_call="none",
    )
    assert function_config(fake.last_body()) == {"mode": "NONE"}
    assert none.choices[0].message.function_call is None and none.choices[0].finish_reason == "stop"


# -- refusals ----------------------------------------------------------------------------------------


def test_custom_tools_are_a_400_naming_them(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gemini-2.5-flash",
            messages=[{"role": "user", "content": "x"}],
            tools=[WEATHER, {"type": "custom", "custom": {"name": "grammar_tool", "description": "free text"}}],
        )
    error = info.value.body
    assert info.value.status_code == 400
    assert error["param"] == "tools[1].type"
    assert "custom" in error["message"]
    assert info.value.type == "invalid_request_error"
    assert fake.stats()["generate_requests"] == 0


def test_invalid_json_arguments_in_history_are_a_400_naming_the_message(client, fake):
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"timezone": "UTC",'}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        {"role": "tool", "tool_call_id": "call_2", "content": "ok"},
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=TOOLS)
    assert info.value.body["param"] == "messages[1].tool_calls[1].function.arguments"
    assert "messages[1].tool_calls[1].function.arguments" in info.value.body["message"]
    assert fake.stats()["generate_requests"] == 0


# -- multimodal tool results -------------------------------------------------------------------------


def _first_step(client: Any, model: str, tools: list[Any], text: str) -> tuple[list[Any], Any]:
    messages: list[Any] = [{"role": "user", "content": prompt(text, tool_steps=1)}]
    completion = client.chat.completions.create(model=model, messages=messages, tools=tools)
    call = completion.choices[0].message.tool_calls[0]
    messages.append(completion.choices[0].message)
    return messages, call


def test_tool_result_with_text_and_image_parts_on_gemini_3(client, fake):
    messages, call = _first_step(client, "gemini-3-pro-preview", [WEATHER], "Show the radar")
    messages.append({
        "role": "tool",
        "tool_call_id": call.id,
        "content": [{"type": "text", "text": "Radar image attached."}, {"type": "image_url", "image_url": {"url": PNG_URL}}],
    })
    final = client.chat.completions.create(model="gemini-3-pro-preview", messages=messages, tools=[WEATHER])
    [response] = function_response_parts(fake.last_body())
    assert response["name"] == "get_weather"
    assert response["parts"] == [{"inlineData": {"mimeType": "image/png", "data": PNG_BASE64, "displayName": "attachment_1"}}]
    assert response["response"] == {"output": "Radar image attached.", "attachments": [{"$ref": "attachment_1"}]}
    assert final.choices[0].message.content.startswith("Function results after 1 round(s): get_weather=")
    assert fake.stats()["errors_returned"] == 0


def test_tool_result_with_image_parts_before_gemini_3(client, fake):
    """Models without multimodal function responses get the image as a sibling part of the same turn."""
    messages, call = _first_step(client, "gemini-2.5-flash", [WEATHER], "Show the radar")
    messages.append({
        "role": "tool",
        "tool_call_id": call.id,
        "content": [{"type": "text", "text": "Radar:"}, {"type": "image_url", "image_url": {"url": PNG_URL}}],
    })
    client.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=[WEATHER])
    last_turn = fake.last_body()["contents"][-1]
    assert last_turn["role"] == "user"
    assert last_turn["parts"][0]["functionResponse"] == {"name": "get_weather", "response": {"output": "Radar:"}}
    assert last_turn["parts"][1]["inlineData"]["data"] == PNG_BASE64
    assert fake.stats()["errors_returned"] == 0


def test_google_extra_content_parts_on_tool_messages(client, fake):
    """The multimodal function response of Google's own layer (seed 003), sent through the openai SDK."""
    get_image = GET_IMAGE
    messages, call = _first_step(client, "gemini-3-pro-preview", [get_image], "Show me the green shirt I ordered last month.")
    messages.append({
        "role": "tool",
        "tool_call_id": call.id,
        "content": '{"image_ref":{"$ref":"dress.jpg"}}',
        "extra_content": {"google": {"parts": [
            {"file_data": {"mime_type": "image/jpeg", "display_name": "dress.jpg", "file_uri": "https://example.com/dress.jpg"}},
            {"inline_data": {"mime_type": "image/png", "display_name": "thumb.png", "data": PNG_BASE64}},
        ]}},
    })
    final = client.chat.completions.create(model="gemini-3-pro-preview", messages=messages, tools=[get_image])
    [response] = function_response_parts(fake.last_body())
    assert response["response"] == {"image_ref": {"$ref": "dress.jpg"}}
    assert response["parts"] == [
        {"fileData": {"mimeType": "image/jpeg", "displayName": "dress.jpg", "fileUri": "https://example.com/dress.jpg"}},
        {"inlineData": {"mimeType": "image/png", "displayName": "thumb.png", "data": PNG_BASE64}},
    ]
    assert final.choices[0].finish_reason == "stop"
    assert base64.b64decode(response["parts"][1]["inlineData"]["data"]).startswith(b"\x89PNG")
    assert fake.stats()["errors_returned"] == 0


def test_every_call_needs_its_result(client, fake):
    messages, call = _first_step(client, "gemini-2.5-flash", TOOLS, "x")
    messages[-1] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}},
            {"id": "call_second", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    }
    messages.append(tool_result(call.id, call.function.name, call.function.arguments, 0))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gemini-2.5-flash", messages=messages, tools=TOOLS)
    assert info.value.body["param"] == "messages[1].tool_calls"
    assert "call_second" in info.value.body["message"]
    assert fake.stats()["generate_requests"] == 1


def test_streamed_calls_of_several_choices_index_per_choice(client, fake):
    chunks = list(client.chat.completions.create(
        model="gemini-2.5-flash",
        messages=[{"role": "user", "content": prompt("x", tool_steps=1, parallel=2)}],
        tools=TOOLS,
        n=2,
        stream=True,
    ))
    per_choice: dict[int, list[Any]] = {}
    finish: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            per_choice.setdefault(choice.index, []).extend(choice.delta.tool_calls or ())
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert finish == {0: "tool_calls", 1: "tool_calls"}
    for calls in per_choice.values():
        assert [c.index for c in calls] == [0, 1]
        assert [c.function.name for c in calls] == ["get_weather", "get_time"]
        assert all(CALL_ID.match(c.id) for c in calls)
    assert len({c.id for calls in per_choice.values() for c in calls}) == 4
