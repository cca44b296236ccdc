"""The fake's strict generateContent validator: bad bodies -> Google's texts, good -> accepted.

google-genai is used here only as an oracle (its request converters and types);
app/ must not import it.
"""

from __future__ import annotations

import ast
import copy
import enum
from pathlib import Path
from typing import Any

import pytest
from google.genai import _common, models, types

from app.testing import gemini_schema, gemini_schema_rules, gemini_schema_tables
from app.testing.gemini_schema import is_base64, validate_generate_content
from app.testing.gemini_schema_tables import ENUMS, MESSAGES
from app.testing.google_errors import BAD_REQUEST, GoogleError

GEMINI_PKG = "type.googleapis.com/google.ai.generativelanguage.v1beta"
VERTEX_PKG = "type.googleapis.com/google.cloud.aiplatform.v1beta1"
FN_DOC = "https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/function-calling"
MODEL_DOC = "https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini"


def user(*parts: Any) -> dict[str, Any]:
    return {"role": "user", "parts": list(parts)}


def model(*parts: Any) -> dict[str, Any]:
    return {"role": "model", "parts": list(parts)}


def text(value: str = "hi") -> dict[str, Any]:
    return {"text": value}


def call(name: str = "get_weather", **extra: Any) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": {"city": "Paris"}}, **extra}


def reply(name: str = "get_weather") -> dict[str, Any]:
    return {"functionResponse": {"name": name, "response": {"output": "sunny"}}}


def req(*contents: Any, **fields: Any) -> dict[str, Any]:
    return {"contents": list(contents) or [user(text())], **fields}


def decl(name: str = "get_weather", **fields: Any) -> dict[str, Any]:
    return {"name": name, "description": "Weather.", **fields}


def tools(*declarations: Any) -> list[dict[str, Any]]:
    return [{"functionDeclarations": list(declarations)}]


