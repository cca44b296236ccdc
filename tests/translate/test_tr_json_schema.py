"""`json_schema.to_json_schema` / `to_openapi_schema`: each rule of the module docstring, then a
property test over pydantic models as the openai SDK's `.parse()` sends them.

Oracles: the fake Gemini's strict request validator (both backends) and google-genai's
`types.Schema` (which forbids unknown fields).
"""

from __future__ import annotations

import copy
import datetime
import enum
import itertools
import json
import warnings
from typing import Any, ForwardRef, Literal, Optional, Union

import pytest
from google.genai import types as gtypes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field, create_model

from app.testing.gemini_schema import validate_generate_content
from app.translate.json_schema import to_json_schema, to_openapi_schema

from .tr_oracles import subset_rule_violations

BACKENDS = ("gemini", "vertex")


def response_body(**generation: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": generation}


def accepted_as_response_schema(schema: dict[str, Any]) -> None:
    gtypes.Schema.model_validate(schema)
    assert subset_rule_violations(schema) == []
    for backend in BACKENDS:
        validate_generate_content(response_body(responseMimeType="application/json", responseSchema=schema), backend)


def accepted_as_parameters(schema: dict[str, Any]) -> None:
    body = {
        "contents": [{"role": "user", "parts": [{"text": "x"}]}],
        "tools": [{"functionDeclarations": [{"name": "f", "parameters": schema}]}],
    }
    for backend in BACKENDS:
        validate_generate_content(body, backend)


def accepted_as_json_schema(schema: dict[str, Any]) -> None:
    for backend in BACKENDS:
        validate_generate_content(response_body(responseMimeType="application/json", responseJsonSchema=schema), backend)
        body = {
            "contents": [{"role": "user", "parts": [{"text": "x"}]}],
            "tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": schema}]}],
        }
        validate_generate_content(body, backend)


# -- to_json_schema -------------------------------------------------------------------------


def test_json_schema_drops_dollar_schema_at_every_level() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"a": {"$schema": "x", "type": "string"}},
    }
    assert to_json_schema(schema) == {"type": "object", "properties": {"a": {"type": "string"}}}


def test_json_schema_ref_node_keeps_only_ref_description_and_default() -> None:
    schema = {
        "type": "object",
        "properties": {"p": {"$ref": "#/$defs/P", "description": "d", "default": None, "title": "T", "nullable": True}},
        "$defs": {"P": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    }
    out = to_json_schema(schema)
    assert out["properties"]["p"] == {"$ref": "#/$defs/P", "description": "d", "default": None}
    assert out["$defs"] == schema["$defs"]
    accepted_as_json_schema(out)


def test_json_schema_keeps_what_gemini_accepts_or_ignores() -> None:
    schema = {
        "type": "object",
        "properties": {
            "kind": {"const": "a"},
            "n": {"type": ["integer", "null"], "exclusiveMinimum": 0},
            "m": {"oneOf": [{"type": "string"}, {"type": "number"}]},
            "tags": {"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "string"}},
        },
        "additionalProperties": False,
        "required": ["kind"],
    }
    assert to_json_schema(schema) == schema
    accepted_as_json_schema(schema)


def test_json_schema_does_not_modify_its_input() -> None:
    schema = {"$schema": "x", "properties": {"p": {"$ref": "#/$defs/P", "title": "T"}}, "$defs": {"P": {"type": "string"}}}
    before = copy.deepcopy(schema)
    to_json_schema(schema)
    assert schema == before


# -- to_openapi_schema: one test per rule ----------------------------------------------------


def test_openapi_inlines_refs_and_defs() -> None:
    schema = {
        "type": "object",
        "properties": {"owner": {"$ref": "#/$defs/Person", "description": "who owns it"}},
        "required": ["owner"],
        "$defs": {"Person": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
    }
    out = to_openapi_schema(schema)
    assert out.schema == {
        "type": "OBJECT",
        "properties": {
            "owner": {
                "type": "OBJECT",
                "properties": {"name": {"type": "STRING"}},
                "propertyOrdering": ["name"],
                "required": ["name"],
                "description": "who owns it",
            }
        },
        "propertyOrdering": ["owner"],
        "required": ["owner"],
    }
    assert out.dropped == []
    accepted_as_response_schema(out.schema)
    accepted_as_parameters(out.schema)


def test_openapi_resolves_json_pointer_escapes_and_legacy_definitions() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/definitions/a~1b"}, "b": {"$ref": "#/definitions/c~0d"}},
        "definitions": {"a/b": {"type": "integer"}, "c~d": {"type": "boolean"}},
    }
    props = to_openapi_schema(schema).schema["properties"]
    assert props == {"a": {"type": "INTEGER"}, "b": {"type": "BOOLEAN"}}


def test_openapi_anyof_with_null_becomes_nullable() -> None:
    out = to_openapi_schema({"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}], "description": "d"})
    assert out.schema == {"type": "STRING", "maxLength": 5, "description": "d", "nullable": True}


def test_openapi_anyof_of_several_types_stays_anyof() -> None:
    out = to_openapi_schema({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]})
    assert out.schema == {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}], "nullable": True}
    accepted_as_response_schema(out.schema)


def test_openapi_type_arrays_are_split() -> None:
    assert to_openapi_schema({"type": ["string", "null"]}).schema == {"type": "STRING", "nullable": True}
    out = to_openapi_schema({"type": ["string", "integer"], "description": "either"})
    assert out.schema["anyOf"] == [{"type": "STRING", "description": "either"}, {"type": "INTEGER", "description": "either"}]
    assert to_openapi_schema({"type": ["null"]}).schema == {"type": "STRING", "nullable": True}
    accepted_as_response_schema(out.schema)


def test_openapi_const_becomes_one_value_enum() -> None:
    assert to_openapi_schema({"const": "red"}).schema == {"type": "STRING", "enum": ["red"]}
    out = to_openapi_schema({"type": "integer", "const": 3})
    assert out.schema == {"type": "INTEGER"} and out.dropped == ["enum"]  # the subset's enum is strings only


def test_openapi_oneof_is_read_as_anyof() -> None:
    out = to_openapi_schema({"oneOf": [{"type": "string"}, {"type": "boolean"}]})
    assert out.schema == {"anyOf": [{"type": "STRING"}, {"type": "BOOLEAN"}]}


def test_openapi_allof_is_merged() -> None:
    schema = {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer"}}, "required": ["b", "a"]},
        ]
    }
    out = to_openapi_schema(schema).schema
    assert out["type"] == "OBJECT"
    assert out["properties"] == {"a": {"type": "STRING"}, "b": {"type": "INTEGER"}}
    assert out["required"] == ["a", "b"]
    accepted_as_response_schema(out)


