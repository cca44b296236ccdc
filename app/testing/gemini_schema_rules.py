"""What Google checks in a generateContent body after it parsed: the fake's rules.

Owns: stage 2, the field lines (`* GenerateContentRequest.<path>: <text>`, every one,
paths in snake_case with list indexes and map keys: `properties[city]`), and stage 3,
the request-level sentences (one, the first found). Input is the parser's normalized
body: camelCase keys, lists for repeated fields, enum value names.

Texts marked "seen" are Google's own, from public error reports (docs/gemini-facts.md#request,
#schemas, #thought-signatures, #errors); the others are worded in Google's style because no report of
the real text was found. Vertex answers with its own sentences, kept in `vertex`
where they are known.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple

from app.testing.gemini_schema_tables import MESSAGES, Backend, to_snake

Node = Mapping[str, Any]


class Violation(NamedTuple):
    path: str  # after "GenerateContentRequest."
    text: str
    vertex: str | None = None  # Vertex's own sentence, when known


# -- texts ---------------------------------------------------------------------------
VERTEX_MODEL_DOC: Final = "https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/gemini"
VERTEX_FC_DOC: Final = "https://cloud.google.com/vertex-ai/generative-ai/docs/multimodal/function-calling"

NO_CONTENTS: Final = "contents is not specified"  # seen
VX_NO_CONTENTS: Final = (
    f"Unable to submit request because at least one contents field is required. Learn more: {VERTEX_MODEL_DOC}"
)
EMPTY_PARTS: Final = "contents.parts must not be empty."  # seen
VX_EMPTY_PARTS: Final = (
    "Unable to submit request because it must include at least one parts field, "
    f"which describes the prompt input. Learn more: {VERTEX_MODEL_DOC}"
)
NO_DATA: Final = "required oneof field 'data' must have one initialized field"  # seen
MISSING: Final = "missing field."  # seen (for `items`)
INVALID_FUNCTION_NAME: Final = (  # seen, with 64
    "Invalid function name. Must start with a letter or an underscore. Must be alphameric "
    "(a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64."
)
OBJECT_NEEDS_PROPERTIES: Final = "should be non-empty for OBJECT type"  # seen
ONLY_FOR_OBJECT: Final = "only allowed for OBJECT type"  # seen
ONLY_FOR_STRING: Final = "only allowed for STRING type"
CANNOT_BE_EMPTY: Final = "cannot be empty"  # seen (enum values)
STRING_FORMATS: Final = "only 'enum' and 'date-time' are supported for STRING type"  # seen
PROPERTY_NOT_DEFINED: Final = "property is not defined"
VX_NO_SCHEMA_TYPE: Final = (  # seen
    "Unable to submit request because one or more function parameters didn't specify the schema type field. "
    f"Learn more: {VERTEX_FC_DOC}"
)
SYSTEM_TEXT_ONLY: Final = "only text parts are allowed in system_instruction."
MIME_TYPES_TEXT: Final = (
    "allowed mimetypes are `text/plain`, `application/json`, `application/xml`, `application/yaml` and `text/x.enum`."
)
RESPONSE_MIME_TYPES: Final = frozenset(
    {"text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum"}
)

VALID_ROLE: Final = "Please use a valid role: user, model."  # seen
FR_AFTER_FC: Final = "Please ensure that function response turn comes immediately after a function call turn."  # seen
FC_AFTER_USER: Final = (  # seen
    "Please ensure that function call turn comes immediately after a user turn or after a function response turn."
)
FR_COUNT: Final = (  # seen
    "Please ensure that the number of function response parts is equal to the number of function call parts "
    "of the function call turn."
)
THINKING_BOTH: Final = "You can only set only one of thinking budget and thinking level."  # seen

FUNCTION_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}\Z")
MAX_STOP_SEQUENCES: Final = 5
PART_DATA: Final = tuple(name for name, f in MESSAGES["Part"].items() if f.oneof == "data")
RESPONSE_PART_DATA: Final = tuple(name for name, f in MESSAGES["FunctionResponsePart"].items() if f.oneof == "data")


def _vx_parameters_not_object(name: str) -> str:  # seen
    return (
        f"Unable to submit request because `{name}` functionDeclaration parameters schema should be of type OBJECT. "
        f"Learn more: {VERTEX_FC_DOC}"
    )


# -- stage 2: field lines ---------------------------------------------------------------
def field_violations(request: Node, backend: Backend) -> list[Violation]:
    """Every field line for this body, contents first, then in document order."""
    out: list[Violation] = []
    _check_contents(request, backend, out)
    for key in request:
        check = _FIELD_CHECKS.get(key)
        if check is not None:
            check(request, backend, out)
    return out


def _check_contents(request: Node, backend: Backend, out: list[Violation]) -> None:
    contents = request.get("contents") or []
    if not contents:
        out.append(Violation("contents", NO_CONTENTS, VX_NO_CONTENTS))
    for i, content in enumerate(contents):
        path = f"contents[{i}]"
        parts = content.get("parts") or []
        if not parts:
            out.append(Violation(f"{path}.parts", EMPTY_PARTS, VX_EMPTY_PARTS))
        for j, part in enumerate(parts):
            _check_part(part, f"{path}.parts[{j}]", out)


def _check_part(part: Node, path: str, out: list[Violation]) -> None:
    if not any(name in part for name in PART_DATA):
        out.append(Violation(f"{path}.data", NO_DATA))
    call = part.get("functionCall")
    if call is not None and not call.get("name"):
        out.append(Violation(f"{path}.function_call.name", MISSING))
    response = part.get("functionResponse")
    if response is not None:
        if not response.get("name"):
            out.append(Violation(f"{path}.function_response.name", MISSING))
        for k, response_part in enumerate(response.get("parts") or []):
            if not any(name in response_part for name in RESPONSE_PART_DATA):
                out.append(Violation(f"{path}.function_response.parts[{k}].data", NO_DATA))


def _check_system_instruction(request: Node, backend: Backend, out: list[Violation]) -> None:
    for j, part in enumerate(request["systemInstruction"].get("parts") or []):
        path = f"system_instruction.parts[{j}]"
        _check_part(part, path, out)
        if any(name in part for name in PART_DATA if name != "text"):
            out.append(Violation(path, SYSTEM_TEXT_ONLY))


def _check_tools(request: Node, backend: Backend, out: list[Violation]) -> None:
    for t, tool in enumerate(request["tools"]):
        for d, declaration in enumerate(tool.get("functionDeclarations") or []):
            path = f"tools[{t}].function_declarations[{d}]"
            name = declaration.get("name", "")
            if not FUNCTION_NAME.match(name):
                out.append(Violation(f"{path}.name", INVALID_FUNCTION_NAME))
            for schema_key, json_key in (("parameters", "parametersJsonSchema"), ("response", "responseJsonSchema")):
                if schema_key in declaration and json_key in declaration:
                    text = f"{schema_key} and {to_snake(json_key)} cannot both be set."
                    out.append(Violation(f"{path}.{schema_key}", text))
            if "parameters" in declaration:
                parameters = declaration["parameters"]
                if backend == "vertex" and (parameters.get("type") != "OBJECT" or not parameters.get("properties")):
                    vertex = _vx_parameters_not_object(name)
                    out.append(Violation(f"{path}.parameters", OBJECT_NEEDS_PROPERTIES, vertex))
                _check_schema(parameters, f"{path}.parameters", backend, out, function_parameters=True)
            if "response" in declaration:
                _check_schema(declaration["response"], f"{path}.response", backend, out)


def _check_schema(
    node: Node, path: str, backend: Backend, out: list[Violation], *, function_parameters: bool = False
) -> None:
    """The OpenAPI-subset `Schema` rules, recursively, in document order."""
    kind = node.get("type")
    properties = node.get("properties") or {}
    if function_parameters and backend == "vertex" and kind in (None, "TYPE_UNSPECIFIED") and "anyOf" not in node:
        out.append(Violation(f"{path}.type", MISSING, VX_NO_SCHEMA_TYPE))
    if kind == "ARRAY" and "items" not in node:
        out.append(Violation(f"{path}.items", MISSING))
    if kind == "OBJECT" and not properties and "anyOf" not in node and "additionalProperties" not in node:
        out.append(Violation(f"{path}.properties", OBJECT_NEEDS_PROPERTIES))
    if properties and kind != "OBJECT":
        out.append(Violation(f"{path}.properties", ONLY_FOR_OBJECT))
    required = node.get("required") or []
    if required and kind != "OBJECT":
        out.append(Violation(f"{path}.required", ONLY_FOR_OBJECT))
    elif required:
        out.extend(
            Violation(f"{path}.required[{i}]", PROPERTY_NOT_DEFINED)
            for i, name in enumerate(required)
            if name not in properties
        )
    enum = node.get("enum") or []
    if enum and kind != "STRING" and node.get("format") != "enum":
        out.append(Violation(f"{path}.enum", ONLY_FOR_STRING))
    out.extend(Violation(f"{path}.enum[{i}]", CANNOT_BE_EMPTY) for i, value in enumerate(enum) if value == "")
    fmt = node.get("format")
    if kind == "STRING" and fmt is not None and fmt not in ("enum", "date-time"):
        out.append(Violation(f"{path}.format", STRING_FORMATS))
    for key, value in node.items():
        if key == "items":
            _check_schema(value, f"{path}.items", backend, out, function_parameters=function_parameters)
        elif key in ("properties", "defs"):
            for name, child in value.items():
                child_path = f"{path}.{key}[{name}]"
                _check_schema(child, child_path, backend, out, function_parameters=function_parameters)
        elif key == "anyOf":
            for i, child in enumerate(value):
                _check_schema(child, f"{path}.any_of[{i}]", backend, out, function_parameters=function_parameters)


def _check_tool_config(request: Node, backend: Backend, out: list[Violation]) -> None:
    calling = request["toolConfig"].get("functionCallingConfig") or {}
    allowed = calling.get("allowedFunctionNames") or []
    if not allowed:
        return
    path = "tool_config.function_calling_config.allowed_function_names"
    if calling.get("mode") not in ("ANY", "VALIDATED"):
        out.append(Violation(path, "allowed_function_names may only be set when mode is ANY or VALIDATED."))
    declared = {
        declaration.get("name")
        for tool in request.get("tools") or []
        for declaration in tool.get("functionDeclarations") or []
    }
    out.extend(
        Violation(f"{path}[{i}]", f'function "{name}" is not declared in tools.')
        for i, name in enumerate(allowed)
        if name not in declared
    )


def _check_generation_config(request: Node, backend: Backend, out: list[Violation]) -> None:
    config = request["generationConfig"]
    path = "generation_config"
    if len(config.get("stopSequences") or []) > MAX_STOP_SEQUENCES:
        out.append(Violation(f"{path}.stop_sequences", f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed."))
    mime = config.get("responseMimeType")
    if mime and mime not in RESPONSE_MIME_TYPES:
        out.append(Violation(f"{path}.response_mime_type", MIME_TYPES_TEXT))
    if "responseSchema" in config:
        if "responseJsonSchema" in config:
            text = "response_schema and response_json_schema cannot both be set."
            out.append(Violation(f"{path}.response_schema", text))
        elif mime not in ("application/json", "text/x.enum"):
            text = "response_mime_type must be application/json or text/x.enum when response_schema is set."
            out.append(Violation(f"{path}.response_mime_type", text))
        _check_schema(config["responseSchema"], f"{path}.response_schema", backend, out)
    elif "responseJsonSchema" in config and mime != "application/json":
        text = "response_mime_type must be application/json when response_json_schema is set."
        out.append(Violation(f"{path}.response_mime_type", text))
    if "logprobs" in config and not config.get("responseLogprobs"):
        out.append(Violation(f"{path}.logprobs", "logprobs can only be set when response_logprobs is true."))


_FIELD_CHECKS: Final[Mapping[str, Callable[[Node, Backend, list[Violation]], None]]] = {
    "systemInstruction": _check_system_instruction,
    "tools": _check_tools,
    "toolConfig": _check_tool_config,
    "generationConfig": _check_generation_config,
}


# -- stage 3: request sentences -----------------------------------------------------------
def request_violation(request: Node, backend: Backend) -> str | None:
    """The first request-level refusal, in document order, or None."""
    for key in request:
        if key == "contents":
            sentence = _check_roles(request["contents"], backend) or _check_turns(request["contents"])
        elif key == "generationConfig":
            sentence = _check_generation_values(request["generationConfig"])
        else:
            continue
        if sentence is not None:
            return sentence
    return None


def _check_roles(contents: list[Node], backend: Backend) -> str | None:
    for content in contents:
        role = content.get("role", "")
        # The Gemini API takes a missing role as `user`; Vertex refuses it.
        if role not in ("user", "model") and not (role == "" and backend == "gemini"):
            return VALID_ROLE
    return None


class _Turn(NamedTuple):
    role: str
    calls: int
    responses: int


def _turns(contents: list[Node]) -> list[_Turn]:
    """Consecutive contents of one role form one turn."""
    turns: list[_Turn] = []
    for content in contents:
        role = content.get("role") or "user"
        parts = content.get("parts") or []
        calls = sum(1 for part in parts if "functionCall" in part)
        responses = sum(1 for part in parts if "functionResponse" in part)
        if turns and turns[-1].role == role:
            last = turns.pop()
            calls, responses = calls + last.calls, responses + last.responses
        turns.append(_Turn(role, calls, responses))
    return turns


def _check_turns(contents: list[Node]) -> str | None:
    previous: _Turn | None = None
    for turn in _turns(contents):
        if turn.role == "model" and turn.calls and previous is None:
            return FC_AFTER_USER
        if turn.role == "user" and turn.responses:
            if previous is None or not previous.calls:
                return FR_AFTER_FC
            if turn.responses != previous.calls:
                return FR_COUNT
        previous = turn
    return None


class _Range(NamedTuple):
    low: float
    high: float
    integer: bool  # integers print the bound as "high + 1 (exclusive)", as Google does


_RANGES: Final[Mapping[str, _Range]] = {
    "candidateCount": _Range(1, 8, True),
    "maxOutputTokens": _Range(1, 65536, True),
    "temperature": _Range(0, 2, False),
    "topP": _Range(0, 1, False),
    "logprobs": _Range(0, 20, True),
}


def _check_generation_values(config: Node) -> str | None:
    thinking = config.get("thinkingConfig") or {}
    if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
        return THINKING_BOTH
    for name, bounds in _RANGES.items():
        value = config.get(name)
        if value is None or bounds.low <= value <= bounds.high:
            continue
        if bounds.integer:
            upper = f"{int(bounds.high) + 1} (exclusive)"
        else:
            upper = f"{_number(bounds.high)} (inclusive)"
        return (  # seen for maxOutputTokens
            f"Unable to submit request because it has a {name} value of {_number(value)} but the supported range "
            f"is from {_number(bounds.low)} (inclusive) to {upper}. Update the value and try again."
        )
    return None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
