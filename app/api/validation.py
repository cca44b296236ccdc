"""Request bodies -> validated pydantic models, with OpenAI's error wording (shared by every endpoint)."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from app.errors import InvalidRequest, loc_to_path

log = logging.getLogger("gemini_proxy.api")

R = TypeVar("R", bound=BaseModel)

_JSON_HINT = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The API expects a JSON payload, but what was sent was not valid JSON.)"
)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def validation_error(exc: ValidationError) -> InvalidRequest:
    """The first problem of a pydantic error, in OpenAI's wording, naming the parameter."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    param = loc_to_path(first["loc"])
    # A union (`content`: a string or a list of parts) reports one error per branch; the
    # deepest one inside the value the client sent is the one that says what is wrong.
    deeper = [e for e in errors if loc_to_path(e["loc"]).startswith((param + "[", param + "."))]
    if deeper:
        first = max(deeper, key=lambda e: len(loc_to_path(e["loc"])))
        param = loc_to_path(first["loc"])
    if first["type"] == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    same = [e for e in errors if loc_to_path(e["loc"]) == param]
    if any(e["type"].endswith(("_type", "_parsing")) or e["type"] == "int_from_float" for e in same):
        return InvalidRequest(
            f"Invalid type for '{param}': got {_type_name(first.get('input'))}; "
            + " or ".join(dict.fromkeys(e["msg"].lower() for e in same)) + ".",
            param=param,
            code="invalid_type",
        )
    return InvalidRequest(
        f"Invalid value for '{param}': {'; '.join(dict.fromkeys(e['msg'] for e in same))}.", param=param, code="invalid_value"
    )


def parse_body_dict(body: bytes) -> dict[str, Any]:
    """A JSON body that must be an object (the endpoint checks its fields itself)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest(_JSON_HINT, code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return data


def parse_body(body: bytes, model: type[R]) -> R:
    """Parse and validate a JSON body; 400 naming the parameter on any problem."""
    return validate_body(parse_body_dict(body), model)


def validate_body(data: dict[str, Any], model: type[R]) -> R:
    """Validate a parsed JSON body; 400 naming the parameter on any problem."""
    try:
        req = model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None
    if req.model_extra and log.isEnabledFor(logging.DEBUG):
        log.debug("ignoring unknown request fields: %s", sorted(req.model_extra))
    return req
