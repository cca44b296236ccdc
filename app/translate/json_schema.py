"""The one JSON Schema -> Gemini schema converter.

Two targets:

* `to_json_schema(schema)` for models that take real JSON Schema
  (`parametersJsonSchema` / `responseJsonSchema`, Gemini 2.5+): only what
  Google refuses is changed: `$schema` goes, and a `$ref` node keeps nothing
  but `$ref`, `description` and `default` ("If a schema node has $ref set,
  then only description and default can be set alongside it").
* `to_openapi_schema(schema)` for models configured without JSON Schema
  support (`parameters` / `responseSchema`, the OpenAPI 3.0 subset):
  `$ref`/`$defs` inlined, `anyOf` with null -> `nullable`, type arrays split,
  `const` -> one-value `enum`, `oneOf` -> `anyOf`, `allOf` merged, keywords the
  subset lacks dropped (also `format`s Gemini refuses and empty `enum`
  strings); what the subset cannot express (an object with no
  declared properties, e.g. a dict field; an unresolvable `$ref` or one
  nested past `_MAX_REF_DEPTH`, or a recursive model's second level) travels as a string. Every dropped keyword is
  reported (`Converted.dropped`)
  so the gateway can tell the client in a header and the log.

Pure functions; the input is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Keywords of Gemini's Schema message (OpenAPI 3.0 subset). `additionalProperties`
# exists on Vertex only; we never send it.
_OPENAPI_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "items", "minItems", "maxItems",
        "minLength", "maxLength", "pattern", "minimum", "maximum", "properties", "required",
        "minProperties", "maxProperties", "propertyOrdering", "anyOf", "default", "example",
    }
)
_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}
_FORMATS = {"STRING": ("enum", "date-time"), "NUMBER": ("float", "double"), "INTEGER": ("int32", "int64")}
_REF_SIBLINGS = ("description", "default")
_TYPE_HINTS = ("type", "$ref", "anyOf", "oneOf", "allOf", "properties", "items", "enum", "const")
_MAX_REF_DEPTH = 8  # $ref chains are cut below this depth
_MAX_RECURSION = 2  # expansions of one $ref on a single path (a recursive model unrolled once)
_METADATA = frozenset({"$schema", "$id", "$comment", "$anchor"})  # dropped without being reported


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Clean a JSON Schema for `parametersJsonSchema` / `responseJsonSchema`."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        if isinstance(node.get("$ref"), str):
            return {k: node[k] for k in ("$ref", *_REF_SIBLINGS) if k in node}
        return {k: walk(v) for k, v in node.items() if k != "$schema"}

    cleaned: dict[str, Any] = walk(schema)  # a dict in, a dict out
    return cleaned


@dataclass
class Converted:
    schema: dict[str, Any]
    dropped: list[str] = field(default_factory=list)

    def note(self, keyword: str) -> None:
        if keyword not in self.dropped:
            self.dropped.append(keyword)


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any] | None:
    if not ref.startswith("#"):
        return None
    node: Any = root
    for token in ref[1:].split("/"):
        if not token:
            continue
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or token not in node:
            return None
        node = node[token]
    return node if isinstance(node, dict) else None


def to_openapi_schema(schema: dict[str, Any]) -> Converted:
    """Convert a JSON Schema into Gemini's OpenAPI-subset `Schema`."""
    out = Converted({})
    out.schema = _convert(schema, schema, out, ())
    return out


