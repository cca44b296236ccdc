"""`/v1/responses` end to end: openai-python's `responses.create`, `.stream`, `.parse`, `.retrieve`,
`.delete` and `input_items.list` against the gateway in front of the fake Gemini, and what reached Gemini.

(Tool loops with Gemini 3 thought signatures: tests/features/test_feat_responses_loops.py.)
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from .api_helpers import assert_openai_error

MODEL = "gemini-2.5-flash"
G3 = "gemini-3-flash-preview"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
PDF = base64.b64encode(b"%PDF-1.4 tiny").decode()
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "strict": True,
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
}


def directive(text: str, **fake: Any) -> str:
    return f"{text}\n#fake {json.dumps(fake)}" if fake else text


def typed_events(body: bytes) -> list[dict[str, Any]]:
    """`event: <type>` + `data: <json>` blocks; the two types agree."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        kind, data = block.split("\n")
        event = json.loads(data.removeprefix("data: "))
        assert kind == f"event: {event['type']}"
        events.append(event)
    return events


class City(BaseModel):
    name: str
    population: int
    tags: list[str]


# -- responses.create ------------------------------------------------------------------------------------------


def test_create_with_a_string(client, fake):
    r = client.responses.create(model=MODEL, input="Hello there", instructions="Be kind.")
    assert r.id.startswith("resp_") and len(r.id) == 53
    assert (r.object, r.status, r.model, r.error, r.incomplete_details) == ("response", "completed", MODEL, None, None)
    assert r.output_text == "Echo: Hello there"
    [message] = r.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert r.instructions == "Be kind." and r.store is True and r.tool_choice == "auto" and r.tools == []
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens >= r.usage.input_tokens + r.usage.output_tokens
    body = fake.last_body()
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello there"}]}]
    assert body["systemInstruction"] == {"parts": [{"text": "Be kind."}]}



def test_response_ids_sort_by_the_millisecond_they_were_made_in(monkeypatch):
    """Ids made later sort later (the store's index grows at its end); the rest of an id stays random."""
    from app.api import responses

    clock = iter([1_765_000_000_000_000_000 + n * 1_000_000 for n in (0, 0, 1, 2)])
    monkeypatch.setattr(responses.time, "time_ns", lambda: next(clock))
    ids = [responses.new_response_id() for _ in range(4)]
    assert all(len(i) == 53 and int(i[5:], 16) >= 0 for i in ids)
    assert len(set(ids)) == 4 and ids[0][:17] == ids[1][:17]
    assert ids[1] < ids[2] < ids[3] and ids[0] < ids[2]

