"""Independent checks of what the translator sends to Gemini (shared by the test_tr_* modules).

* `validate_request_body`: google-genai's types (they forbid unknown fields) for every part of
  a `GenerateContentRequest`, our own key-style rule (camelCase), Gemini's schema rules the
  fake does not encode, then the fake Gemini's strict validator for the backend.
* `subset_rule_violations`: rules of Gemini's OpenAPI-subset `Schema` seen in Google's 400s.
"""

from __future__ import annotations

from typing import Any

from google.genai import types as gtypes

from app.testing.gemini_schema import validate_generate_content

# Top-level fields of GenerateContentRequest that the translator may send.
REQUEST_FIELDS = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "safetySettings", "generationConfig", "cachedContent", "labels"}
)
# Subtrees whose keys are the user's own (function arguments and results, schemas, labels).
FREE_FORM_KEYS = frozenset(
    {"args", "response", "parametersJsonSchema", "responseJsonSchema", "properties", "labels", "default", "example"}
)
# `format: only 'enum' and 'date-time' are supported for STRING type` (Gemini's own 400).
ALLOWED_FORMATS = {"STRING": {"enum", "date-time"}, "NUMBER": {"float", "double"}, "INTEGER": {"int32", "int64"}}


def subset_rule_violations(node: Any, path: str = "$") -> list[str]:
    """Gemini `Schema` rules the fake's validator does not check: formats, a type on every node."""
    found: list[str] = []
    if "type" not in node and "anyOf" not in node:
        found.append(f"{path}: no type")
    if "format" in node and node["format"] not in ALLOWED_FORMATS.get(node.get("type", ""), ()):
        found.append(f"{path}.format: {node['format']!r} on {node.get('type')}")
    for name, child in (node.get("properties") or {}).items():
        found.extend(subset_rule_violations(child, f"{path}.{name}"))
    if "items" in node:
        found.extend(subset_rule_violations(node["items"], f"{path}[]"))
    for i, child in enumerate(node.get("anyOf") or ()):
        found.extend(subset_rule_violations(child, f"{path}|{i}"))
    return found


def snake_case_keys(node: Any, path: str = "") -> list[str]:
    """Keys of our own making that are not lowerCamelCase (Google accepts both; we send camelCase)."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if "_" in key.strip("_") and not key.startswith("$"):
                found.append(f"{path}.{key}")
            if key not in FREE_FORM_KEYS:
                found.extend(snake_case_keys(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(snake_case_keys(value, f"{path}[{i}]"))
    return found


def validate_with_genai(body: dict[str, Any]) -> None:
    assert set(body) <= REQUEST_FIELDS, f"unexpected top-level fields {set(body) - REQUEST_FIELDS}"
    for content in body["contents"]:
        gtypes.Content.model_validate(content)
    if "systemInstruction" in body:
        gtypes.Content.model_validate(body["systemInstruction"])
    for tool in body.get("tools", ()):
        gtypes.Tool.model_validate(tool)
    if "toolConfig" in body:
        gtypes.ToolConfig.model_validate(body["toolConfig"])
    if "generationConfig" in body:
        gtypes.GenerationConfig.model_validate(body["generationConfig"])
    for setting in body.get("safetySettings", ()):
        gtypes.SafetySetting.model_validate(setting)
    if "cachedContent" in body:
        assert isinstance(body["cachedContent"], str)
    if "labels" in body:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in body["labels"].items())


def openapi_schemas(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every OpenAPI-subset schema in a request body (function `parameters`, `responseSchema`)."""
    found = [
        decl["parameters"]
        for tool in body.get("tools", ())
        for decl in tool.get("functionDeclarations", ())
        if "parameters" in decl
    ]
    if "responseSchema" in body.get("generationConfig", {}):
        found.append(body["generationConfig"]["responseSchema"])
    return found


def validate_request_body(body: dict[str, Any], backend: str) -> None:
    validate_with_genai(body)
    assert snake_case_keys(body) == []
    for schema in openapi_schemas(body):
        assert subset_rule_violations(schema) == []
    validate_generate_content(body, backend)  # type: ignore[arg-type]
