"""`extra_body.google.stream_function_call_arguments` (issue 3, "Answers"; seed 003).

On a Vertex upstream the flag becomes `toolConfig.functionCallingConfig.
streamFunctionCallArguments` and Gemini streams `partialArgs`; the gateway
re-emits them as argument deltas the SDK's stream helper reassembles into the
same JSON Gemini signed. The Gemini API refuses the field, so there the flag is
not forwarded and whole arguments arrive.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from app.testing.credentials import write_service_account_file

from .feat_support import (
    BYPASS,
    GET_IMAGE,
    TOOLS,
    WEATHER,
    first_deltas_well_formed,
    function_call_parts,
    function_response_parts,
    prompt,
    rebuilt,
    recorded_generate,
    tool_result,
)

STREAM_ARGS = {"google": {"stream_function_call_arguments": True}}


@pytest.fixture
def vertex_client(make_gateway, fake, tmp_path):
    path = write_service_account_file(tmp_path / "sa.json", token_uri=fake.url + "/token")
    gateway = make_gateway(
        upstreams=[
            {
                "name": "vx",
                "type": "vertex",
                "project": "fake-project",
                "location": "us-central1",
                "base_url": fake.url,
                "credentials_file": str(path),
            }
        ]
    )
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=30) as client:
        yield client


def _tool_config(body: dict[str, Any]) -> dict[str, Any]:
    return (body.get("toolConfig") or {}).get("functionCallingConfig") or {}


def _stream_helper(client: Any, model: str, messages: list[Any], **kwargs: Any) -> tuple[list[Any], Any]:
    with client.chat.completions.stream(model=model, messages=messages, tools=TOOLS, **kwargs) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    return events, final


@pytest.mark.parametrize("model", ["gemini-3-pro-preview", "gemini-3.1-pro-preview"])
def test_vertex_streams_argument_deltas(vertex_client, fake, model):
    messages: list[Any] = [{"role": "user", "content": prompt("What is the weather like in Boston and New Delhi?", tool_steps=2, parallel=2)}]
    whole = vertex_client.chat.completions.create(model=model, messages=messages, tools=TOOLS, extra_body=STREAM_ARGS)
    assert "streamFunctionCallArguments" not in _tool_config(fake.last_body())  # not streamed: nothing to stream
    expected = [json.loads(c.function.arguments) for c in whole.choices[0].message.tool_calls]

    for step in range(2):
        events, final = _stream_helper(vertex_client, model, messages, extra_body=STREAM_ARGS)
        record = recorded_generate(fake)[-1]
        assert record["backend"] == "vertex" and record["stream"]
        assert _tool_config(record["body"]) == {"mode": "AUTO", "streamFunctionCallArguments": True}
        chunks = [e.chunk for e in events if e.type == "chunk"]
        first_deltas_well_formed(chunks)
        deltas = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
        assert {e.index for e in deltas} == {0, 1}
        assert len(deltas) >= 6  # the arguments arrived in pieces
        done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
        assert [e.index for e in done] == [0, 1]
        calls = final.choices[0].message.tool_calls
        assert final.choices[0].finish_reason == "tool_calls"
        args = [json.loads(c.function.arguments) for c in calls]
        if step == 0:
            assert args == expected  # same JSON as the whole-arguments answer
        assert [c.function.parsed_arguments for c in calls] == args
        assert calls[0].model_extra["extra_content"]["google"]["thought_signature"]
        # Rebuilt like LangChain: the reassembled arguments must be the ones Gemini signed.
        messages.append(rebuilt(None, [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments} for c in calls]))
        messages += [tool_result(c.id, c.function.name, c.function.arguments, step) for c in calls]
    answer = vertex_client.chat.completions.create(model=model, messages=messages, tools=TOOLS, extra_body=STREAM_ARGS)
    assert answer.choices[0].message.content.startswith("Function results after 2 round(s)")
    stats = fake.stats()
    assert stats["errors_returned"] == 0
    assert stats["signature_bypasses"] == 0 and stats["signatures_reencoded"] == 0
    assert BYPASS not in [p.get("thoughtSignature") for p in function_call_parts(fake.last_body())]


def test_raw_argument_deltas_concatenate_to_json(vertex_client, fake):
    messages = [{"role": "user", "content": prompt("Time?", tool_steps=1, parallel=2)}]
    chunks = list(vertex_client.chat.completions.create(
        model="gemini-3-flash-preview", messages=messages, tools=TOOLS, extra_body=STREAM_ARGS, stream=True
    ))
    first_deltas_well_formed(chunks)
    pieces: dict[int, list[str]] = {}
    for chunk in chunks:
        for tc in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            pieces.setdefault(tc.index, []).append(tc.function.arguments or "")
    assert sorted(pieces) == [0, 1]
    assert all(len([p for p in parts if p]) > 1 for parts in pieces.values())
    time_args = json.loads("".join(pieces[1]))
    assert set(time_args) == {"timezone", "options"} and isinstance(time_args["options"]["seconds"], bool)


def test_gemini_api_does_not_get_the_flag(client, fake):
    messages = [{"role": "user", "content": prompt("Weather?", tool_steps=1, parallel=2)}]
    events, final = _stream_helper(client, "gemini-3-pro-preview", messages, extra_body=STREAM_ARGS)
    body = fake.last_body()
    assert "streamFunctionCallArguments" not in _tool_config(body)
    deltas = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    assert [e.index for e in deltas] == [0, 1]  # one whole-arguments delta per call
    for delta, call in zip(deltas, final.choices[0].message.tool_calls, strict=True):
        assert json.loads(delta.arguments_delta) == json.loads(call.function.arguments)
    assert fake.stats()["errors_returned"] == 0


def test_flag_without_tools_is_a_400(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gemini-3-pro-preview", messages=[{"role": "user", "content": "x"}], extra_body=STREAM_ARGS, stream=True
        )
    assert info.value.body["param"] == "extra_body.google.stream_function_call_arguments"
    assert fake.stats()["generate_requests"] == 0


def test_seed_multimodal_function_response_on_vertex(vertex_client, fake):
    """The seed's request shape (gs:// file in `extra_content.google.parts` of a tool message) on Vertex."""
    get_image = GET_IMAGE
    messages: list[Any] = [{"role": "user", "content": prompt("Show me the green shirt I ordered last month.", tool_steps=1)}]
    first = vertex_client.chat.completions.create(model="gemini-3.1-pro-preview", messages=messages, tools=[get_image])
    call = first.choices[0].message.tool_calls[0]
    messages.append(first.choices[0].message)
    messages.append({
        "role": "tool",
        "tool_call_id": call.id,
        "content": '{"image_ref":{"$ref":"dress.jpg"}}',
        "extra_content": {"google": {"parts": [{"file_data": {
            "mime_type": "image/jpg", "display_name": "dress.jpg",
            "file_uri": "gs://cloud-samples-data/generative-ai/image/dress.jpg",
        }}]}},
    })
    final = vertex_client.chat.completions.create(model="gemini-3.1-pro-preview", messages=messages, tools=[get_image])
    assert final.choices[0].finish_reason == "stop"
    [response] = function_response_parts(fake.last_body())
    assert response["response"] == {"image_ref": {"$ref": "dress.jpg"}}
    assert response["parts"] == [{"fileData": {
        "mimeType": "image/jpg", "displayName": "dress.jpg", "fileUri": "gs://cloud-samples-data/generative-ai/image/dress.jpg",
    }}]
    assert fake.stats()["errors_returned"] == 0


def test_vertex_rebuilt_loop_with_weather_only(vertex_client, fake):
    """A plain (non-streamed) Vertex tool loop, messages rebuilt: the store restores signatures there too."""
    messages: list[Any] = [{"role": "user", "content": prompt("Go", tool_steps=3)}]
    for step in range(3):
        completion = vertex_client.chat.completions.create(model="gemini-3-pro-preview", messages=messages, tools=[WEATHER])
        [call] = completion.choices[0].message.tool_calls
        messages.append(rebuilt(None, [{"id": call.id, "name": call.function.name, "arguments": call.function.arguments}]))
        messages.append(tool_result(call.id, call.function.name, call.function.arguments, step))
    final = vertex_client.chat.completions.create(model="gemini-3-pro-preview", messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content.startswith("Function results after 3 round(s)")
    stats = fake.stats()
    assert stats["errors_returned"] == 0 and stats["signature_bypasses"] == 0 and stats["signatures_reencoded"] == 0