def test_create_with_message_items(client, fake):
    r = client.responses.create(
        model=MODEL,
        instructions="First.",
        input=[
            {"role": "developer", "content": "Second."},
            {"role": "user", "content": "Where?"},
            {"role": "assistant", "content": "Lyon."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Why Lyon?"}]},
        ],
    )
    assert r.output_text == "Echo: Why Lyon?"
    body = fake.last_body()
    assert body["systemInstruction"] == {"parts": [{"text": "First."}, {"text": "Second."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]


def test_usage_reports_cached_and_reasoning_tokens(client, fake):
    r = client.responses.create(
        model=MODEL, input=directive("Count", usage={"cachedContentTokenCount": 7, "thoughtsTokenCount": 11}),
    )
    assert r.usage.input_tokens_details.cached_tokens == 7
    assert r.usage.output_tokens_details.reasoning_tokens == 11
    meta = fake.requests()[-1]
    assert meta["status"] == 200
    assert r.usage.output_tokens > 11


def test_generation_parameters_reach_gemini(client, fake):
    r = client.responses.create(
        model=MODEL, input="Params", max_output_tokens=500, temperature=0.2, top_p=0.7,
        metadata={"team": "core"}, parallel_tool_calls=False, user="u-1",
    )  # fmt: skip
    gen = fake.last_body()["generationConfig"]
    assert (gen["maxOutputTokens"], gen["temperature"], gen["topP"]) == (500, 0.2, 0.7)
    assert "labels" not in fake.last_body()  # (metadata becomes labels on Vertex only)
    assert (r.max_output_tokens, r.temperature, r.top_p, r.metadata, r.parallel_tool_calls) == (500, 0.2, 0.7, {"team": "core"}, False)


def test_reasoning_effort_and_summary(client, fake):
    r = client.responses.create(
        model=G3, input=directive("Think", thoughts="Weighing the options."), reasoning={"effort": "low", "summary": "auto"}
    )
    assert fake.last_body()["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "LOW", "includeThoughts": True}
    reasoning, message = r.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [s.text for s in reasoning.summary] == ["Weighing the options."]
    assert message.type == "message" and r.output_text == "Echo: Think"
    assert r.usage.output_tokens_details.reasoning_tokens > 0
    assert r.reasoning.effort == "low" and r.reasoning.summary == "auto"


def test_reasoning_effort_on_a_budget_model(client, fake):
    client.responses.create(model=MODEL, input="Think", reasoning={"effort": "medium"})
    assert fake.last_body()["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 8192}


def test_max_output_tokens_makes_an_incomplete_response(client, fake):
    r = client.responses.create(model=MODEL, input=directive("Long", finish_reason="MAX_TOKENS", reply="Cut"), max_output_tokens=16)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].status == "incomplete" and r.output_text == "Cut"


def test_safety_stop_is_incomplete_with_content_filter(client, fake):
    r = client.responses.create(model=MODEL, input=directive("Risky", finish_reason="SAFETY"))
    assert r.status == "incomplete" and r.incomplete_details.reason == "content_filter"


def test_blocked_prompt_is_a_400(strict_client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        strict_client.responses.create(model=MODEL, input=directive("Bad", block_prompt="SAFETY"))
    assert info.value.code == "content_filter" and info.value.param == "input"


def test_json_schema_and_json_object(client, fake):
    schema = City.model_json_schema()
    schema["additionalProperties"] = False
    r = client.responses.create(
        model=MODEL, input="A city", text={"format": {"type": "json_schema", "name": "City", "schema": schema, "strict": True}}
    )
    City.model_validate_json(r.output_text)
    gen = fake.last_body()["generationConfig"]
    assert gen["responseMimeType"] == "application/json" and gen["responseJsonSchema"]["required"] == ["name", "population", "tags"]
    assert r.text.format.type == "json_schema" and r.text.format.name == "City"
    r = client.responses.create(model=MODEL, input="Anything", text={"format": {"type": "json_object"}})
    assert json.loads(r.output_text) == {"echo": "Anything"}
    assert "responseJsonSchema" not in fake.last_body()["generationConfig"]


def test_parse_with_a_pydantic_model(client, fake):
    r = client.responses.parse(model=MODEL, input="A city", text_format=City)
    assert isinstance(r.output_parsed, City)
    assert r.output_parsed.population >= 0 and r.output_parsed.tags


def test_function_tools_and_choice(client, fake):
    r = client.responses.create(
        model=MODEL, input=directive("Weather?", tool_steps=1), tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"}
    )
    [call] = r.output
    assert call.type == "function_call" and call.call_id.startswith("call_") and call.id.startswith("fc_")
    assert call.name == "get_weather" and set(json.loads(call.arguments)) == {"city", "unit"}
    body = fake.last_body()
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    assert body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["required"] == ["city", "unit"]


def test_parse_gives_parsed_arguments_of_strict_tools(client, fake):
    r = client.responses.parse(model=MODEL, input=directive("Weather?", tool_steps=1), tools=[WEATHER])
    [call] = r.output
    assert call.parsed_arguments == json.loads(call.arguments)


def test_web_search_gives_url_citations(client, fake):
    r = client.responses.create(model=MODEL, input=directive("Cafes?", grounding=True), tools=[{"type": "web_search"}],
                                include=["web_search_call.action.sources"])  # fmt: skip
    assert {"googleSearch": {}} in fake.last_body()["tools"]
    message, search = r.output
    text = message.content[0].text
    annotations = message.content[0].annotations
    assert annotations and all(a.type == "url_citation" and a.url.startswith("https://") for a in annotations)
    first = annotations[0]
    assert 0 <= first.start_index < first.end_index <= len(text)
    assert text.startswith("Paris has many cafés.") and first.end_index == len("Paris has many cafés.")  # characters, not bytes
    assert search.type == "web_search_call" and search.status == "completed" and search.action.query
    assert search.action.sources and search.action.sources[0].url.startswith("https://")


def test_images_and_files_go_to_gemini_inline(client, fake):
    client.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "Look"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "high"},
            {"type": "input_file", "filename": "doc.pdf", "file_data": f"data:application/pdf;base64,{PDF}"},
        ]}],
    )  # fmt: skip
    body = fake.last_body()
    parts = body["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    assert parts[2] == {"inlineData": {"mimeType": "application/pdf", "data": PDF}}
    assert body["generationConfig"]["mediaResolution"] == "MEDIA_RESOLUTION_HIGH"


# -- streaming ---------------------------------------------------------------------------------------------------


def test_stream_wire_format(raw, fake):
    r = raw.post("/v1/responses", json={"model": MODEL, "input": directive("Stream this text please", chunks=4), "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert b"[DONE]" not in r.content
    events = typed_events(r.content)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]  # fmt: skip
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) == 4 and "".join(deltas) == "Echo: Stream this text please"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["usage"]["output_tokens"] > 0
    assert {e["response"]["id"] for e in events if "response" in e} == {final["id"]}


def test_stream_helper_accumulates_the_final_response(client, fake):
    with client.responses.stream(model=MODEL, input=directive("Many words to stream here", chunks=5)) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Echo: Many words to stream here"
    assert final.status == "completed" and final.usage.total_tokens > 0


@pytest.mark.anyio
async def test_async_stream_with_tools_and_reasoning(async_client, fake):
    async with async_client.responses.stream(
        model=G3, input=directive("Weather?", tool_steps=1, thoughts="Need the tool."), tools=[WEATHER],
        reasoning={"summary": "auto"},
    ) as stream:  # fmt: skip
        events = [e async for e in stream]
        final = await stream.get_final_response()
    types = [e.type for e in events]
    assert "response.reasoning_summary_text.delta" in types and "response.function_call_arguments.done" in types
    reasoning, call = final.output
    assert reasoning.summary[0].text == "Need the tool."
    assert call.type == "function_call" and call.parsed_arguments == json.loads(call.arguments)
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done[0].arguments == call.arguments


def test_stream_parse_with_a_pydantic_model(client, fake):
    with client.responses.stream(model=MODEL, input="A city", text_format=City) as stream:
        final = stream.get_final_response()
    assert isinstance(final.output_parsed, City)


def test_stream_create_iterates_typed_events(client, fake):
    events = list(client.responses.create(model=MODEL, input="Hi", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Echo: Hi"


def test_mid_stream_error_is_response_failed_then_an_error(strict_raw, strict_client, fake):
    body = {"model": MODEL, "input": directive("Fail later in the stream", chunks=4, chunk_delay_ms=30, error={"status": 503, "after_chunks": 2}),
            "stream": True}  # fmt: skip
    events = typed_events(strict_raw.post("/v1/responses", json=body).content)
    assert [e["type"] for e in events[-2:]] == ["response.failed", "error"]
    assert events[-2]["response"]["status"] == "failed" and events[-2]["response"]["error"]["message"]
    with pytest.raises(openai.APIError):
        list(strict_client.responses.create(**body))


def test_malformed_function_call_is_a_502(strict_client, fake):
    with pytest.raises(openai.InternalServerError) as info:
        strict_client.responses.create(model=MODEL, input=directive("x", finish_reason="MALFORMED_FUNCTION_CALL"), tools=[WEATHER])
    assert info.value.code == "malformed_function_call"


# -- stored responses ----------------------------------------------------------------------------------------------


def test_retrieve_input_items_and_delete(client, fake):
    items = [{"role": "user", "content": f"Message {i}"} for i in range(5)]
    r = client.responses.create(model=MODEL, input=items)
    assert client.responses.retrieve(r.id).model_dump() == r.model_dump()
    listed = list(client.responses.input_items.list(r.id, limit=2))  # pages of 2, newest first
    assert [i.content[0].text for i in listed] == [f"Message {i}" for i in (4, 3, 2, 1, 0)]
    assert all(i.id.startswith("msg_") and i.type == "message" and i.role == "user" for i in listed)
    page = client.responses.input_items.list(r.id, order="asc", limit=3)
    assert [i.content[0].text for i in page.data] == ["Message 0", "Message 1", "Message 2"] and page.has_more
    assert client.responses.delete(r.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)


def test_previous_response_id_continues_the_conversation(client, fake):
    first = client.responses.create(model=MODEL, input="My name is Ada.", instructions="Old instructions.")
    second = client.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id, instructions="New.")
    body = fake.last_body()
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][1]["parts"] == [{"text": "Echo: My name is Ada."}]
    assert body["systemInstruction"] == {"parts": [{"text": "New."}]}  # instructions are not carried over
    assert second.previous_response_id == first.id
    third = client.responses.create(model=MODEL, input="And now?", previous_response_id=second.id)
    assert len(fake.last_body()["contents"]) == 5 and third.output_text == "Echo: And now?"
    assert [i.content[0].text for i in client.responses.input_items.list(third.id)] == ["And now?"]


def test_a_deleted_earlier_response_is_named_when_a_later_one_is_continued(client, fake):
    first = client.responses.create(model=MODEL, input="One")
    second = client.responses.create(model=MODEL, input="Two", previous_response_id=first.id)
    client.responses.delete(first.id)
    assert client.responses.retrieve(second.id).output_text == "Echo: Two"  # still there itself
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="Three", previous_response_id=second.id)
    assert info.value.param == "previous_response_id" and info.value.code == "previous_response_not_found"
    message = info.value.body["message"]
    assert first.id in message and "deleted or has expired" in message and "not found" not in message
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="Again", previous_response_id=first.id)
    assert info.value.body["message"].startswith(f"Previous response with id '{first.id}' not found.")


