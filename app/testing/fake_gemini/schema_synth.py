"""Deterministic example values that validate against a schema.

Owns: `example_for(schema)`, used for structured output (`responseJsonSchema`
/ `responseSchema`) and for synthesized function-call arguments
(`parametersJsonSchema` / `parameters`). Accepts both dialects: JSON Schema
(`$ref`/`$defs`, `anyOf`/`oneOf`/`allOf`, `const`, type arrays with "null",
exclusive bounds, `prefixItems`) and Gemini's OpenAPI subset (upper-case
types, `nullable`, `propertyOrdering`, Vertex `ref`/`defs`). `pattern` is not
solved; everything else that constrains a value is respected.
"""

from __future__ import annotations

import math
from typing import Any, overload

MAX_DEPTH = 8  # below this depth optional properties are left out, so recursion ends
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "hostname": "example.com",
    "duration": "P1D",
}


def example_for(schema: Any, name: str = "value") -> Any:
    """A value valid against `schema` (`None` schema -> an empty object)."""
    if schema is None:
        return {}
    return _Synth(schema).value(schema, name, 0)


class _Synth:
    def __init__(self, root: Any) -> None:
        self.root = root

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while isinstance(schema, dict) and ("$ref" in schema or "ref" in schema) and seen < 32:
            ref = schema.get("$ref", schema.get("ref"))
            target = self._lookup(ref) if isinstance(ref, str) else None
            if target is None:
                return {k: v for k, v in schema.items() if k not in ("$ref", "ref")}
            siblings = {k: v for k, v in schema.items() if k not in ("$ref", "ref")}
            schema = {**target, **siblings}
            seen += 1
        return schema

    def _lookup(self, ref: str) -> dict[str, Any] | None:
        if not ref.startswith("#"):
            defs = self.root.get("defs") if isinstance(self.root, dict) else None
            found = defs.get(ref) if isinstance(defs, dict) else None
            return found if isinstance(found, dict) else None
        node: Any = self.root
        for token in ref.lstrip("#").strip("/").split("/") if ref != "#" else []:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                return None
        return node if isinstance(node, dict) else None

    def value(self, schema: Any, name: str, depth: int) -> Any:
        if depth > 2 * MAX_DEPTH:  # only an unsatisfiable schema (required self-reference) gets here
            return None
        if schema is True or not isinstance(schema, dict):
            return f"example {name}"
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        if isinstance(schema.get("allOf"), list):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in schema["allOf"]:
                sub = self.resolve(sub) if isinstance(sub, dict) else {}
                props = {**merged.get("properties", {}), **sub.get("properties", {})}
                required = list(merged.get("required", [])) + list(sub.get("required", []))
                merged = {**sub, **merged, "properties": props, "required": required}
            return self.value(merged, name, depth)
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                pick = next((b for b in branches if not _is_null(self.resolve(b))), branches[0])
                base = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                return self.value({**base, **self.resolve(pick)} if isinstance(pick, dict) else pick, name, depth)
        kind = _kind(schema)
        if kind == "null":
            return None
        if kind == "boolean":
            return True
        if kind in ("integer", "number"):
            return _number(schema, kind == "integer")
        if kind == "array":
            return self.array(schema, name, depth)
        if kind == "object":
            return self.object(schema, depth)
        return _string(schema, name)

    def array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        if not isinstance(prefix, list):
            prefix = []
        low = _int(schema.get("minItems"), 0)
        high = _int(schema.get("maxItems"), None)
        count = max(low, 1 if depth < MAX_DEPTH else 0, len(prefix) if depth < MAX_DEPTH else 0)
        if high is not None:
            count = min(count, high)
        item_name = name[:-1] if name.endswith("s") and len(name) > 1 else f"{name} item"
        items: list[Any] = []
        for index in range(count):
            sub = prefix[index] if index < len(prefix) else schema.get("items", {})
            item = self.value(sub, item_name, depth + 1)
            if schema.get("uniqueItems") and item in items:
                item = _vary(item, index)
            items.append(item)
        return items

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        if not isinstance(required, list):
            required = []
        order = schema.get("propertyOrdering") or schema.get("property_ordering")
        names = [n for n in order if n in props] if isinstance(order, list) else []
        names += [n for n in props if n not in names]
        if depth >= MAX_DEPTH:
            names = [n for n in names if n in required]
        result = {n: self.value(props[n], n, depth + 1) for n in names}
        for missing in required:
            result.setdefault(missing, f"example {missing}")
        return result


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and _kind(schema) == "null"


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [str(k).lower() for k in kind]
        non_null = [k for k in kinds if k != "null"]
        kind = non_null[0] if non_null else "null"
    if isinstance(kind, str) and kind and kind.upper() != "TYPE_UNSPECIFIED":
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


@overload
def _int(value: Any, default: int) -> int: ...
@overload
def _int(value: Any, default: None) -> int | None: ...
def _int(value: Any, default: int | None) -> int | None:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low, high = _float(schema.get("minimum")), _float(schema.get("maximum"))
    ex_low, ex_high = _float(schema.get("exclusiveMinimum")), _float(schema.get("exclusiveMaximum"))
    if schema.get("exclusiveMinimum") is True:  # draft-4 spelling
        low, ex_low = None, low
    if schema.get("exclusiveMaximum") is True:
        high, ex_high = None, high
    step = _float(schema.get("multipleOf"))

    def fits(v: float) -> bool:
        return (
            (low is None or v >= low)
            and (high is None or v <= high)
            and (ex_low is None or v > ex_low)
            and (ex_high is None or v < ex_high)
            and (not integer or v == int(v))
            and (not step or abs(v / step - round(v / step)) < 1e-9)
        )

    candidates: list[float] = [1.0, 0.0]
    for bound in (low, high):
        if bound is not None:
            candidates += [bound, math.ceil(bound), math.floor(bound)]
    if ex_low is not None:
        candidates += [math.floor(ex_low) + 1, ex_low + 0.5]
    if ex_high is not None:
        candidates += [math.ceil(ex_high) - 1, ex_high - 0.5]
    bottom = next((b for b in (low, ex_low) if b is not None), None)
    top = next((b for b in (high, ex_high) if b is not None), None)
    if bottom is not None and top is not None:
        candidates.append((bottom + top) / 2)
    if step:
        candidates = [math.ceil(c / step) * step for c in candidates] + candidates
    value = next((c for c in candidates if fits(c)), bottom if bottom is not None else 1.0)
    return int(value) if integer or value == int(value) else value


def _string(schema: dict[str, Any], name: str) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, f"example {name}") if isinstance(fmt, str) else f"example {name}"
    low = _int(schema.get("minLength"), 0) or 0
    high = _int(schema.get("maxLength"), None)
    if len(text) < low:
        text = text + "x" * (low - len(text))
    if high is not None and len(text) > high:
        text = text[:high]
    return text


def _vary(item: Any, index: int) -> Any:
    if isinstance(item, str):
        return f"{item} {index}"
    if isinstance(item, bool):
        return not item
    if isinstance(item, (int, float)):
        return item + index
    return item