def test_openapi_allof_part_that_only_annotates_keeps_the_type() -> None:
    schema = {
        "type": "object",
        "properties": {"p": {"allOf": [{"$ref": "#/$defs/P"}, {"description": "the p"}]}, "q": {"allOf": [{"description": "q"}, {"$ref": "#/$defs/P"}]}},
        "$defs": {"P": {"type": "object", "properties": {"x": {"type": "string"}}}},
    }
    props = to_openapi_schema(schema).schema["properties"]
    for name in ("p", "q"):
        assert props[name]["type"] == "OBJECT" and props[name]["properties"] == {"x": {"type": "STRING"}}
    assert props["p"]["description"] == "the p"
    accepted_as_response_schema({"type": "OBJECT", "properties": props})


@pytest.mark.parametrize(
    "keyword, value",
    [
        ("additionalProperties", False),
        ("patternProperties", {"^x": {"type": "string"}}),
        ("propertyNames", {"pattern": "^[a-z]+$"}),
        ("not", {"type": "null"}),
        ("if", {"type": "object"}),
        ("unevaluatedProperties", False),
        ("dependentRequired", {"a": ["b"]}),
    ],
)
def test_openapi_drops_and_reports_keywords_the_subset_lacks(keyword: str, value: Any) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, keyword: value}
    out = to_openapi_schema(schema)
    assert keyword not in out.schema and keyword in out.dropped
    accepted_as_response_schema(out.schema)


@pytest.mark.parametrize("keyword", ["$schema", "$id", "$comment"])
def test_openapi_drops_metadata_keywords_without_reporting_them(keyword):
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, keyword: "x"}
    out = to_openapi_schema(schema)
    assert keyword not in out.schema and out.dropped == []
    accepted_as_response_schema(out.schema)


@pytest.mark.parametrize("keyword", ["exclusiveMinimum", "exclusiveMaximum", "multipleOf"])
def test_openapi_drops_numeric_keywords_the_subset_lacks(keyword: str) -> None:
    out = to_openapi_schema({"type": "number", "minimum": 0, keyword: 5})
    assert out.schema == {"type": "NUMBER", "minimum": 0} and out.dropped == [keyword]