def test_streamed_responses_are_stored_too(client, fake):
    with client.responses.stream(model=MODEL, input="Keep me") as stream:
        final = stream.get_final_response()
    assert client.responses.retrieve(final.id).output_text == "Echo: Keep me"


def test_store_false_keeps_nothing(client, fake):
    r = client.responses.create(model=MODEL, input="Forget me", store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="Again", previous_response_id=r.id)
    assert info.value.param == "previous_response_id"


def test_a_key_sees_only_its_own_responses(make_gateway, fake):
    server = make_gateway(auth={"client_keys": [{"key": "key-a", "name": "alice"}, {"key": "key-b", "name": "bob"}]})
    alice = openai.OpenAI(base_url=server.url + "/v1", api_key="key-a", max_retries=0)
    bob = openai.OpenAI(base_url=server.url + "/v1", api_key="key-b", max_retries=0)
    r = alice.responses.create(model=MODEL, input="Private")
    with pytest.raises(openai.NotFoundError):
        bob.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.input_items.list(r.id)
    with pytest.raises(openai.NotFoundError):
        bob.responses.delete(r.id)
    with pytest.raises(openai.BadRequestError):
        bob.responses.create(model=MODEL, input="Peek", previous_response_id=r.id)
    assert alice.responses.retrieve(r.id).output_text == "Echo: Private"
    alice.responses.create(model=MODEL, input="Mine", previous_response_id=r.id)