def params(schema: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A request with one function whose `parameters` is `schema`."""
    return req(tools=tools(decl(parameters=schema, **fields)))


def obj(**props: Any) -> dict[str, Any]:
    return {"type": "OBJECT", "properties": props}


STRING = {"type": "STRING"}
CITY = obj(city=STRING)


def rejected(body: Any, backend: gemini_schema.Backend = "gemini") -> GoogleError:
    with pytest.raises(GoogleError) as caught:
        validate_generate_content(body, backend)
    error = caught.value
    assert (error.code, error.status) == (400, "INVALID_ARGUMENT")
    return error


# --- accepted -------------------------------------------------------------------------

GOOD_BOTH: list[tuple[str, dict[str, Any]]] = [
    ("minimal", req()),
    ("model field", req(model="models/gemini-2.5-flash")),
    (
        "snake_case names",
        {
            "contents": [user(text())],
            "system_instruction": {"parts": [text()]},
            "generation_config": {"max_output_tokens": 10, "top_p": 0.5, "response_mime_type": "text/plain"},
        },
    ),
    ("one Content for repeated contents", {"contents": {"role": "user", "parts": {"text": "hi"}}}),
    ("nulls are unset", req(tools=None, generationConfig={"temperature": None})),
    ("empty text part", req(user(text(""), {"text": "", "thoughtSignature": "skip_thought_signature_validator"}))),
    ("numbers in strings", req(generationConfig={"maxOutputTokens": "100", "temperature": "0.5", "seed": "-3"})),
    ("integral float for int32", req(generationConfig={"maxOutputTokens": 100.0, "candidateCount": 1})),
    ("bool as string", req(generationConfig={"responseLogprobs": "true", "logprobs": 3})),
    ("inline data, standard base64", req(user({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}))),
    ("inline data, url-safe unpadded", req(user({"inlineData": {"mimeType": "image/png", "data": "__4gc2ln-w"}}))),
    (
        "file data",
        req(
            user(
                {
                    "fileData": {"mimeType": "video/mp4", "fileUri": "gs://b/v.mp4"},
                    "videoMetadata": {"startOffset": "1.5s", "endOffset": "10s", "fps": 2},
                }
            )
        ),
    ),
    (
        "function round trip",
        req(
            user(text()),
            model(call(thoughtSignature="c2tpcA=="), call("get_time")),
            user(reply(), reply("get_time")),
            tools=tools(decl(parameters=CITY), decl("get_time")),
        ),
    ),
    (
        "streamed calls in consecutive model contents",
        req(user(text()), model(call()), model(call("get_time")), user(reply(), reply("get_time"))),
    ),
    (
        "function response parts",
        req(
            user(text()),
            model(call()),
            user(
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"image": {"$ref": "a.png"}},
                        "parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA", "displayName": "a.png"}}],
                    }
                }
            ),
        ),
    ),
    (
        "code execution parts",
        req(
            user(text()),
            model(
                {"executableCode": {"language": "PYTHON", "code": "1"}},
                {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "1"}},
            ),
            tools=[{"codeExecution": {}}],
        ),
    ),
    (
        "lowercase enums",
        req(
            generationConfig={"thinkingConfig": {"thinkingLevel": "low"}, "mediaResolution": "media_resolution_low"},
            toolConfig={"functionCallingConfig": {"mode": "any"}},
            safetySettings=[{"category": "harm_category_harassment", "threshold": "off"}],
            tools=tools(decl(parameters={"type": "object", "properties": {"n": {"type": "integer"}}})),
        ),
    ),
    ("enum by number", req(toolConfig={"functionCallingConfig": {"mode": 2}})),
    (
        "parameters schema",
        params(
            obj(
                city={"type": "STRING", "enum": ["a", "b"], "description": "d"},
                tags={"type": "ARRAY", "items": STRING, "minItems": "1", "maxItems": 3},
                when={"anyOf": [STRING, {"type": "NULL"}]},
                nested=obj(x={"type": "NUMBER", "minimum": 0, "maximum": 1.5, "nullable": True}),
                enumeration={"type": "INTEGER", "format": "enum", "enum": ["1", "2"]},
            ),
        ),
    ),
    (
        "Value fields take lists",
        params(obj(tags={"type": "ARRAY", "items": STRING, "default": [], "example": ["a", "b"]})),
    ),
    ("required names properties", params({**CITY, "required": ["city"], "propertyOrdering": ["city"], "title": "T"})),
    (
        "json schema forms take anything",
        req(
            tools=tools(
                decl(
                    parametersJsonSchema={"$schema": "x", "type": ["string", "null"], "additionalProperties": False},
                    responseJsonSchema=True,
                )
            ),
            generationConfig={"responseMimeType": "application/json", "responseJsonSchema": {"const": 1}},
        ),
    ),
    ("response schema", req(generationConfig={"responseMimeType": "application/json", "responseSchema": CITY})),
    (
        "enum response schema",
        req(generationConfig={"responseMimeType": "text/x.enum", "responseSchema": {"type": "STRING", "enum": ["a"]}}),
    ),
    (
        "allowed function names",
        req(
            tools=tools(decl()),
            toolConfig={"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        ),
    ),
    ("function names", req(tools=tools(decl("_a.b:c-d"), decl("x" * 64)))),
    (
        "built-in tools",
        req(
            tools=[
                {"googleSearch": {}},
                {"urlContext": {}},
                {
                    "googleSearchRetrieval": {
                        "dynamicRetrievalConfig": {"mode": "MODE_DYNAMIC", "dynamicThreshold": 0.3}
                    }
                },
            ]
        ),
    ),
    (
        "generation config",
        req(
            generationConfig={
                "temperature": 2,
                "topP": 0,
                "topK": 40,
                "candidateCount": 1,
                "maxOutputTokens": 65536,
                "stopSequences": ["a"] * 5,
                "presencePenalty": 0.0,
                "frequencyPenalty": 0.0,
                "seed": 7,
                "responseLogprobs": True,
                "logprobs": 20,
                "responseModalities": ["TEXT", "IMAGE"],
                "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}}},
                "imageConfig": {"aspectRatio": "16:9", "imageSize": "2K"},
                "thinkingConfig": {"includeThoughts": True, "thinkingBudget": -1},
            }
        ),
    ),
    (
        "safety and cache",
        req(
            safetySettings=[{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "threshold": "BLOCK_ONLY_HIGH"}],
            cachedContent="cachedContents/abc",
            serviceTier="flex",
            continuationToken="t",
        ),
    ),
    ("system instruction without role", req(systemInstruction={"parts": [text("be brief")]})),
]

GOOD_GEMINI: list[tuple[str, dict[str, Any]]] = [
    ("missing role is user", {"contents": [{"parts": [text()]}]}),
    ("store", req(store=True)),
    ("file search tool", req(tools=[{"fileSearch": {"fileSearchStoreNames": ["fileSearchStores/x"]}}])),
    (
        "function response willContinue",
        req(
            user(text()),
            model(call()),
            user({"functionResponse": {"name": "get_weather", "response": {}, "willContinue": False}}),
        ),
    ),
    (
        "server-side tool parts",
        req(user(text()), model({"toolCall": {"id": "1", "toolType": "GOOGLE_SEARCH_WEB", "args": {}}})),
    ),
]

GOOD_VERTEX: list[tuple[str, dict[str, Any]]] = [
    ("labels", req(labels={"team": "ml", "env": "dev"})),
    ("additionalProperties", params({**CITY, "additionalProperties": False})),
    (
        "streamed arguments",
        req(
            user(text()),
            model(
                {
                    "functionCall": {
                        "name": "f",
                        "partialArgs": [{"jsonPath": "$.a", "stringValue": "x"}],
                        "willContinue": True,
                    }
                }
            ),
            toolConfig={"functionCallingConfig": {"mode": "AUTO", "streamFunctionCallArguments": True}},
        ),
    ),
    (
        "safety method and image category",
        req(safetySettings=[{"category": "HARM_CATEGORY_IMAGE_HATE", "threshold": "BLOCK_NONE", "method": "SEVERITY"}]),
    ),
    ("enterprise search", req(tools=[{"enterpriseWebSearch": {"excludeDomains": ["a.com"]}}])),
    ("float topK", req(generationConfig={"topK": 40.5})),
]


@pytest.mark.parametrize("body", [b for _, b in GOOD_BOTH], ids=[i for i, _ in GOOD_BOTH])
@pytest.mark.parametrize("backend", ["gemini", "vertex"])
def test_accepted_on_both_backends(body: dict[str, Any], backend: gemini_schema.Backend) -> None:
    original = copy.deepcopy(body)
    assert validate_generate_content(body, backend) is None
    assert body == original  # validation never mutates the body


@pytest.mark.parametrize("body", [b for _, b in GOOD_GEMINI], ids=[i for i, _ in GOOD_GEMINI])
def test_accepted_on_gemini(body: dict[str, Any]) -> None:
    assert validate_generate_content(body, "gemini") is None


@pytest.mark.parametrize("body", [b for _, b in GOOD_VERTEX], ids=[i for i, _ in GOOD_VERTEX])
def test_accepted_on_vertex(body: dict[str, Any]) -> None:
    assert validate_generate_content(body, "vertex") is None


# --- stage 1: parse errors (exact texts, one field violation each) -------------------------

PARSE_ERRORS: list[tuple[str, str, Any, str, str | None]] = [
    # (id, backend, body, message, fieldViolations[0].field)
    (
        "unknown top-level",
        "gemini",
        req(foo=1),
        'Invalid JSON payload received. Unknown name "foo": Cannot find field.',
        None,
    ),
    (
        "unknown nested",
        "gemini",
        req(generationConfig={"responseFormat": {}}),
        "Invalid JSON payload received. Unknown name \"responseFormat\" at 'generation_config': Cannot find field.",
        "generation_config",
    ),
    (
        "$schema in parameters",
        "gemini",
        params({"$schema": "x", **CITY}),
        "Invalid JSON payload received. Unknown name \"$schema\" at 'tools[0].function_declarations[0].parameters': Cannot find field.",
        "tools[0].function_declarations[0].parameters",
    ),
    (
        "const in a property",
        "gemini",
        params(obj(a={"type": "STRING"}, b={"const": "x"})),
        "Invalid JSON payload received. Unknown name \"const\" at 'tools[0].function_declarations[0].parameters.properties[1].value': Cannot find field.",
        "tools[0].function_declarations[0].parameters.properties[1].value",
    ),
    (
        "additionalProperties on gemini",
        "gemini",
        req(
            generationConfig={
                "responseMimeType": "application/json",
                "responseSchema": {**CITY, "additionalProperties": False},
            }
        ),
        "Invalid JSON payload received. Unknown name \"additionalProperties\" at 'generation_config.response_schema': Cannot find field.",
        "generation_config.response_schema",
    ),
    (
        "type array",
        "gemini",
        params(obj(a={"type": ["string", "null"]})),
        "Invalid JSON payload received. Unknown name \"type\" at 'tools[0].function_declarations[0].parameters.properties[0].value': "
        "Proto field is not repeating, cannot start list.",
        "tools[0].function_declarations[0].parameters.properties[0].value",
    ),
    (
        "list for a message",
        "gemini",
        req(generationConfig=[]),
        'Invalid JSON payload received. Unknown name "generationConfig": Proto field is not repeating, cannot start list.',
        None,
    ),
    (
        "response is a list",
        "gemini",
        req(user(text()), model(call()), user({"functionResponse": {"name": "get_weather", "response": [1]}})),
        "Invalid JSON payload received. Unknown name \"response\" at 'contents[2].parts[0].function_response': Proto field is not repeating, cannot start list.",
        "contents[2].parts[0].function_response",
    ),
    (
        "response is a string",
        "gemini",
        req(user(text()), model(call()), user({"functionResponse": {"name": "get_weather", "response": "sunny"}})),
        "Invalid value at 'contents[2].parts[0].function_response.response' (type.googleapis.com/google.protobuf.Struct), \"sunny\"",
        "contents[2].parts[0].function_response.response",
    ),
    (
        "args is a JSON string",
        "gemini",
        req(user(text()), model({"functionCall": {"name": "f", "args": '{"a":1}'}})),
        'Invalid value at \'contents[1].parts[0].function_call.args\' (type.googleapis.com/google.protobuf.Struct), "{\\"a\\":1}"',
        "contents[1].parts[0].function_call.args",
    ),
    (
        "number for string",
        "gemini",
        req(user({"text": 12})),
        "Invalid value at 'contents[0].parts[0].text' (TYPE_STRING), 12",
        "contents[0].parts[0].text",
    ),
    (
        "bool for string",
        "gemini",
        req(user(text()), cachedContent=True),
        "Invalid value at 'cached_content' (TYPE_STRING), true",
        "cached_content",
    ),
    (
        "string for float",
        "gemini",
        req(generationConfig={"temperature": "hot"}),
        "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"hot\"",
        "generation_config.temperature",
    ),
    (
        "fraction for int32",
        "gemini",
        req(generationConfig={"maxOutputTokens": 1.5}),
        "Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), 1.5",
        "generation_config.max_output_tokens",
    ),
    (
        "int32 overflow",
        "gemini",
        req(generationConfig={"seed": 2**31}),
        "Invalid value at 'generation_config.seed' (TYPE_INT32), 2147483648",
        "generation_config.seed",
    ),
    (
        "string for int64",
        "gemini",
        params(obj(a={"type": "ARRAY", "items": STRING, "minItems": "one"})),
        "Invalid value at 'tools[0].function_declarations[0].parameters.properties[0].value.min_items' (TYPE_INT64), \"one\"",
        "tools[0].function_declarations[0].parameters.properties[0].value.min_items",
    ),
    (
        "number for bool",
        "gemini",
        req(generationConfig={"responseLogprobs": 1}),
        "Invalid value at 'generation_config.response_logprobs' (TYPE_BOOL), 1",
        "generation_config.response_logprobs",
    ),
    (
        "object for scalar",
        "gemini",
        req(user({"inlineData": {"mimeType": {"a": 1}, "data": "AAAA"}})),
        "Invalid value at 'contents[0].parts[0].inline_data' (mime_type), Starting an object on a scalar field",
        "contents[0].parts[0].inline_data",
    ),
    (
        "string for message",
        "gemini",
        {"contents": "invalid"},
        f"Invalid value at 'contents' ({GEMINI_PKG}.Content), \"invalid\"",
        "contents",
    ),
    (
        "string for message, vertex",
        "vertex",
        {"contents": ["invalid"]},
        f"Invalid value at 'contents[0]' ({VERTEX_PKG}.Content), \"invalid\"",
        "contents[0]",
    ),
    (
        "bad Type",
        "gemini",
        params(obj(a={"type": ""})),
        f"Invalid value at 'tools[0].function_declarations[0].parameters.properties[0].value.type' ({GEMINI_PKG}.Type), \"\"",
        "tools[0].function_declarations[0].parameters.properties[0].value.type",
    ),
    (
        "bad category",
        "gemini",
        req(safetySettings=[{"category": "HARM_CATEGORY_NOPE", "threshold": "OFF"}]),
        f"Invalid value at 'safety_settings[0].category' ({GEMINI_PKG}.HarmCategory), \"HARM_CATEGORY_NOPE\"",
        "safety_settings[0].category",
    ),
    (
        "vertex-only category on gemini",
        "gemini",
        req(safetySettings=[{"category": "HARM_CATEGORY_IMAGE_HATE", "threshold": "OFF"}]),
        f"Invalid value at 'safety_settings[0].category' ({GEMINI_PKG}.HarmCategory), \"HARM_CATEGORY_IMAGE_HATE\"",
        "safety_settings[0].category",
    ),
    (
        "bad threshold, vertex",
        "vertex",
        req(safetySettings=[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "NEVER"}]),
        f"Invalid value at 'safety_settings[0].threshold' ({VERTEX_PKG}.SafetySetting.HarmBlockThreshold), \"NEVER\"",
        "safety_settings[0].threshold",
    ),
    (
        "bad mode",
        "gemini",
        req(toolConfig={"functionCallingConfig": {"mode": "REQUIRED"}}),
        f"Invalid value at 'tool_config.function_calling_config.mode' ({GEMINI_PKG}.FunctionCallingConfig.Mode), \"REQUIRED\"",
        "tool_config.function_calling_config.mode",
    ),
    (
        "bad modality",
        "gemini",
        req(generationConfig={"responseModalities": ["TEXT", "SMELL"]}),
        f"Invalid value at 'generation_config.response_modalities[1]' ({GEMINI_PKG}.GenerationConfig.Modality), \"SMELL\"",
        "generation_config.response_modalities[1]",
    ),
    (
        "bool for enum",
        "gemini",
        req(generationConfig={"mediaResolution": True}),
        f"Invalid value at 'generation_config.media_resolution' ({GEMINI_PKG}.GenerationConfig.MediaResolution), true",
        "generation_config.media_resolution",
    ),
    (
        "bad base64",
        "gemini",
        req(user({"inlineData": {"mimeType": "image/png", "data": "data:image/png;base64,AAAA"}})),
        "Invalid value at 'contents[0].parts[0].inline_data.data' (TYPE_BYTES), Base64 decoding failed for \"data:image/png;base64,AAAA\"",
        "contents[0].parts[0].inline_data.data",
    ),
    (
        "truncated signature",
        "gemini",
        req(user(text()), model(call(thoughtSignature="EmIKYAERTTIPsMumWW2CIAWzb"))),
        "Invalid value at 'contents[1].parts[0].thought_signature' (TYPE_BYTES), Base64 decoding failed for \"EmIKYAERTTIPsMumWW2CIAWzb\"",
        "contents[1].parts[0].thought_signature",
    ),
    (
        "two data fields",
        "gemini",
        req(user({"text": "a", "functionCall": {"name": "f"}})),
        "Invalid value at 'contents[0].parts[0]' (oneof), oneof field 'data' is already set. Cannot set 'functionCall'",
        "contents[0].parts[0]",
    ),
    (
        "two data fields, snake",
        "gemini",
        req(user({"inline_data": {"data": "AAAA"}, "file_data": {"file_uri": "gs://x"}})),
        "Invalid value at 'contents[0].parts[0]' (oneof), oneof field 'data' is already set. Cannot set 'file_data'",
        "contents[0].parts[0]",
    ),
    (
        "labels on gemini",
        "gemini",
        req(labels={"a": "b"}),
        'Invalid JSON payload received. Unknown name "labels": Cannot find field.',
        None,
    ),
    (
        "partialArgs on gemini",
        "gemini",
        req(user(text()), model({"functionCall": {"name": "f", "partialArgs": []}})),
        "Invalid JSON payload received. Unknown name \"partialArgs\" at 'contents[1].parts[0].function_call': Cannot find field.",
        "contents[1].parts[0].function_call",
    ),
    (
        "streamFunctionCallArguments on gemini",
        "gemini",
        req(toolConfig={"functionCallingConfig": {"streamFunctionCallArguments": True}}),
        "Invalid JSON payload received. Unknown name \"streamFunctionCallArguments\" at 'tool_config.function_calling_config': Cannot find field.",
        "tool_config.function_calling_config",
    ),
    (
        "store on vertex",
        "vertex",
        req(store=False),
        'Invalid JSON payload received. Unknown name "store": Cannot find field.',
        None,
    ),
    (
        "fileSearch on vertex",
        "vertex",
        req(tools=[{"fileSearch": {}}]),
        "Invalid JSON payload received. Unknown name \"fileSearch\" at 'tools[0]': Cannot find field.",
        "tools[0]",
    ),
    (
        "willContinue on vertex function response",
        "vertex",
        req(
            user(text()),
            model(call()),
            user({"functionResponse": {"name": "get_weather", "response": {}, "willContinue": True}}),
        ),
        "Invalid JSON payload received. Unknown name \"willContinue\" at 'contents[2].parts[0].function_response': Cannot find field.",
        "contents[2].parts[0].function_response",
    ),
    (
        "label value not a string",
        "vertex",
        req(labels={"a": 1}),
        "Invalid value at 'labels[0].value' (TYPE_STRING), 1",
        "labels[0].value",
    ),
    (
        "bad duration",
        "gemini",
        req(user({"fileData": {"fileUri": "gs://v"}, "videoMetadata": {"startOffset": "90"}})),
        "Invalid value at 'contents[0].parts[0].video_metadata.start_offset' (type.googleapis.com/google.protobuf.Duration), \"90\"",
        "contents[0].parts[0].video_metadata.start_offset",
    ),
    (
        "object for a top-level scalar",
        "gemini",
        req(cachedContent={}),
        "Invalid value (cached_content), Starting an object on a scalar field",
        None,
    ),
    (
        "root not an object",
        "gemini",
        [],
        'Invalid JSON payload received. Unknown name "": Root element must be a message.',
        None,
    ),
    (
        "property schema not an object",
        "gemini",
        params(obj(a="string")),
        f"Invalid value at 'tools[0].function_declarations[0].parameters.properties[0].value' ({GEMINI_PKG}.Schema), \"string\"",
        "tools[0].function_declarations[0].parameters.properties[0].value",
    ),
    (
        "enum values must be strings",
        "gemini",
        params(obj(a={"type": "INTEGER", "enum": [1, 2]})),
        "Invalid value at 'tools[0].function_declarations[0].parameters.properties[0].value.enum[0]' (TYPE_STRING), 1\n"
        "Invalid value at 'tools[0].function_declarations[0].parameters.properties[0].value.enum[1]' (TYPE_STRING), 2",
        "tools[0].function_declarations[0].parameters.properties[0].value.enum[0]",
    ),
]


@pytest.mark.parametrize(
    ("backend", "body", "message", "field"), [c[1:] for c in PARSE_ERRORS], ids=[c[0] for c in PARSE_ERRORS]
)
def test_parse_errors(backend: gemini_schema.Backend, body: Any, message: str, field: str | None) -> None:
    error = rejected(body, backend)
    assert error.message == message
    [detail] = error.details
    assert detail["@type"] == BAD_REQUEST
    first = detail["fieldViolations"][0]
    assert first.get("field") == field
    assert first["description"] == message.split("\n")[0]


def test_every_parse_error_is_reported_in_document_order() -> None:
    body = {
        "contents": [user(text())],
        "foo": 1,
        "generationConfig": {"bar": 2, "temperature": "x", "stopSequences": [1]},
        "tools": [
            {
                "functionDeclarations": [
                    decl(parameters={"$defs": {}, "type": "OBJECT", "properties": {"a": {"$ref": "#/x"}}})
                ]
            }
        ],
    }
    error = rejected(body)
    expected = [
        (None, 'Invalid JSON payload received. Unknown name "foo": Cannot find field.'),
        (
            "generation_config",
            "Invalid JSON payload received. Unknown name \"bar\" at 'generation_config': Cannot find field.",
        ),
        ("generation_config.temperature", "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"x\""),
        (
            "generation_config.stop_sequences[0]",
            "Invalid value at 'generation_config.stop_sequences[0]' (TYPE_STRING), 1",
        ),
        (
            "tools[0].function_declarations[0].parameters",
            "Invalid JSON payload received. Unknown name \"$defs\" at 'tools[0].function_declarations[0].parameters': Cannot find field.",
        ),
        (
            "tools[0].function_declarations[0].parameters.properties[0].value",
            "Invalid JSON payload received. Unknown name \"$ref\" at 'tools[0].function_declarations[0].parameters.properties[0].value': Cannot find field.",
        ),
    ]
    assert error.message == "\n".join(d for _, d in expected)
    violations = error.details[0]["fieldViolations"]
    assert [(v.get("field"), v["description"]) for v in violations] == expected
    assert "field" not in violations[0]  # a top-level name has no path


def test_parse_errors_come_before_field_lines() -> None:
    error = rejected({"contents": [], "foo": 1})
    assert error.message.startswith('Invalid JSON payload received. Unknown name "foo"')


# --- stage 2: field lines ---------------------------------------------------------------

P = "* GenerateContentRequest.tools[0].function_declarations[0].parameters"
NAME_TEXT = (
    "Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), "
    "underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64."
)

FIELD_LINES: list[tuple[str, Any, str]] = [
    ("no contents", {}, "* GenerateContentRequest.contents: contents is not specified\n"),
    ("empty contents", {"contents": []}, "* GenerateContentRequest.contents: contents is not specified\n"),
    (
        "empty parts",
        req(user(text()), model()),
        "* GenerateContentRequest.contents[1].parts: contents.parts must not be empty.\n",
    ),
    (
        "part without data",
        req(user({"thought": True})),
        "* GenerateContentRequest.contents[0].parts[0].data: required oneof field 'data' must have one initialized field\n",
    ),
    (
        "signature-only part",
        req(user(text()), model({"thoughtSignature": "AAAA"})),
        "* GenerateContentRequest.contents[1].parts[0].data: required oneof field 'data' must have one initialized field\n",
    ),
    (
        "function response without name",
        req(user(text()), model(call()), user({"functionResponse": {"response": {}}})),
        "* GenerateContentRequest.contents[2].parts[0].function_response.name: missing field.\n",
    ),
    (
        "function call without name",
        req(user(text()), model({"functionCall": {"args": {}}})),
        "* GenerateContentRequest.contents[1].parts[0].function_call.name: missing field.\n",
    ),
    (
        "function response part without data",
        req(
            user(text()),
            model(call()),
            user({"functionResponse": {"name": "get_weather", "response": {}, "parts": [{}]}}),
        ),
        "* GenerateContentRequest.contents[2].parts[0].function_response.parts[0].data: required oneof field 'data' must have one initialized field\n",
    ),
    (
        "system instruction with an image",
        req(systemInstruction={"parts": [text(), {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}),
        "* GenerateContentRequest.system_instruction.parts[1]: only text parts are allowed in system_instruction.\n",
    ),
    (
        "name starts with a digit",
        req(tools=tools(decl("1abc"))),
        f"* GenerateContentRequest.tools[0].function_declarations[0].name: {NAME_TEXT}\n",
    ),
    (
        "name with a space",
        req(tools=tools(decl("get weather"))),
        f"* GenerateContentRequest.tools[0].function_declarations[0].name: {NAME_TEXT}\n",
    ),
    (
        "name too long",
        req(tools=tools(decl("x" * 65))),
        f"* GenerateContentRequest.tools[0].function_declarations[0].name: {NAME_TEXT}\n",
    ),
    (
        "name missing",
        req(tools=tools({"description": "d"})),
        f"* GenerateContentRequest.tools[0].function_declarations[0].name: {NAME_TEXT}\n",
    ),
    (
        "every bad name, one line each",
        req(tools=tools(decl("a b"), decl("ok"), decl("-x"))),
        f"* GenerateContentRequest.tools[0].function_declarations[0].name: {NAME_TEXT}\n"
        f"* GenerateContentRequest.tools[0].function_declarations[2].name: {NAME_TEXT}\n",
    ),
    (
        "empty object parameters",
        params({"type": "OBJECT", "properties": {}}),
        f"{P}.properties: should be non-empty for OBJECT type\n",
    ),
    ("object without properties", params({"type": "object"}), f"{P}.properties: should be non-empty for OBJECT type\n"),
    (
        "nested empty object",
        params(obj(opts={"type": "OBJECT"})),
        f"{P}.properties[opts].properties: should be non-empty for OBJECT type\n",
    ),
    ("array without items", params(obj(tags={"type": "ARRAY"})), f"{P}.properties[tags].items: missing field.\n"),
    (
        "deep array without items",
        params(obj(paperInfo=obj(authors={"type": "ARRAY"}))),
        f"{P}.properties[paperInfo].properties[authors].items: missing field.\n",
    ),
    (
        "array in anyOf without items",
        params(obj(v={"anyOf": [{"type": "ARRAY"}, STRING]})),
        f"{P}.properties[v].any_of[0].items: missing field.\n",
    ),
    (
        "properties on a string",
        params(obj(a={"type": "STRING", "properties": {"b": STRING}})),
        f"{P}.properties[a].properties: only allowed for OBJECT type\n",
    ),
    (
        "required on a string",
        params(obj(a={"type": "STRING", "required": ["b"]})),
        f"{P}.properties[a].required: only allowed for OBJECT type\n",
    ),
    (
        "required names a missing property",
        params({**CITY, "required": ["city", "country"]}),
        f"{P}.required[1]: property is not defined\n",
    ),
    (
        "enum on a number",
        params(obj(depth={"type": "NUMBER", "enum": ["1", "2"]})),
        f"{P}.properties[depth].enum: only allowed for STRING type\n",
    ),
    (
        "empty enum value",
        params(obj(permission={"type": "STRING", "enum": ["a", "b", "c", ""]})),
        f"{P}.properties[permission].enum[3]: cannot be empty\n",
    ),
    (
        "parameters and parametersJsonSchema",
        params(CITY, parametersJsonSchema={"type": "object"}),
        f"{P}: parameters and parameters_json_schema cannot both be set.\n",
    ),
    (
        "response and responseJsonSchema",
        req(tools=tools(decl(response=STRING, responseJsonSchema={"type": "string"}))),
        "* GenerateContentRequest.tools[0].function_declarations[0].response: response and response_json_schema cannot both be set.\n",
    ),
    (
        "bad response schema",
        req(tools=tools(decl(response={"type": "ARRAY"}))),
        "* GenerateContentRequest.tools[0].function_declarations[0].response.items: missing field.\n",
    ),
    (
        "allowed names without ANY",
        req(
            tools=tools(decl()),
            toolConfig={"functionCallingConfig": {"mode": "AUTO", "allowedFunctionNames": ["get_weather"]}},
        ),
        "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
        "allowed_function_names may only be set when mode is ANY or VALIDATED.\n",
    ),
    (
        "allowed names without mode",
        req(tools=tools(decl()), toolConfig={"functionCallingConfig": {"allowedFunctionNames": ["get_weather"]}}),
        "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
        "allowed_function_names may only be set when mode is ANY or VALIDATED.\n",
    ),
    (
        "allowed name not declared",
        req(
            tools=tools(decl()),
            toolConfig={"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather", "nope"]}},
        ),
        '* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names[1]: function "nope" is not declared in tools.\n',
    ),
    (
        "six stop sequences",
        req(generationConfig={"stopSequences": list("abcdef")}),
        "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed.\n",
    ),
    (
        "response schema without mime type",
        req(generationConfig={"responseSchema": STRING}),
        "* GenerateContentRequest.generation_config.response_mime_type: "
        "response_mime_type must be application/json or text/x.enum when response_schema is set.\n",
    ),
    (
        "json schema with text/x.enum",
        req(generationConfig={"responseMimeType": "text/x.enum", "responseJsonSchema": {"type": "string"}}),
        "* GenerateContentRequest.generation_config.response_mime_type: "
        "response_mime_type must be application/json when response_json_schema is set.\n",
    ),
    (
        "both response schemas",
        req(
            generationConfig={
                "responseMimeType": "application/json",
                "responseSchema": STRING,
                "responseJsonSchema": {},
            }
        ),
        "* GenerateContentRequest.generation_config.response_schema: response_schema and response_json_schema cannot both be set.\n",
    ),
    (
        "empty object response schema",
        req(generationConfig={"responseMimeType": "application/json", "responseSchema": {"type": "OBJECT"}}),
        "* GenerateContentRequest.generation_config.response_schema.properties: should be non-empty for OBJECT type\n",
    ),
    (
        "unknown mime type",
        req(generationConfig={"responseMimeType": "application/pdf"}),
        "* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, "
        "`application/json`, `application/xml`, `application/yaml` and `text/x.enum`.\n",
    ),
    (
        "logprobs without responseLogprobs",
        req(generationConfig={"logprobs": 5}),
        "* GenerateContentRequest.generation_config.logprobs: logprobs can only be set when response_logprobs is true.\n",
    ),
    (
        "several lines, contents first",
        {"generationConfig": {"stopSequences": list("abcdef")}, "contents": [user()]},
        "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty.\n"
        "* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences are allowed.\n",
    ),
]


@pytest.mark.parametrize(("body", "message"), [c[1:] for c in FIELD_LINES], ids=[c[0] for c in FIELD_LINES])
def test_field_lines_on_gemini(body: Any, message: str) -> None:
    error = rejected(body, "gemini")
    assert error.message == message
    assert error.details == []  # Google sends these without a BadRequest detail


VERTEX_SENTENCES: list[tuple[str, Any, str]] = [
    (
        "no contents",
        {},
        f"Unable to submit request because at least one contents field is required. Learn more: {MODEL_DOC}",
    ),
    (
        "empty parts",
        req(user(text()), model()),
        f"Unable to submit request because it must include at least one parts field, which describes the prompt input. Learn more: {MODEL_DOC}",
    ),
    (
        "empty object parameters",
        req(tools=tools(decl("list_pages", parameters={"type": "OBJECT", "properties": {}}))),
        f"Unable to submit request because `list_pages` functionDeclaration parameters schema should be of type OBJECT. Learn more: {FN_DOC}",
    ),
    (
        "string parameters",
        req(tools=tools(decl("f", parameters=STRING))),
        f"Unable to submit request because `f` functionDeclaration parameters schema should be of type OBJECT. Learn more: {FN_DOC}",
    ),
    (
        "property without type",
        params(obj(a={"description": "no type"})),
        f"Unable to submit request because one or more function parameters didn't specify the schema type field. Learn more: {FN_DOC}",
    ),
    ("missing role", {"contents": [{"parts": [text()]}]}, "Please use a valid role: user, model."),
    (
        "no Vertex text: the first line",
        req(tools=tools(decl("1a"), decl("2b"))),
        f"* GenerateContentRequest.tools[0].function_declarations[0].name: {NAME_TEXT}\n",
    ),
]


@pytest.mark.parametrize(("body", "message"), [c[1:] for c in VERTEX_SENTENCES], ids=[c[0] for c in VERTEX_SENTENCES])
def test_vertex_answers_with_one_sentence(body: Any, message: str) -> None:
    assert rejected(body, "vertex").message == message


# --- stage 3: request sentences ---------------------------------------------------------

FR_COUNT = (
    "Please ensure that the number of function response parts is equal to the number of function call parts "
    "of the function call turn."
)
FR_AFTER_FC = "Please ensure that function response turn comes immediately after a function call turn."
FC_AFTER_USER = (
    "Please ensure that function call turn comes immediately after a user turn or after a function response turn."
)


def out_of_range(name: str, value: str, low: str, high: str) -> str:
    return (
        f"Unable to submit request because it has a {name} value of {value} but the supported range is "
        f"from {low} (inclusive) to {high}. Update the value and try again."
    )


SENTENCES: list[tuple[str, Any, str]] = [
    (
        "assistant role",
        req(user(text()), {"role": "assistant", "parts": [text()]}),
        "Please use a valid role: user, model.",
    ),
    ("system role", req({"role": "system", "parts": [text()]}), "Please use a valid role: user, model."),
    (
        "function role",
        req(user(text()), model(call()), {"role": "function", "parts": [reply()]}),
        "Please use a valid role: user, model.",
    ),
    ("fewer responses than calls", req(user(text()), model(call(), call("get_time")), user(reply())), FR_COUNT),
    ("more responses than calls", req(user(text()), model(call()), user(reply(), reply())), FR_COUNT),
    ("calls split over contents", req(user(text()), model(call()), model(call("get_time")), user(reply())), FR_COUNT),
    ("response without a call", req(user(text()), model(text()), user(reply())), FR_AFTER_FC),
    ("response first", req(user(reply())), FR_AFTER_FC),
    ("call first", req(model(call()), user(reply())), FC_AFTER_USER),
    (
        "level and budget",
        req(generationConfig={"thinkingConfig": {"thinkingLevel": "HIGH", "thinkingBudget": 1024}}),
        "You can only set only one of thinking budget and thinking level.",
    ),
    (
        "maxOutputTokens 0",
        req(generationConfig={"maxOutputTokens": 0}),
        out_of_range("maxOutputTokens", "0", "1", "65537 (exclusive)"),
    ),
    (
        "maxOutputTokens too big",
        req(generationConfig={"maxOutputTokens": 100000}),
        out_of_range("maxOutputTokens", "100000", "1", "65537 (exclusive)"),
    ),
    (
        "candidateCount 0",
        req(generationConfig={"candidateCount": 0}),
        out_of_range("candidateCount", "0", "1", "9 (exclusive)"),
    ),
    (
        "temperature 2.5",
        req(generationConfig={"temperature": 2.5}),
        out_of_range("temperature", "2.5", "0", "2 (inclusive)"),
    ),
    (
        "negative temperature",
        req(generationConfig={"temperature": -1}),
        out_of_range("temperature", "-1", "0", "2 (inclusive)"),
    ),
    ("topP 1.5", req(generationConfig={"topP": 1.5}), out_of_range("topP", "1.5", "0", "1 (inclusive)")),
    (
        "logprobs 21",
        req(generationConfig={"responseLogprobs": True, "logprobs": 21}),
        out_of_range("logprobs", "21", "0", "21 (exclusive)"),
    ),
]


@pytest.mark.parametrize(("body", "message"), [c[1:] for c in SENTENCES], ids=[c[0] for c in SENTENCES])
@pytest.mark.parametrize("backend", ["gemini", "vertex"])
def test_request_sentences(body: Any, message: str, backend: gemini_schema.Backend) -> None:
    error = rejected(body, backend)
    assert error.message == message
    assert error.details == []


def test_field_lines_come_before_request_sentences() -> None:
    body = req(user(text()), {"role": "bot", "parts": []})
    assert rejected(body).message == "* GenerateContentRequest.contents[1].parts: contents.parts must not be empty.\n"


# --- bytes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        "AAAA",
        "iVBORw0KGgo=",
        "iVBORw0KGgo",
        "ab+/",
        "ab-_",
        "YQ==",
        "YQ",
        "skip_thought_signature_validator",
        "context_engineering_is_the_way_to_go",
    ],
)
def test_base64_accepted(value: str) -> None:
    assert is_base64(value)


@pytest.mark.parametrize("value", ["A", "AAAAA", "a+b_", "YQ===", "Y===", "YQ=a", "has space", "Zm9v\n", "é"])
def test_base64_refused(value: str) -> None:
    assert not is_base64(value)


# --- the SDK as an oracle: what google-genai sends must pass --------------------------------


class _FakeApiClient:
    def __init__(self, vertexai: bool) -> None:
        self.vertexai, self.project, self.location, self.custom_base_url = vertexai, "p", "us-central1", None


def sdk_body(backend: gemini_schema.Backend, contents: Any, config: types.GenerateContentConfig) -> dict[str, Any]:
    vertexai = backend == "vertex"
    convert = models._GenerateContentParameters_to_vertex if vertexai else models._GenerateContentParameters_to_mldev
    parameters = types._GenerateContentParameters(model="gemini-2.5-flash", contents=contents, config=config)
    body = convert(_FakeApiClient(vertexai), parameters, None, parameters)
    body.pop("_url", None)
    return _common.encode_unserializable_types(_common.convert_to_dict(body))


SDK_CONTENTS = [
    types.Content(
        role="user",
        parts=[
            types.Part(text="hi"),
            types.Part.from_bytes(data=b"\x89PNG\r\n", mime_type="image/png"),
            types.Part.from_uri(file_uri="gs://b/v.mp4", mime_type="video/mp4"),
        ],
    ),
    types.Content(
        role="model",
        parts=[
            types.Part(text="thinking", thought=True),
            types.Part(
                function_call=types.FunctionCall(name="get_weather", args={"city": "x"}),
                thought_signature=b"\xff\xfe\xfd signature",
            ),
        ],
    ),
    types.Content(role="user", parts=[types.Part.from_function_response(name="get_weather", response={"output": 21})]),
]

SDK_CONFIGS = {
    "tools and schema": types.GenerateContentConfig(
        system_instruction="Be brief.",
        temperature=0.3,
        top_p=0.9,
        top_k=20,
        max_output_tokens=256,
        stop_sequences=["END"],
        seed=1,
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name="get_weather",
                        description="Weather.",
                        parameters=types.Schema(
                            type="OBJECT", properties={"city": types.Schema(type="STRING")}, required=["city"]
                        ),
                    )
                ]
            )
        ],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode="ANY", allowed_function_names=["get_weather"])
        ),
        safety_settings=[types.SafetySetting(category="HARM_CATEGORY_HATE_SPEECH", threshold="BLOCK_ONLY_HIGH")],
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_level="LOW"),
        response_mime_type="application/json",
        response_schema=types.Schema(type="OBJECT", properties={"answer": types.Schema(type="STRING")}),
    ),
    "json schema forms": types.GenerateContentConfig(
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name="lookup",
                        parameters_json_schema={"type": "object", "properties": {"q": {"type": ["string", "null"]}}},
                    )
                ]
            )
        ],
        response_mime_type="application/json",
        response_json_schema={"type": "object", "additionalProperties": False},
        thinking_config=types.ThinkingConfig(thinking_budget=0),
        media_resolution="MEDIA_RESOLUTION_LOW",
        response_modalities=["TEXT"],
        candidate_count=1,
        presence_penalty=0.0,
        frequency_penalty=0.0,
    ),
    "built-in tools": types.GenerateContentConfig(
        tools=[
            types.Tool(google_search=types.GoogleSearch()),
            types.Tool(code_execution=types.ToolCodeExecution()),
            types.Tool(url_context=types.UrlContext()),
        ],
        response_logprobs=True,
        logprobs=3,
    ),
}


@pytest.mark.parametrize("config", list(SDK_CONFIGS.values()), ids=list(SDK_CONFIGS))
@pytest.mark.parametrize("backend", ["gemini", "vertex"])
def test_sdk_requests_are_accepted(config: types.GenerateContentConfig, backend: gemini_schema.Backend) -> None:
    assert validate_generate_content(sdk_body(backend, SDK_CONTENTS, config), backend) is None


# --- the tables against google.genai.types -----------------------------------------------

# table message -> genai type (same field names); fields the SDK spells differently or lacks.
GENAI_TYPES = {
    "Content": types.Content,
    "Part": types.Part,
    "Blob": types.Blob,
    "FileData": types.FileData,
    "FunctionCall": types.FunctionCall,
    "PartialArg": types.PartialArg,
    "FunctionResponse": types.FunctionResponse,
    "FunctionResponsePart": types.FunctionResponsePart,
    "FunctionResponseBlob": types.FunctionResponseBlob,
    "FunctionResponseFileData": types.FunctionResponseFileData,
    "ExecutableCode": types.ExecutableCode,
    "CodeExecutionResult": types.CodeExecutionResult,
    "VideoMetadata": types.VideoMetadata,
    "PartMediaResolution": types.PartMediaResolution,
    "ToolCall": types.ToolCall,
    "ToolResponse": types.ToolResponse,
    "Tool": types.Tool,
    "GoogleSearch": types.GoogleSearch,
    "Interval": types.Interval,
    "GoogleSearchRetrieval": types.GoogleSearchRetrieval,
    "DynamicRetrievalConfig": types.DynamicRetrievalConfig,
    "GoogleMaps": types.GoogleMaps,
    "ComputerUse": types.ComputerUse,
    "FileSearch": types.FileSearch,
    "EnterpriseWebSearch": types.EnterpriseWebSearch,
    "FunctionDeclaration": types.FunctionDeclaration,
    "Schema": types.Schema,
    "ToolConfig": types.ToolConfig,
    "FunctionCallingConfig": types.FunctionCallingConfig,
    "RetrievalConfig": types.RetrievalConfig,
    "LatLng": types.LatLng,
    "SafetySetting": types.SafetySetting,
    "GenerationConfig": types.GenerationConfig,
    "ThinkingConfig": types.ThinkingConfig,
    "SpeechConfig": types.SpeechConfig,
    "VoiceConfig": types.VoiceConfig,
    "PrebuiltVoiceConfig": types.PrebuiltVoiceConfig,
    "MultiSpeakerVoiceConfig": types.MultiSpeakerVoiceConfig,
    "SpeakerVoiceConfig": types.SpeakerVoiceConfig,
    "ImageConfig": types.ImageConfig,
    "SearchTypes": types.SearchTypes,
}
# Fields the SDK's GenerationConfig lacks because GenerateContentConfig carries them.
NOT_IN_GENAI = {("GenerationConfig", "imageConfig")}


@pytest.mark.parametrize("message", sorted(GENAI_TYPES))
def test_table_fields_exist_in_genai(message: str) -> None:
    genai_fields = set(GENAI_TYPES[message].model_fields)
    missing = {
        camel
        for camel in MESSAGES[message]
        if gemini_schema_tables.to_snake(camel) not in genai_fields and (message, camel) not in NOT_IN_GENAI
    }
    assert missing == set()


GENAI_ENUMS = {
    "Type": types.Type,
    "HarmCategory": types.HarmCategory,
    "HarmBlockThreshold": types.HarmBlockThreshold,
    "HarmBlockMethod": types.HarmBlockMethod,
    "FunctionCallingMode": types.FunctionCallingConfigMode,
    "ThinkingLevel": types.ThinkingLevel,
    "MediaResolution": types.MediaResolution,
    "PartMediaResolutionLevel": types.PartMediaResolutionLevel,
    "Modality": types.Modality,
    "Language": types.Language,
    "Outcome": types.Outcome,
    "Behavior": types.Behavior,
    "FunctionResponseScheduling": types.FunctionResponseScheduling,
    "DynamicRetrievalMode": types.DynamicRetrievalConfigMode,
    "Environment": types.Environment,
    "PhishBlockThreshold": types.PhishBlockThreshold,
    "ToolType": types.ToolType,
    "SafetyPolicy": types.SafetyPolicy,
    "ProminentPeople": types.ProminentPeople,
}


@pytest.mark.parametrize("name", sorted(GENAI_ENUMS))
def test_enums_match_genai(name: str) -> None:
    genai_enum: type[enum.Enum] = GENAI_ENUMS[name]
    assert set(ENUMS[name]) == {member.value for member in genai_enum}


def test_service_tier_takes_what_the_sdk_sends() -> None:
    for tier in types.ServiceTier:
        validate_generate_content(req(serviceTier=tier.value), "gemini")


# --- hygiene ---------------------------------------------------------------------------------


def test_app_modules_do_not_import_genai() -> None:
    for module in (gemini_schema, gemini_schema_rules, gemini_schema_tables):
        tree = ast.parse(Path(module.__file__ or "").read_text())
        imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
        imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
        assert [name for name in imported if name.startswith("google")] == []


def test_a_long_conversation_validates() -> None:
    """600 contents with signed calls: accepted (its speed is the benchmarks' business, not a timed test's)."""
    turns = []
    for i in range(200):
        turns += [user(text(f"question {i}")), model(call(thoughtSignature="c2ln")), user(reply())]
    body = req(*turns, tools=tools(decl(parameters=obj(city=STRING, tags={"type": "ARRAY", "items": STRING}))))
    validate_generate_content(body, "gemini")
    turns[-2] = model(call(thoughtSignature="EmIKYAERTTIPsMumWW2CIAWzb"))  # not base64: refused, however long the history
    with pytest.raises(GoogleError):
        validate_generate_content(req(*turns, tools=body["tools"]), "gemini")


@pytest.mark.parametrize("fmt, ok", [("date-time", True), ("enum", True), ("email", False), ("date", False), ("uri", False)])
def test_string_formats_gemini_accepts(fmt, ok):
    """Google refuses STRING formats other than enum and date-time ("only 'enum' and 'date-time' are supported")."""
    from app.testing.gemini_schema import validate_generate_content
    from app.testing.google_errors import GoogleError

    schema = {"type": "OBJECT", "properties": {"when": {"type": "STRING", "format": fmt}}}
    if fmt == "enum":
        schema["properties"]["when"]["enum"] = ["a", "b"]
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
    }
    if ok:
        validate_generate_content(body, "gemini")
    else:
        with pytest.raises(GoogleError) as info:
            validate_generate_content(body, "gemini")
        assert "only 'enum' and 'date-time' are supported for STRING type" in info.value.message
        assert "response_schema.properties[when].value.format" in info.value.message or "format" in info.value.message