def test_openapi_keeps_subset_keywords() -> None:
    schema = {
        "type": "object",
        "title": "T",
        "description": "D",
        "properties": {
            "s": {"type": "string", "minLength": 1, "maxLength": 9, "pattern": "^a", "format": "date-time", "default": "a", "example": "ab"},
            "n": {"type": "number", "minimum": 0, "maximum": 1, "format": "double"},
            "i": {"type": "integer", "format": "int64"},
            "l": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
            "e": {"type": "string", "enum": ["x", "y"]},
        },
        "minProperties": 1,
        "maxProperties": 5,
        "required": ["s"],
    }
    out = to_openapi_schema(schema)
    assert out.dropped == []
    props = out.schema["properties"]
    assert props["s"] == {"type": "STRING", "minLength": 1, "maxLength": 9, "pattern": "^a", "default": "a", "example": "ab", "format": "date-time"}
    assert props["n"] == {"type": "NUMBER", "minimum": 0, "maximum": 1, "format": "double"}
    assert props["i"] == {"type": "INTEGER", "format": "int64"}
    assert props["l"] == {"type": "ARRAY", "items": {"type": "BOOLEAN"}, "minItems": 1, "maxItems": 3}
    assert props["e"] == {"type": "STRING", "enum": ["x", "y"]}
    assert (out.schema["title"], out.schema["minProperties"], out.schema["maxProperties"]) == ("T", 1, 5)
    accepted_as_response_schema(out.schema)


@pytest.mark.parametrize("fmt", ["date", "email", "uri", "uuid", "time", "hostname"])
def test_openapi_drops_string_formats_gemini_refuses(fmt: str) -> None:
    """Gemini: `format: only 'enum' and 'date-time' are supported for STRING type`."""
    out = to_openapi_schema({"type": "object", "properties": {"d": {"type": "string", "format": fmt}}})
    assert out.schema["properties"]["d"] == {"type": "STRING"} and out.dropped == ["format"]


def test_openapi_enum_of_non_strings_is_dropped_and_empty_strings_removed() -> None:
    out = to_openapi_schema({"type": "integer", "enum": [1, 2]})
    assert out.schema == {"type": "INTEGER"} and out.dropped == ["enum"]
    out = to_openapi_schema({"type": "string", "enum": ["", "a"]})
    assert out.schema == {"type": "STRING", "enum": ["a"]} and out.dropped == ["enum"]
    accepted_as_response_schema(out.schema)
    out = to_openapi_schema({"type": "string", "enum": [""]})
    assert out.schema == {"type": "STRING"}


def test_openapi_examples_become_example() -> None:
    out = to_openapi_schema({"type": "string", "examples": ["a", "b"]})
    assert out.schema == {"type": "STRING", "example": "a"} and out.dropped == []


def test_openapi_required_is_filtered_to_declared_properties() -> None:
    out = to_openapi_schema({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "ghost"]})
    assert out.schema["required"] == ["a"]
    accepted_as_response_schema(out.schema)


def test_openapi_type_is_inferred_when_missing() -> None:
    assert to_openapi_schema({"properties": {"a": {"type": "string"}}}).schema["type"] == "OBJECT"
    assert to_openapi_schema({"items": {"type": "string"}}).schema["type"] == "ARRAY"
    assert to_openapi_schema({"enum": ["a"]}).schema == {"type": "STRING", "enum": ["a"]}


def test_openapi_array_without_items_gets_string_items() -> None:
    """Gemini: `items: missing field`."""
    assert to_openapi_schema({"type": "array"}).schema == {"type": "ARRAY", "items": {"type": "STRING"}}
    out = to_openapi_schema({"type": "array", "items": [{"type": "integer"}, {"type": "string"}]})  # tuple form
    assert out.schema == {"type": "ARRAY", "items": {"type": "INTEGER"}}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},
        {"type": "object", "properties": {}},
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"type": "object", "description": "free form", "additionalProperties": True, "title": "Bag"},
    ],
)
def test_openapi_free_form_object_travels_as_a_string(schema: dict[str, Any]) -> None:
    """Gemini: `properties: should be non-empty for OBJECT type`; the subset cannot say "any object"."""
    out = to_openapi_schema({"type": "object", "properties": {"bag": schema}})
    bag = out.schema["properties"]["bag"]
    assert bag["type"] == "STRING" and "properties" not in bag
    assert {k: bag[k] for k in ("title", "description") if k in schema} == {k: schema[k] for k in ("title", "description") if k in schema}
    assert out.dropped
    accepted_as_response_schema(out.schema)
    accepted_as_parameters(out.schema)


@pytest.mark.parametrize("schema", [True, {}, {"description": "anything"}])
def test_openapi_any_schema_is_a_string(schema: Any) -> None:
    out = to_openapi_schema({"type": "object", "properties": {"x": schema}})
    assert out.schema["properties"]["x"]["type"] == "STRING"


def test_openapi_recursive_ref_is_cut_and_reported() -> None:
    schema = {
        "$ref": "#/$defs/Node",
        "$defs": {"Node": {"type": "object", "properties": {"v": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}}}},
    }
    out = to_openapi_schema(schema)
    depth, node = 0, out.schema
    while "next" in node.get("properties", {}):
        node, depth = node["properties"]["next"], depth + 1
    assert 1 < depth <= 10
    assert node == {"type": "STRING", "nullable": True}
    assert out.dropped == ["$ref"]
    accepted_as_response_schema(out.schema)