def test_a_key_uses_only_its_models(make_gateway, fake):
    server = make_gateway(auth={"client_keys": [{"key": "key-n", "name": "narrow", "models": ["gemini-3*"]}]})
    narrow = openai.OpenAI(base_url=server.url + "/v1", api_key="key-n", max_retries=0)
    for call in (
        lambda: narrow.responses.create(model=MODEL, input="No"),
        lambda: list(narrow.responses.create(model=MODEL, input="No", stream=True)),
        lambda: narrow.responses.input_tokens.count(model=MODEL, input="No"),
    ):
        with pytest.raises(openai.PermissionDeniedError) as info:
            call()
        assert info.value.code == "model_not_allowed" and info.value.param == "model"
    assert fake.stats()["requests"] == 0
    assert narrow.responses.create(model=G3, input="Yes").output_text == "Echo: Yes"


def test_store_paths_and_methods(raw, fake):
    assert_openai_error(raw.get("/v1/responses/resp_unknown"), 404, code="response_not_found")
    assert_openai_error(raw.get("/v1/responses/resp_unknown/input_items"), 404)
    assert_openai_error(raw.get("/v1/responses/resp_x/other"), 404, code="unknown_url")
    assert_openai_error(raw.put("/v1/responses/resp_x"), 405, code="method_not_allowed")
    assert_openai_error(raw.get("/v1/responses"), 405, code="method_not_allowed")
    rid = raw.post("/v1/responses", json={"model": MODEL, "input": "x"}).json()["id"]
    assert_openai_error(raw.post(f"/v1/responses/{rid}/cancel"), 400)
    assert_openai_error(raw.get(f"/v1/responses/{rid}/input_items", params={"limit": 0}), 400, param="limit")
    assert_openai_error(raw.get(f"/v1/responses/{rid}/input_items", params={"order": "up"}), 400, param="order")
    assert_openai_error(raw.get(f"/v1/responses/{rid}/input_items", params={"after": "nope"}), 400, param="after")
    assert raw.get(f"/responses/{rid}").json()["id"] == rid  # (also without /v1, as chat)
    assert raw.delete(f"/v1/responses/{rid}").json() == {"id": rid, "object": "response", "deleted": True}


