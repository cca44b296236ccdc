"""Everything works the same on Vertex AI (the fake validates Vertex request bodies too).

Model ids as Vertex spells them, `user`/`metadata` -> sanitised `labels` (only
on Vertex: the fake refuses `labels` on the Gemini API), non-stream, stream,
Gemini 3 tool loops with thought signatures, JSON schema output, thinking and
streamed call arguments (a Vertex-only feature).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway_harness import GatewayServer

from .gw_support import directive, msg, oai, vertex_gateway

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def vertex_gw(fake_gemini: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    yield from vertex_gateway(fake_gemini, tmp_path_factory, project="feat-proj")


@pytest.fixture
def vclient(vertex_gw: GatewayServer, fake: Any) -> Iterator[Any]:
    with oai(vertex_gw) as client:
        yield client


def _generate(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["backend"] in ("vertex", "gemini") and r.get("model")]


def test_vertex_model_id_and_labels_from_user_and_metadata(vclient, fake) -> None:
    answer = vclient.chat.completions.create(
        model="google/gemini-2.5-flash",
        messages=msg("labels please"),
        user="Alice@Example.COM",
        metadata={"Team Name": "Search/Ranking", "9lives": "Ünïcode Välue", "k": "x" * 100},
    )
    assert answer.model == "google/gemini-2.5-flash"
    assert answer.choices[0].message.content == "Echo: labels please"
    (call,) = _generate(fake)
    assert call["backend"] == "vertex" and call["model"] == "gemini-2.5-flash" and call["status"] == 200
    assert call["project"] == "feat-proj"
    labels = call["body"]["labels"]
    assert labels["user"] == "alice_example_com"
    assert labels["team_name"] == "search_ranking"
    assert labels["k9lives"] == "_n_code_v_lue"
    assert labels["k"] == "x" * 63
    for key, value in labels.items():
        assert key[0].isalpha() and len(key) <= 63 and len(value) <= 63
        assert all(ch.islower() or ch.isdigit() or ch in "_-" for ch in key + value)


def test_labels_are_never_sent_to_the_gemini_api(client, fake) -> None:
    answer = client.chat.completions.create(
        model="google/gemini-2.5-flash", messages=msg("no labels"), user="bob", metadata={"team": "x"}
    )
    assert answer.choices[0].message.content == "Echo: no labels"
    (call,) = _generate(fake)
    assert call["backend"] == "gemini" and "labels" not in call["body"]


def test_vertex_stream_with_usage(vclient, fake) -> None:
    chunks = list(
        vclient.chat.completions.create(
            model="gemini-2.5-flash",
            messages=msg("one two three four five six seven"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three four five six seven"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    (call,) = _generate(fake)
    assert call["path"].endswith("/publishers/google/models/gemini-2.5-flash:streamGenerateContent")
    assert call["query"] == {"alt": "sse"} and call["status"] == 200
    assert fake.stats()["streams_completed"] == 1


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("keep_signatures", [True, False])
def test_vertex_gemini3_tool_loop_with_signatures(vclient, fake, stream: bool, keep_signatures: bool) -> None:
    model = "gemini-3-pro-preview"
    messages: list[Any] = [{"role": "user", "content": "Weather twice.\n" + directive(tool_steps=2)}]
    for step in range(2):
        if stream:
            calls: dict[int, dict[str, Any]] = {}
            for chunk in vclient.chat.completions.create(model=model, messages=messages, tools=[WEATHER], stream=True):
                for tc in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
                    slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": "", "extra": None})
                    slot["id"] = slot["id"] or tc.id
                    if tc.function and tc.function.name:
                        slot["name"] = tc.function.name
                    slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
                    slot["extra"] = slot["extra"] or (tc.model_extra or {}).get("extra_content")
            tool_calls = [calls[i] for i in sorted(calls)]
        else:
            answer = vclient.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
            assert answer.choices[0].finish_reason == "tool_calls"
            tool_calls = [
                {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments,
                 "extra": (tc.model_extra or {}).get("extra_content")}
                for tc in answer.choices[0].message.tool_calls
            ]
        assert len(tool_calls) == 1 and tool_calls[0]["name"] == "get_weather"
        assert tool_calls[0]["extra"]["google"]["thought_signature"]
        assistant: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": []}
        for tc in tool_calls:
            entry: dict[str, Any] = {"id": tc["id"], "type": "function",
                                     "function": {"name": tc["name"], "arguments": tc["arguments"]}}
            if keep_signatures:
                entry["extra_content"] = tc["extra"]
            assistant["tool_calls"].append(entry)
        messages.append(assistant)
        args = json.loads(tool_calls[0]["arguments"])
        assert set(args) == {"city", "days"}
        messages.append({"role": "tool", "tool_call_id": tool_calls[0]["id"], "content": json.dumps({"step": step})})
    final = vclient.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content.startswith("Function results after 2 round(s)")
    calls_made = _generate(fake)
    assert [c["status"] for c in calls_made] == [200, 200, 200]
    assert all(c["backend"] == "vertex" for c in calls_made)
    stats = fake.stats()
    assert stats["signature_bypasses"] == 0 and stats["signatures_reencoded"] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_vertex_json_schema_output(vclient, fake, stream: bool) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}, "tags": {
            "type": "array", "items": {"type": "string"}}},
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    }
    kwargs: dict[str, Any] = dict(
        model="gemini-2.5-flash",
        messages=msg("a person"),
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    if stream:
        text = "".join(
            c.choices[0].delta.content or "" for c in vclient.chat.completions.create(stream=True, **kwargs) if c.choices
        )
    else:
        text = vclient.chat.completions.create(**kwargs).choices[0].message.content
    data = json.loads(text)
    assert set(data) == {"name", "age", "tags"} and isinstance(data["age"], int) and data["age"] >= 0
    (call,) = _generate(fake)
    gen = call["body"]["generationConfig"]
    assert gen["responseMimeType"] == "application/json"
    assert "responseJsonSchema" in gen or "responseSchema" in gen
    assert call["status"] == 200


def test_vertex_thinking_levels_budgets_and_thoughts(vclient, fake) -> None:
    g3 = vclient.chat.completions.create(model="gemini-3-flash-preview", messages=msg("think"), reasoning_effort="low")
    g25 = vclient.chat.completions.create(
        model="gemini-2.5-flash",
        messages=msg("think more\n" + directive(thoughts="Considering the options.")),
        reasoning_effort="medium",
    )
    shown = vclient.chat.completions.create(
        model="gemini-2.5-flash",
        messages=msg("show thoughts\n" + directive(thoughts="Considering the options.")),
        extra_body={"google": {"thinking_config": {"include_thoughts": True, "thinking_budget": 2048}}},
    )
    calls = _generate(fake)
    assert [c["status"] for c in calls] == [200, 200, 200]
    level = calls[0]["body"]["generationConfig"]["thinkingConfig"]
    assert list(level) == ["thinkingLevel"] and level["thinkingLevel"].upper() == "LOW"
    assert calls[1]["body"]["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 8192}
    assert calls[2]["body"]["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 2048, "includeThoughts": True}
    assert g3.usage.completion_tokens_details.reasoning_tokens > 0
    assert g25.usage.completion_tokens_details.reasoning_tokens > 0
    assert (g25.choices[0].message.model_extra or {}).get("reasoning_content") is None
    assert shown.choices[0].message.model_extra["reasoning_content"] == "Considering the options."


def test_vertex_streams_call_arguments(vclient, fake) -> None:
    stream = vclient.chat.completions.create(
        model="gemini-3-flash-preview",
        messages=msg("weather\n" + directive(tool_calls=[{"name": "get_weather", "args": {"city": "San Francisco", "days": 3}}])),
        tools=[WEATHER],
        stream=True,
        extra_body={"google": {"stream_function_call_arguments": True}},
    )
    arguments = ""
    deltas = 0
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        for tc in chunk.choices[0].delta.tool_calls or ():
            deltas += 1
            arguments += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert json.loads(arguments) == {"city": "San Francisco", "days": 3}
    assert deltas > 1, "the arguments arrived in pieces"
    assert finish == "tool_calls"
    (call,) = _generate(fake)
    assert call["body"]["toolConfig"]["functionCallingConfig"]["streamFunctionCallArguments"] is True


PNG_2X2 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg=="
)


def test_vertex_image_input_and_output(vclient, fake) -> None:
    seen = vclient.chat.completions.create(
        model="gemini-2.5-flash",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_2X2}"}},
        ]}],
    )
    drawn = vclient.chat.completions.create(model="gemini-2.5-flash-image", messages=msg("draw a square"))
    assert seen.choices[0].message.content == "Echo: what is this"
    sent, made = _generate(fake)
    assert sent["status"] == 200 and made["status"] == 200
    assert sent["body"]["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": PNG_2X2}}
    assert sent["body"]["contents"][0]["role"] == "user"  # Vertex refuses a Content without a role
    message = drawn.choices[0].message
    images = (message.model_extra or {}).get("images") or []
    data = message.audio.data if message.audio is not None else images[0]["image_url"]["url"].split(",", 1)[1]
    assert base64.b64decode(data).startswith(b"\x89PNG"), "the generated image reaches the client"