def _convert(node: Any, root: dict[str, Any], out: Converted, trail: tuple[str, ...]) -> dict[str, Any]:
    """`trail`: the `$ref`s being expanded on the way to `node` (bounds recursion)."""
    if not isinstance(node, dict):
        # `true` / `{}` / anything: the subset has no "any" type; a string is the safest carrier.
        return {"type": "STRING"}
    if "$ref" in node:
        ref = node["$ref"]
        target = _resolve(ref, root) if isinstance(ref, str) else None
        # A recursive model is unrolled one level (a tree node's children are nodes whose
        # own children are strings): every further level multiplies the schema's size.
        if target is None or len(trail) >= _MAX_REF_DEPTH or trail.count(ref) >= _MAX_RECURSION:
            out.note("$ref")
            merged: dict[str, Any] = {"type": "STRING"}  # an OBJECT without properties is refused
        else:
            merged = _convert(target, root, out, (*trail, ref))
        for key in _REF_SIBLINGS:
            if key in node:
                merged[key] = node[key]
        return merged

    result: dict[str, Any] = {}
    nullable = bool(node.get("nullable"))

    # Union forms first: they may decide the type.
    branches = node.get("anyOf") or node.get("oneOf")  # oneOf read as anyOf, as Gemini itself does
    if isinstance(branches, list):
        non_null = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
        nullable = nullable or len(non_null) < len(branches)
        if len(non_null) == 1:
            result.update(_convert(non_null[0], root, out, trail))
        elif non_null:
            result["anyOf"] = [_convert(b, root, out, trail) for b in non_null]
    if isinstance(node.get("allOf"), list):
        for part in node["allOf"]:
            sub = _convert(part, root, out, trail)
            if isinstance(part, dict) and not any(k in part for k in _TYPE_HINTS):
                sub.pop("type", None)  # a part that only annotates (a description) says nothing of the type
            props = {**result.get("properties", {}), **sub.get("properties", {})}
            required = list(dict.fromkeys([*result.get("required", []), *sub.get("required", [])]))
            result.update(sub)
            if props:
                result["properties"] = props
            if required:
                result["required"] = required

    raw_type = node.get("type")
    if isinstance(raw_type, list):
        types = [t for t in raw_type if t != "null"]
        nullable = nullable or len(types) < len(raw_type)
        if len(types) == 1:
            raw_type = types[0]
        elif types:
            result["anyOf"] = [_convert({**node, "type": t}, root, out, trail) for t in types]
            raw_type = None
        else:
            raw_type = "null"
    if isinstance(raw_type, str) and raw_type.lower() in _TYPES:
        if raw_type == "null":
            nullable = True
            result.setdefault("type", "STRING")
        else:
            result["type"] = raw_type.upper()
    elif "type" not in result and "anyOf" not in result:
        if "properties" in node:
            result["type"] = "OBJECT"
        elif "items" in node:
            result["type"] = "ARRAY"
        elif "enum" in node or "const" in node:
            result["type"] = "STRING"

    if "const" in node:
        node = {**node, "enum": [node["const"]]}
    for key, value in node.items():
        if key in ("type", "anyOf", "oneOf", "allOf", "$ref", "const", "nullable", "$defs", "definitions"):
            continue
        if key == "properties" and isinstance(value, dict):
            if value:
                result["properties"] = {name: _convert(sub, root, out, trail) for name, sub in value.items()}
                result.setdefault("propertyOrdering", list(value))
            continue
        if key == "items":
            result["items"] = _convert(value if not isinstance(value, list) else (value[0] if value else {}), root, out, trail)
            continue
        if key == "enum" and isinstance(value, list):
            if all(isinstance(v, str) for v in value) and any(value):
                result["enum"] = [v for v in value if v]  # Gemini: `enum[i]: cannot be empty`
                result["type"] = "STRING"
                if len(result["enum"]) < len(value):
                    out.note("enum")
            else:
                out.note("enum")
            continue
        if key == "format":
            continue  # checked below, once the type is known
        if key == "required" and isinstance(value, list):
            continue  # filtered below, once properties are known
        if key == "examples" and isinstance(value, list) and value:
            result.setdefault("example", value[0])
            continue
        if key in _OPENAPI_KEYS:
            result[key] = value
        elif key not in _METADATA:
            out.note(key)
    if isinstance(node.get("required"), list) and "properties" in result:
        required = [r for r in node["required"] if r in result["properties"]]
        if required:
            result["required"] = required
    if result.get("type") == "ARRAY" and "items" not in result:
        result["items"] = {"type": "STRING"}
    if "format" in node:
        # Gemini: `format: only 'enum' and 'date-time' are supported for STRING type`.
        if node["format"] in _FORMATS.get(result.get("type", ""), ()):
            result["format"] = node["format"]
        else:
            out.note("format")
    if result.get("type") == "OBJECT" and not result.get("properties"):
        # "Any object" (a dict field, `additionalProperties` only) has no spelling in the
        # subset: Gemini refuses `properties: should be non-empty for OBJECT type`.
        out.note("additionalProperties" if "additionalProperties" in node else "properties")
        result = {k: result[k] for k in ("title", "description") if k in result}
        result["type"] = "STRING"
    if "type" not in result and "anyOf" not in result:
        result["type"] = "STRING"  # a schema with no type (`{}`, a description only) means "anything"
    if nullable:
        result["nullable"] = True
    return result