# -- bad input -------------------------------------------------------------------------------------------------------


BAD = [
    ({"input": "x"}, "model", "missing_required_parameter"),
    ({"model": MODEL, "input": 5}, "input", "invalid_type"),
    ({"model": MODEL, "input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
    ({"model": MODEL, "input": [{"role": "user", "content": "x"}, {"type": "computer_call"}]}, "input[1].type", "unsupported_parameter"),
    ({"model": MODEL, "input": [{"role": "user", "content": "x"}, {"type": "function_call_output", "call_id": "call_x", "output": "1"}]},
     "input[1].call_id", None),
    ({"model": MODEL, "input": [{"role": "user", "content": "x"}, {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"},
      {"type": "function_call_output", "call_id": "c", "output": "1"}]}, "input[1].arguments", "invalid_value"),
    ({"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,@@"}]}]},
     "input[0].content[0].image_url", "invalid_value"),
    ({"model": MODEL, "input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools[0].type", "unsupported_parameter"),
    ({"model": MODEL, "input": "x", "tools": [{"type": "function"}]}, "tools[0].name", "missing_required_parameter"),
    ({"model": MODEL, "input": "x", "text": {"format": {"type": "json_schema", "name": "X"}}}, "text.format.schema", "missing_required_parameter"),
    ({"model": MODEL, "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type", "invalid_value"),
    ({"model": MODEL, "input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort", "invalid_value"),
    ({"model": "gemini-2.5-pro", "input": "x", "reasoning": {"effort": "none"}}, "reasoning.effort", "invalid_value"),
    ({"model": MODEL, "input": "x", "max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
    ({"model": MODEL, "input": "x", "temperature": 3}, "temperature", "invalid_value"),
    ({"model": MODEL, "input": "x", "tool_choice": "required"}, "tool_choice", None),
    ({"model": MODEL, "input": "x", "background": True}, "background", "unsupported_parameter"),
    ({"model": MODEL, "input": "x", "previous_response_id": "resp_nope"}, "previous_response_id", "previous_response_not_found"),
    ({"model": MODEL, "input": [{"role": "user", "content": "x"}, {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]},
     "input", None),
]  # fmt: skip


@pytest.mark.parametrize(("body", "param", "code"), BAD, ids=[b[1] + (f"-{i}") for i, b in enumerate(BAD)])
def test_bad_input_is_a_400_naming_the_field(strict_raw, fake, body, param, code):
    err = assert_openai_error(strict_raw.post("/v1/responses", json=body), 400, param=param, type="invalid_request_error")
    if code is not None:
        assert err["code"] == code
    assert fake.stats()["generate_requests"] == 0
    ok = strict_raw.post("/v1/responses", json={"model": MODEL, "input": "still serving"})
    assert ok.status_code == 200 and ok.json()["output"][0]["content"][0]["text"] == "Echo: still serving"


def test_malformed_json_body(strict_raw, fake):
    r = strict_raw.post("/v1/responses", content=b'{"model": ', headers={"content-type": "application/json"})
    assert_openai_error(r, 400, code="invalid_json")


def test_google_refusal_names_the_responses_parameter(strict_client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        strict_client.responses.create(model="gemini-3-pro-preview", input="x", top_logprobs=2)
    assert info.value.param == "top_logprobs"


def test_an_embedding_model_is_a_400_naming_model(strict_raw, fake):
    err = assert_openai_error(strict_raw.post("/v1/responses", json={"model": "gemini-embedding-001", "input": "x"}), 400,
                              param="model", code="model_not_supported")  # fmt: skip
    assert "POST /v1/embeddings" in err["message"] and "POST /v1/responses" in err["message"]


def test_unknown_model_is_a_404(strict_client, fake):
    with pytest.raises(openai.NotFoundError) as info:
        strict_client.responses.create(model="gemini-nope", input="x")
    assert info.value.param == "model"


def test_sdk_sends_a_good_body_for_every_documented_hint(strict_raw, fake):
    """Hints are accepted and not forwarded (docs/parameters.md, Responses)."""
    body = {
        "model": MODEL, "input": "Hints", "service_tier": "flex", "safety_identifier": "s", "prompt_cache_key": "k",
        "truncation": "auto", "max_tool_calls": 2, "stream_options": None, "include": ["file_search_call.results"],
        "text": {"format": {"type": "text"}, "verbosity": "high"}, "parallel_tool_calls": True, "store": True,
    }  # fmt: skip
    r = strict_raw.post("/v1/responses", json=body)
    assert r.status_code == 200, r.text
    assert set(fake.last_body()) == {"contents"}


@pytest.mark.parametrize("path", ["/v1/responses", "/responses"])
def test_both_paths(raw, fake, path):
    r = raw.post(path, json={"model": MODEL, "input": "x"})
    assert r.status_code == 200 and r.json()["object"] == "response"


def test_alias_is_echoed_as_sent(strict_raw, fake):
    r = strict_raw.post("/v1/responses", json={"model": "gpt-4o-mini", "input": "x"})
    assert r.json()["model"] == "gpt-4o-mini"
    assert fake.requests()[-1]["model"] == MODEL


def test_http_client_sees_request_id(raw: httpx.Client, fake):
    r = raw.post("/v1/responses", json={"model": MODEL, "input": "x"}, headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


# -- streams that start late ------------------------------------------------------------------------------------


def test_sdk_reads_a_late_stream(strict_client, fake):
    with strict_client.responses.stream(model=MODEL, input=directive("late", reply="hello late world", first_byte_delay_ms=700)) as s:
        final = s.get_final_response()
    assert final.output_text == "hello late world"


def test_sdk_raises_for_a_late_failure(strict_client, fake):
    with pytest.raises(openai.APIError):
        list(strict_client.responses.create(model=MODEL, input=directive("late", first_byte_delay_ms=600, error={"status": 500}),
                                            stream=True))  # fmt: skip


# -- input_tokens ---------------------------------------------------------------------------------------------------


def test_input_tokens_counts_with_gemini(client, fake):
    counted = client.responses.input_tokens.count(model=MODEL, input="Count these words please", instructions="Be brief.",
                                                  tools=[WEATHER])  # fmt: skip
    assert counted.object == "response.input_tokens" and counted.input_tokens > 0
    call = fake.requests()[-1]
    assert call["path"].endswith(":countTokens")
    inner = call["body"]["generateContentRequest"]
    assert inner["model"] == f"models/{MODEL}" and inner["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert inner["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert fake.stats()["generate_requests"] == 0


def test_input_tokens_bad_input_names_the_field(strict_raw, fake):
    r = strict_raw.post("/v1/responses/input_tokens", json={"model": MODEL, "input": [{"type": "function_call_output", "call_id": "x", "output": ""}]})
    assert_openai_error(r, 400, param="input[0].call_id")