def test_openapi_unresolvable_ref_is_a_string_and_reported() -> None:
    out = to_openapi_schema({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}, "b": {"$ref": "#/$defs/nope"}}})
    assert out.schema["properties"] == {"a": {"type": "STRING"}, "b": {"type": "STRING"}}
    assert out.dropped == ["$ref"]


def test_openapi_dropped_keywords_are_listed_once_in_first_seen_order() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "a": {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": False},
            "b": {"type": "integer", "exclusiveMinimum": 0},
        },
    }
    assert to_openapi_schema(schema).dropped == ["additionalProperties", "exclusiveMinimum"]


def test_openapi_does_not_modify_its_input() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"const": 1}, "b": {"$ref": "#/$defs/B", "description": "b"}, "c": {"type": ["string", "null"]}},
        "$defs": {"B": {"allOf": [{"type": "object", "properties": {"x": {"type": "string"}}}]}},
    }
    before = copy.deepcopy(schema)
    to_openapi_schema(schema)
    assert schema == before


# -- property test: pydantic models as the openai SDK sends them ------------------------------


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 2


LEAVES: list[Any] = [
    str,
    int,
    float,
    bool,
    Color,
    Size,
    Literal["a", "b"],
    Literal["", "x"],
    Literal[1, 2],
    Literal["only"],
    datetime.date,
    datetime.datetime,
]

_names = itertools.count()
field_names = st.from_regex(r"f[a-z0-9_]{0,6}", fullmatch=True)
descriptions = st.one_of(st.none(), st.text(min_size=1, max_size=12))


def _model(fields: list[tuple[str, Any, str | None]]) -> type[BaseModel]:
    spec = {name: (tp, Field(description=desc) if desc else ...) for name, tp, desc in fields}
    return create_model(f"M{next(_names)}", **spec)  # type: ignore[call-overload]


def _recursive_model(payload: Any, shape: str) -> type[BaseModel]:
    name = f"R{next(_names)}"
    ref = ForwardRef(name)
    fields: dict[str, Any] = {"value": (payload, ...)}
    if shape in ("list", "both"):
        fields["children"] = (list[ref], ...)  # type: ignore[valid-type]
    if shape in ("optional", "both"):
        fields["parent"] = (Optional[ref], None)  # type: ignore[valid-type]  # noqa: UP045 (a ForwardRef has no `|`)
    model = create_model(name, **fields)  # type: ignore[call-overload]
    model.model_rebuild(_types_namespace={name: model})
    return model


def _annotations() -> st.SearchStrategy[Any]:
    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(
            inner.map(lambda t: Optional[t]),  # noqa: UP045 (built at run time, any annotation)
            inner.map(lambda t: list[t]),  # type: ignore[valid-type]
            inner.map(lambda t: dict[str, t]),  # type: ignore[valid-type]
            st.tuples(inner, inner).map(lambda ts: Union[ts[0], ts[1]]),  # noqa: UP007 (built at run time, any annotation)
            st.lists(st.tuples(field_names, inner, descriptions), min_size=1, max_size=4, unique_by=lambda f: f[0]).map(_model),
            st.tuples(inner, st.sampled_from(["list", "optional", "both"])).map(lambda a: _recursive_model(*a)),
        )

    return st.recursive(st.sampled_from(LEAVES), extend, max_leaves=6)


models = st.lists(st.tuples(field_names, _annotations(), descriptions), min_size=1, max_size=5, unique_by=lambda f: f[0]).map(_model)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(models)
def test_any_pydantic_model_schema_the_openai_sdk_sends_converts(model: type[BaseModel]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = to_strict_json_schema(model)
    before = copy.deepcopy(schema)

    converted = to_openapi_schema(schema)
    assert schema == before
    assert converted.schema["type"] == "OBJECT"
    assert list(converted.schema["properties"]) == list(schema["properties"])
    assert converted.schema["required"] == schema["required"]
    accepted_as_response_schema(converted.schema)
    accepted_as_parameters(converted.schema)
    assert len(set(converted.dropped)) == len(converted.dropped)

    cleaned = to_json_schema(schema)
    assert schema == before
    assert "$schema" not in json.dumps(cleaned)
    accepted_as_json_schema(cleaned)


@settings(max_examples=60, deadline=None)
@given(models)
def test_openapi_conversion_is_deterministic_and_json_serialisable(model: type[BaseModel]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        schema = to_strict_json_schema(model)
    first, second = to_openapi_schema(schema), to_openapi_schema(copy.deepcopy(schema))
    assert json.dumps(first.schema) == json.dumps(second.schema)
    assert first.dropped == second.dropped
