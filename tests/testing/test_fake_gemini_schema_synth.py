"""The fake's example synthesizer: every value it makes validates against its schema."""

from __future__ import annotations

from typing import Any

import pytest

from app.testing.fake_gemini.schema_synth import example_for

_TYPES = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}


def check(value: Any, schema: Any, root: Any = None) -> None:
    """A small JSON Schema / Gemini Schema checker for the keywords used below."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref", schema.get("ref"))
    if ref is not None:
        target = root["$defs"][ref.split("/")[-1]] if ref.startswith("#") else root["defs"][ref]
        check(value, {**target, **{k: v for k, v in schema.items() if k not in ("$ref", "ref")}}, root)
        return
    if "const" in schema:
        assert value == schema["const"]
    if "enum" in schema:
        assert value in schema["enum"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            errors = 0
            for branch in schema[key]:
                try:
                    check(value, branch, root)
                except AssertionError:
                    errors += 1
            assert errors < len(schema[key]), f"{value!r} matches no branch of {key}"
    for sub in schema.get("allOf", []):
        check(value, sub, root)
    kind = schema.get("type")
    kinds = [k.lower() for k in (kind if isinstance(kind, list) else [kind] if kind else [])]
    if schema.get("nullable") and value is None:
        return
    if kinds:
        assert any(
            isinstance(value, _TYPES[k]) and not (k in ("integer", "number") and isinstance(value, bool))
            for k in kinds
        ), (value, kinds)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema:
            assert value >= schema["minimum"]
        if "maximum" in schema:
            assert value <= schema["maximum"]
        if "exclusiveMinimum" in schema:
            assert value > schema["exclusiveMinimum"]
        if "exclusiveMaximum" in schema:
            assert value < schema["exclusiveMaximum"]
        if "multipleOf" in schema:
            assert abs(value / schema["multipleOf"] - round(value / schema["multipleOf"])) < 1e-9
    if isinstance(value, str):
        assert len(value) >= schema.get("minLength", 0)
        assert len(value) <= schema.get("maxLength", len(value))
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0)
        assert len(value) <= schema.get("maxItems", len(value))
        if schema.get("uniqueItems"):
            assert len({repr(v) for v in value}) == len(value)
        prefix = schema.get("prefixItems", [])
        for index, item in enumerate(value):
            check(item, prefix[index] if index < len(prefix) else schema.get("items", {}), root)
    if isinstance(value, dict):
        for name in schema.get("required", []):
            assert name in value, name
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                check(value[name], sub, root)


SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a"]},
    {"type": "integer", "minimum": 5, "maximum": 9},
    {"type": "integer", "exclusiveMinimum": 10},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "number", "minimum": -3.5, "maximum": -1.25},
    {"type": "integer", "minimum": 7, "multipleOf": 5},
    {"type": "string", "minLength": 30},
    {"type": "string", "maxLength": 3},
    {"type": "string", "format": "date"},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 3, "uniqueItems": False},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3, "uniqueItems": True},
    {"type": "array", "items": {"type": "string"}, "maxItems": 0},
    {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": {"type": "null"}},
    {"type": ["string", "null"], "enum": ["x", "y", None]},
    {"type": ["null", "integer"]},
    {"const": {"fixed": True}},
    {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"n": {"type": "number"}}}]},
    {"allOf": [{"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}, {"required": ["y"], "properties": {"y": {"type": "integer"}}}]},
    {
        "$defs": {"Node": {"type": "object", "properties": {"value": {"type": "integer"}, "next": {"$ref": "#/$defs/Node"}}, "required": ["value"]}},
        "$ref": "#/$defs/Node",
    },
    {
        "type": "OBJECT",
        "properties": {
            "when": {"type": "STRING", "format": "date-time"},
            "maybe": {"type": "INTEGER", "nullable": True},
            "kind": {"type": "STRING", "enum": ["A", "B"]},
            "list": {"type": "ARRAY", "items": {"$ref": "#/$defs/Item"}, "minItems": 2},
        },
        "$defs": {"Item": {"type": "OBJECT", "properties": {"id": {"type": "STRING"}}}},
        "propertyOrdering": ["kind", "when", "maybe", "list"],
        "required": ["kind"],
    },
    {"type": "OBJECT", "properties": {"p": {"ref": "Thing"}}, "defs": {"Thing": {"type": "NUMBER", "maximum": 0}}},
    {"properties": {"untyped": {}}},
    {},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_example_validates(schema: dict[str, Any]) -> None:
    check(example_for(schema), schema)


def test_example_is_deterministic_and_ordered() -> None:
    schema = SCHEMAS[19]
    value = example_for(schema)
    assert value == example_for(schema)
    assert list(value) == ["kind", "when", "maybe", "list"]
    assert value["kind"] == "A" and value["when"] == "2024-01-01T00:00:00Z"


def test_unsatisfiable_recursion_terminates() -> None:
    node = {"type": "object", "properties": {"next": {"$ref": "#"}}, "required": ["next"]}
    assert isinstance(example_for(node), dict)


def test_no_schema_means_empty_arguments() -> None:
    assert example_for(None) == {}
    assert example_for({"type": "object"}) == {}
