"""Structured output end to end (issue 3, "Structured output").

`response_format: json_schema` becomes `responseJsonSchema` on models that take
JSON Schema and `responseSchema` (the OpenAPI subset, via the one converter) on
models configured without it, with the dropped keywords reported in a header.
The SDK's `parse()` / `stream()` helpers validate the answers with pydantic:
the fake synthesizes JSON valid against whatever schema reached it.
"""

from __future__ import annotations

import json
import logging
from typing import Literal

import openai
import pytest
from pydantic import BaseModel, Field

from .feat_support import prompt, tool_result

DROPPED_HEADER = "x-gemini-proxy-dropped-schema-keywords"


class Address(BaseModel):
    street: str
    city: str
    country: str


class Customer(BaseModel):
    name: str
    email: str | None
    addresses: list[Address]


class LineItem(BaseModel):
    sku: str
    quantity: int = Field(ge=1, le=99)
    unit_price: float = Field(gt=0)
    gift: bool


class Order(BaseModel):
    order_id: str
    status: Literal["pending", "shipped", "delivered"]
    customer: Customer
    items: list[LineItem]
    shipping: Address
    note: str | None


class GetWeather(BaseModel):
    """Current weather in a city."""

    city: str
    unit: Literal["celsius", "fahrenheit"]
    days: int = Field(ge=1, le=7)


RAW_SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"const": "report"},
        "title": {"type": "string", "description": "A title"},
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "score": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 10}, {"type": "null"}]},
        "author": {"$ref": "#/$defs/Person"},
    },
    "required": ["kind", "title", "tags", "score", "author"],
    "additionalProperties": False,
    "$defs": {
        "Person": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
            "required": ["name", "age"],
            "additionalProperties": False,
        }
    },
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "report", "schema": RAW_SCHEMA, "strict": True}}


def _generation(fake) -> dict:
    return fake.last_body()["generationConfig"]


def _check_report(value: dict) -> None:
    assert value["kind"] == "report"
    assert isinstance(value["title"], str) and isinstance(value["tags"], list)
    assert value["score"] is None or 0 <= value["score"] <= 10
    assert isinstance(value["author"]["name"], str) and value["author"]["age"] >= 0


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-pro-preview"])
def test_json_schema_goes_as_response_json_schema(client, fake, model):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "Report please"}], response_format=RESPONSE_FORMAT
    )
    completion = raw.parse()
    gen = _generation(fake)
    assert gen["responseMimeType"] == "application/json"
    assert gen["responseJsonSchema"] == RAW_SCHEMA
    assert "responseSchema" not in gen
    assert DROPPED_HEADER not in raw.headers
    _check_report(json.loads(completion.choices[0].message.content))


def test_model_without_json_schema_gets_the_openapi_subset(client, fake, caplog):
    """gemini-2.0-flash is in the default table as lacking JSON Schema support."""
    caplog.set_level(logging.INFO, logger="gemini_proxy")
    raw = client.chat.completions.with_raw_response.create(
        model="gemini-2.0-flash", messages=[{"role": "user", "content": "Report please"}], response_format=RESPONSE_FORMAT
    )
    completion = raw.parse()
    gen = _generation(fake)
    assert "responseJsonSchema" not in gen
    schema = gen["responseSchema"]
    assert schema["type"] == "OBJECT"
    props = schema["properties"]
    assert props["kind"] == {"type": "STRING", "enum": ["report"]}  # const -> one-value enum
    assert props["score"]["nullable"] is True and props["score"]["type"] == "NUMBER"  # anyOf null -> nullable
    assert props["author"]["type"] == "OBJECT" and set(props["author"]["properties"]) == {"name", "age"}  # $ref inlined
    assert "$defs" not in json.dumps(schema) and "additionalProperties" not in json.dumps(schema)
    assert set(raw.headers[DROPPED_HEADER].split(",")) == {"additionalProperties", "uniqueItems"}
    _check_report(json.loads(completion.choices[0].message.content))
    assert any("additionalProperties" in r.getMessage() and "uniqueItems" in r.getMessage() for r in caplog.records)
    # Streamed answers carry the header too.
    streamed = client.chat.completions.with_raw_response.create(
        model="gemini-2.0-flash", messages=[{"role": "user", "content": "x"}], response_format=RESPONSE_FORMAT, stream=True
    )
    assert set(streamed.headers[DROPPED_HEADER].split(",")) == {"additionalProperties", "uniqueItems"}
    text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    _check_report(json.loads(text))


