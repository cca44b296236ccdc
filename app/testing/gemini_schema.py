"""Strict validation of generateContent / streamGenerateContent request bodies.

Owns: `validate_generate_content(body, backend)`, which raises `GoogleError` (400) with
the texts Google's API answers a refused body with, and the proto-JSON parser behind it.
Google checks a body in three stages, and so does this module:

1. **Parsing** (Google's JSON -> proto converter; protobuf `util/internal/proto_writer.cc`
   and `datapiece.cc` are the model): unknown names, a list for a non-repeated field, an
   object for a scalar, bad numbers / enums / base64, two members of one oneof. Every
   parse error is reported, in document order, one per line, each with a
   `google.rpc.BadRequest` field violation. Lenient where the converter is: camelCase
   and snake_case names, `null` = unset, numbers in strings, enum names in any case,
   a single value for a repeated field.
2. **Field validation** (`gemini_schema_rules.field_violations`): the
   `* GenerateContentRequest.<path>: <text>` lines, all of them, one per line.
3. **Request checks** (`gemini_schema_rules.request_violation`): one plain sentence
   (roles, function-call turns, thinking config, value ranges).

Vertex answers stage 2 with one sentence, its own where it is known.
The proto description lives in `gemini_schema_tables`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, Final

from app.testing.gemini_schema_rules import Violation, field_violations, request_violation
from app.testing.gemini_schema_tables import (
    ENUM_TYPE_URLS,
    ENUM_VALUES,
    FIELD_MAPS,
    MESSAGE_TYPE_URLS,
    SCALAR_TYPE_NAMES,
    WELL_KNOWN_TYPES,
    Backend,
    FieldInfo,
)
from app.testing.google_errors import invalid_argument, parse_errors

__all__ = ["Backend", "parse_request", "validate_generate_content"]

NOT_REPEATING: Final = "Proto field is not repeating, cannot start list."
ROOT_MESSAGE: Final = "GenerateContentRequest"


def validate_generate_content(body: object, backend: Backend) -> None:
    """Raise GoogleError (400) exactly as Google's API would for this generateContent /
    streamGenerateContent request body; return None when Google would accept it."""
    parser = _Parser(backend)
    request = parser.root(body)
    if parser.errors:
        raise parse_errors(parser.errors)
    violations = field_violations(request, backend)
    if violations:
        raise invalid_argument(_field_violations_message(violations, backend))
    sentence = request_violation(request, backend)
    if sentence is not None:
        raise invalid_argument(sentence)


def parse_request(body: object, backend: Backend, root: str) -> dict[str, Any]:
    """Stage 1 alone for another request message of the table (`BatchEmbedContentsRequest`,
    `EmbedContentRequest`, `PredictRequest`): the body normalized (camelCase names, enum value
    names, `null`s dropped), or GoogleError (400) with every parse error, as Google reports them."""
    parser = _Parser(backend)
    if not isinstance(body, dict):
        parser._unknown("", "", "Root element must be a message.")
        raise parse_errors(parser.errors)
    request = parser.message(root, body, "")
    if parser.errors:
        raise parse_errors(parser.errors)
    return request


def _field_violations_message(violations: list[Violation], backend: Backend) -> str:
    if backend == "vertex":
        first = violations[0]
        return first.vertex or f"* {ROOT_MESSAGE}.{first.path}: {first.text}\n"
    return "".join(f"* {ROOT_MESSAGE}.{v.path}: {v.text}\n" for v in violations)


# --- stage 1: proto-JSON parsing -------------------------------------------------------

_BAD: Final = object()  # a value that failed to parse (already reported)

_INT_RE = re.compile(r"[-+]?[0-9]+\Z")
_FLOAT_RE = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_DURATION_RE = re.compile(r"-?[0-9]+(?:\.[0-9]{1,9})?s\Z")
_TIMESTAMP_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:Z|[+-][0-9]{2}:[0-9]{2})\Z"
)
_BASE64_STD = re.compile(r"[A-Za-z0-9+/]*\Z")
_BASE64_WEB = re.compile(r"[A-Za-z0-9_-]*\Z")
_INT_RANGES: Final = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_FLOAT_MAX: Final = 3.4028234663852886e38
_TRUE_WORDS: Final = frozenset({"true", "t", "yes", "y", "1"})
_FALSE_WORDS: Final = frozenset({"false", "f", "no", "n", "0"})


class _Parser:
    """Walks a JSON body as Google's converter does, collecting every parse error.

    Returns the body normalized for stage 2: messages as dicts keyed by camelCase
    name, repeated fields as lists, enums as value names, `null`s dropped.
    """

    def __init__(self, backend: Backend) -> None:
        self.fields = FIELD_MAPS[backend]
        self.enum_values = ENUM_VALUES[backend]
        self.enum_urls = ENUM_TYPE_URLS[backend]
        self.message_urls = MESSAGE_TYPE_URLS[backend]
        self.errors: list[tuple[str, str]] = []  # (field path, description)

    def root(self, body: object) -> dict[str, Any]:
        if not isinstance(body, dict):
            self._unknown("", "", "Root element must be a message.")
            return {}
        return self.message(ROOT_MESSAGE, body, "")

    def message(self, name: str, obj: Mapping[str, Any], loc: str) -> dict[str, Any]:
        fields = self.fields[name]
        out: dict[str, Any] = {}
        oneofs_taken: set[str] = set()
        for key, raw in obj.items():
            info = fields.get(key)
            if info is None:
                self._unknown(key, loc, "Cannot find field.")
                continue
            if raw is None:
                continue
            field = info.field
            if isinstance(raw, list) and not field.repeated and field.kind != "value":
                self._unknown(key, loc, NOT_REPEATING)
                continue
            if field.oneof:
                if field.oneof in oneofs_taken:
                    message = f"oneof field '{field.oneof}' is already set. Cannot set '{key}'"
                    self._invalid(loc, "oneof", message)
                    continue
                oneofs_taken.add(field.oneof)
            path = f"{loc}.{info.snake}" if loc else info.snake
            value = self._field(name, info, key, raw, loc, path)
            if value is _BAD:
                continue
            if field.repeated and info.camel in out:
                out[info.camel] = out[info.camel] + value
            elif isinstance(value, dict) and isinstance(out.get(info.camel), dict):
                out[info.camel] = {**out[info.camel], **value}
            else:
                out[info.camel] = value
        return out

    def _field(self, message: str, info: FieldInfo, key: str, raw: Any, loc: str, path: str) -> Any:
        field = info.field
        if field.repeated:
            if not isinstance(raw, list):  # the converter takes a lone value as a 1-list
                value = self._element(info, key, raw, loc, path)
                return [] if value is _BAD else [value]
            items = []
            for index, element in enumerate(raw):
                if element is None:
                    continue
                value = self._element(info, key, element, loc, f"{path}[{index}]")
                if value is not _BAD:
                    items.append(value)
            return items
        if field.kind == "map":
            return self._map(message, info, raw, path)
        return self._element(info, key, raw, loc, path)

    def _map(self, message: str, info: FieldInfo, raw: Any, path: str) -> Any:
        ref = info.field.ref
        if not isinstance(raw, dict):
            entry = f"{info.camel[0].upper()}{info.camel[1:]}Entry"
            self._invalid(path, f"{self.message_urls[message]}.{entry}", _render(raw))
            return _BAD
        out: dict[str, Any] = {}
        for index, (key, value) in enumerate(raw.items()):
            if value is None:
                continue
            entry_path = f"{path}[{index}]"
            if ref:  # message values
                if isinstance(value, dict):
                    out[key] = self.message(ref, value, f"{entry_path}.value")
                else:
                    self._invalid(f"{entry_path}.value", self.message_urls[ref], _render(value))
            elif isinstance(value, str):
                out[key] = value
            elif isinstance(value, dict):
                self._invalid(entry_path, "value", "Starting an object on a scalar field")
            else:
                self._invalid(f"{entry_path}.value", SCALAR_TYPE_NAMES["string"], _render(value))
        return out

    def _element(self, info: FieldInfo, key: str, raw: Any, loc: str, path: str) -> Any:
        field = info.field
        kind = field.kind
        if kind == "value":
            return raw
        if isinstance(raw, list):  # a list inside a repeated field's list
            self._unknown(key, loc, NOT_REPEATING)
            return _BAD
        if kind in ("message", "object", "struct"):
            if isinstance(raw, dict):
                return self.message(field.ref, raw, path) if kind == "message" else raw
            type_url = WELL_KNOWN_TYPES["struct"] if kind == "struct" else self.message_urls[field.ref]
            self._invalid(path, type_url, _render(raw))
            return _BAD
        if isinstance(raw, dict):
            self._invalid(loc, info.snake, "Starting an object on a scalar field")
            return _BAD
        if kind == "enum":
            value = _to_enum(self.enum_values[field.ref], raw)
            if value is _BAD:
                self._invalid(path, self.enum_urls[field.ref], _render(raw))
            return value
        value = _SCALARS[kind](raw)
        if value is _BAD:
            type_name = SCALAR_TYPE_NAMES.get(kind) or WELL_KNOWN_TYPES[kind]
            if kind == "bytes" and isinstance(raw, str):
                self._invalid(path, type_name, f"Base64 decoding failed for {_render(raw)}")
            else:
                self._invalid(path, type_name, _render(raw))
        return value

    def _unknown(self, name: str, loc: str, reason: str) -> None:
        where = f" at '{loc}'" if loc else ""
        self.errors.append((loc, f'Invalid JSON payload received. Unknown name "{name}"{where}: {reason}'))

    def _invalid(self, loc: str, type_name: str, value_text: str) -> None:
        where = f" at '{loc}'" if loc else ""
        self.errors.append((loc, f"Invalid value{where} ({type_name}), {value_text}"))


def _render(raw: Any) -> str:
    """A JSON value as the converter prints it in `Invalid value` texts."""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    if isinstance(raw, (int, float)):
        return repr(raw)
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))


def _to_string(raw: Any) -> Any:
    return raw if isinstance(raw, str) else _BAD


def _to_bytes(raw: Any) -> Any:
    return raw if isinstance(raw, str) and is_base64(raw) else _BAD


def is_base64(text: str) -> bool:
    """Standard or URL-safe alphabet (not mixed), padding optional but well-formed."""
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if padding > 2 or (padding and len(text) % 4) or len(body) % 4 == 1:
        return False
    return bool(_BASE64_WEB.match(body) or _BASE64_STD.match(body))


def _to_bool(raw: Any) -> Any:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = raw.lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return _BAD


def _to_int(kind: str) -> Any:
    low, high = _INT_RANGES[kind]

    def convert(raw: Any) -> Any:
        if isinstance(raw, bool):
            return _BAD
        if isinstance(raw, float):
            if not raw.is_integer():
                return _BAD
            raw = int(raw)
        elif isinstance(raw, str):
            if not _INT_RE.match(raw):
                return _BAD
            raw = int(raw)
        elif not isinstance(raw, int):
            return _BAD
        return raw if low <= raw <= high else _BAD

    return convert


def _to_floating(kind: str) -> Any:
    def convert(raw: Any) -> Any:
        if isinstance(raw, bool):
            return _BAD
        if isinstance(raw, str):
            if raw in ("Infinity", "-Infinity", "NaN"):
                return float(raw.replace("Infinity", "inf"))
            if not _FLOAT_RE.match(raw):
                return _BAD
            value = float(raw)
            if math.isinf(value):
                return _BAD
        elif isinstance(raw, (int, float)):
            value = float(raw)
        else:
            return _BAD
        if kind == "float" and math.isfinite(value) and abs(value) > _FLOAT_MAX:
            return _BAD
        return value

    return convert


def _matching(pattern: re.Pattern[str]) -> Any:
    return lambda raw: raw if isinstance(raw, str) and pattern.match(raw) else _BAD


_SCALARS: Final = {
    "string": _to_string,
    "bytes": _to_bytes,
    "bool": _to_bool,
    "int32": _to_int("int32"),
    "int64": _to_int("int64"),
    "float": _to_floating("float"),
    "double": _to_floating("double"),
    "duration": _matching(_DURATION_RE),
    "timestamp": _matching(_TIMESTAMP_RE),
}


def _to_enum(values: tuple[str, ...], raw: Any) -> Any:
    """A value name, its number (in a string or not), or the name in another case."""
    if isinstance(raw, str):
        if raw in values:
            return raw
        if _INT_RE.match(raw):
            number = int(raw)
            return values[number] if 0 <= number < len(values) else _BAD
        normalized = raw.upper().replace("-", "_")
        return normalized if normalized in values else _BAD
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return _BAD
    if isinstance(raw, float):
        if not raw.is_integer():
            return _BAD
        raw = int(raw)
    # The converter keeps unknown numbers; known ones become names for stage 2.
    return values[raw] if 0 <= raw < len(values) else raw
