"""The Responses API on Vertex AI: the same translation, Vertex's request shapes (the fake validates them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gateway_harness import GatewayServer

from .gw_support import oai, vertex_gateway

WEATHER = {
    "type": "function", "name": "get_weather", "description": "Weather in a city.", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
}  # fmt: skip


@pytest.fixture(scope="module")
def vertex_gw(fake_gemini: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    yield from vertex_gateway(fake_gemini, tmp_path_factory, project="resp-proj")


@pytest.fixture
def vclient(vertex_gw: GatewayServer, fake: Any) -> Iterator[Any]:
    with oai(vertex_gw) as client:
        yield client


def _calls(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["backend"] == "vertex" and r.get("model")]


def test_create_on_vertex_with_labels(vclient, fake) -> None:
    r = vclient.responses.create(model="google/gemini-2.5-flash", input="Hello", metadata={"Team": "Core"}, user="Ada")
    assert r.output_text == "Echo: Hello" and r.metadata == {"Team": "Core"}
    [call] = _calls(fake)
    assert call["body"]["labels"] == {"team": "core", "user": "ada"}
    assert "/projects/resp-proj/" in call["path"]


def test_stream_on_vertex(vclient, fake) -> None:
    with vclient.responses.stream(model="gemini-2.5-flash", input="Stream on Vertex please") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Echo: Stream on Vertex please"
    assert _calls(fake)[0]["stream"]


def test_gemini_3_tool_loop_on_vertex(vclient, fake) -> None:
    response = vclient.responses.create(model="gemini-3-pro-preview", tools=[WEATHER],
                                        input='Trip\n#fake {"tool_steps": 2}')  # fmt: skip
    for step in range(2):
        [call] = [o for o in response.output if o.type == "function_call"]
        response = vclient.responses.create(
            model="gemini-3-pro-preview", tools=[WEATHER], previous_response_id=response.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"step": step})}],
        )  # fmt: skip
    assert response.output_text.startswith("Function results after 2 round(s)")
    stats = fake.stats()
    assert stats["errors_returned"] == 0 and stats["signature_bypasses"] == 0


def test_input_tokens_on_vertex(vclient, fake) -> None:
    counted = vclient.responses.input_tokens.count(model="gemini-2.5-flash", input="Count these words", instructions="Be brief.")
    assert counted.object == "response.input_tokens" and counted.input_tokens > 0
    [call] = _calls(fake)
    assert call["path"].endswith(":countTokens")
    assert set(call["body"]) == {"contents", "systemInstruction"}