def test_capabilities_in_config_choose_the_schema_form(make_gateway, fake):
    gateway = make_gateway(capabilities={"gemini-2.5-*": {"json_schema": False}})
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}], response_format=RESPONSE_FORMAT,
            tools=[openai.pydantic_function_tool(GetWeather)],
        )
        body = fake.last_body()
        assert "responseSchema" in body["generationConfig"] and "responseJsonSchema" not in body["generationConfig"]
        # Function declarations follow the same capability: `parameters`, not `parametersJsonSchema`.
        decl = body["tools"][0]["functionDeclarations"][0]
        assert "parameters" in decl and "parametersJsonSchema" not in decl
        unit = decl["parameters"]["properties"]["unit"]
        assert unit["type"] == "STRING" and unit["enum"] == ["celsius", "fahrenheit"]
        assert "additionalProperties" in raw.headers[DROPPED_HEADER].split(",")
        _check_report(json.loads(raw.parse().choices[0].message.content))
        # Another model is unaffected.
        client.chat.completions.create(
            model="gemini-3-flash-preview", messages=[{"role": "user", "content": "x"}], response_format=RESPONSE_FORMAT
        )
        assert fake.last_body()["generationConfig"]["responseJsonSchema"] == RAW_SCHEMA


def test_json_object(client, fake):
    completion = client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "Say hi"}], response_format={"type": "json_object"}
    )
    gen = _generation(fake)
    assert gen == {"responseMimeType": "application/json"}
    assert json.loads(completion.choices[0].message.content) == {"echo": "Say hi"}


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-3-pro-preview", "gemini-2.0-flash"])
@pytest.mark.parametrize("api", ["beta", "stable"])
def test_parse_with_nested_pydantic_models(client, fake, model, api):
    completions = client.beta.chat.completions if api == "beta" else client.chat.completions
    completion = completions.parse(
        model=model,
        messages=[{"role": "system", "content": "Extract the order."}, {"role": "user", "content": "Two mugs for Ana."}],
        response_format=Order,
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(message.parsed, Order)
    assert message.parsed.items and isinstance(message.parsed.items[0], LineItem)
    assert isinstance(message.parsed.customer.addresses[0], Address)
    assert message.parsed == Order.model_validate_json(message.content)
    gen = _generation(fake)
    assert ("responseJsonSchema" in gen) == (model != "gemini-2.0-flash")


@pytest.mark.parametrize("model", ["gemini-2.5-flash", "gemini-2.0-flash"])
def test_parse_streamed(client, fake, model):
    messages = [{"role": "user", "content": prompt("Two mugs for Ana.", chunks=6)}]
    expected = client.beta.chat.completions.parse(model=model, messages=messages, response_format=Order)
    with client.beta.chat.completions.stream(model=model, messages=messages, response_format=Order) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    deltas = [e for e in events if e.type == "content.delta"]
    assert len(deltas) > 1
    [done] = [e for e in events if e.type == "content.done"]
    assert isinstance(done.parsed, Order)
    assert final.choices[0].message.parsed == expected.choices[0].message.parsed
    assert final.choices[0].finish_reason == "stop"


def test_parse_with_tools_end_to_end(client, fake):
    tools = [openai.pydantic_function_tool(GetWeather)]
    messages = [{"role": "user", "content": prompt("Order an umbrella if it rains in Lyon.", tool_steps=1)}]
    first = client.beta.chat.completions.parse(model="gemini-3-pro-preview", messages=messages, tools=tools, response_format=Order)
    body = fake.last_body()
    assert "responseJsonSchema" in body["generationConfig"] and body["tools"][0]["functionDeclarations"][0]["name"] == "GetWeather"
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert isinstance(call.function.parsed_arguments, GetWeather)
    assert call.function.parsed_arguments.unit in ("celsius", "fahrenheit")
    messages.append(choice.message)
    messages.append(tool_result(call.id, call.function.name, call.function.arguments, 0))
    # The fake summarises tool results as plain text, so the structured final answer is scripted here.
    order = Order(
        order_id="o-1",
        status="pending",
        customer=Customer(name="Ana", email=None, addresses=[]),
        items=[LineItem(sku="umbrella", quantity=1, unit_price=12.5, gift=False)],
        shipping=Address(street="1 rue", city=call.function.parsed_arguments.city, country="FR"),
        note=None,
    )
    fake.script({"reply": order.model_dump_json()})
    final = client.beta.chat.completions.parse(model="gemini-3-pro-preview", messages=messages, tools=tools, response_format=Order)
    assert final.choices[0].message.parsed == order
    stats = fake.stats()
    assert stats["errors_returned"] == 0 and stats["signature_bypasses"] == 0 and stats["signatures_reencoded"] == 0


def test_stream_helper_with_tools_and_response_format(client, fake):
    tools = [openai.pydantic_function_tool(GetWeather), openai.pydantic_function_tool(Address, name="lookup_address")]
    messages = [{"role": "user", "content": prompt("Go", tool_steps=1, parallel=2)}]
    with client.beta.chat.completions.stream(
        model="gemini-3-flash-preview", messages=messages, tools=tools, response_format=Order
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    done = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert [type(e.parsed_arguments) for e in done] == [GetWeather, Address]
    calls = final.choices[0].message.tool_calls
    assert [type(c.function.parsed_arguments) for c in calls] == [GetWeather, Address]
    assert final.choices[0].finish_reason == "tool_calls"
