"""OpenAI tools -> Gemini function declarations and tool config.

Owns: `tools` / deprecated `functions` -> one `{"functionDeclarations": [...]}`
tool, `web_search_options` -> `googleSearch`, `tool_choice` / `function_call`
-> `toolConfig.functionCallingConfig`, and the reversible renaming of function
names Gemini refuses (`ToolNames`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidRequest, UnsupportedParameter
from app.schemas.openai import ChatCompletionRequest, FunctionDefinition
from app.translate.json_schema import to_json_schema, to_openapi_schema

# Google's docs say 128 characters, but the API refuses names longer than 64 ("Invalid function
# name. ... with a maximum length of 64."), so 64 is the limit that works everywhere.
MAX_NAME = 64
_GEMINI_NAME = re.compile(rf"[A-Za-z_][A-Za-z0-9_.:\-]{{0,{MAX_NAME - 1}}}")
_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.:\-]")


def gemini_safe_name(name: str) -> str:
    """A name Gemini accepts (starts with a letter or `_`, at most 64 of `[A-Za-z0-9_.:-]`)."""
    if _GEMINI_NAME.fullmatch(name):
        return name
    safe = _BAD_CHARS.sub("_", name)
    if not safe or not (safe[0].isalpha() or safe[0] == "_"):
        safe = "_" + safe
    if len(safe) > MAX_NAME:
        safe = safe[: MAX_NAME - 9] + "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return safe


@dataclass
class ToolNames:
    """Both directions of the renaming for one request."""

    to_gemini: dict[str, str] = field(default_factory=dict)
    to_openai: dict[str, str] = field(default_factory=dict)

    def add(self, name: str) -> str:
        if name in self.to_gemini:
            return self.to_gemini[name]
        candidate = gemini_safe_name(name)
        base, n = candidate, 2
        while candidate in self.to_openai and self.to_openai[candidate] != name:
            suffix = f"_{n}"
            candidate = base[: MAX_NAME - len(suffix)] + suffix
            n += 1
        self.to_gemini[name] = candidate
        self.to_openai[candidate] = name
        return candidate

    def gemini(self, name: str) -> str:
        return self.to_gemini.get(name) or self.add(name)


def _takes_arguments(schema: dict[str, Any] | None) -> bool:
    """False for a function without arguments, which Gemini wants declared with no schema at all."""
    if not schema:
        return False
    if schema.get("type", "object") != "object" or schema.get("properties"):
        return True
    return any(schema.get(k) for k in ("anyOf", "oneOf", "allOf", "$ref", "additionalProperties", "patternProperties"))


# OpenAI's `tool_choice` strings -> Gemini's function-calling modes.
CHOICE_MODES = {"none": "NONE", "auto": "AUTO", "required": "ANY"}


def function_declaration(fn: FunctionDefinition, names: ToolNames, json_schema: bool, dropped: list[str]) -> dict[str, Any]:
    """One OpenAI function -> a Gemini `FunctionDeclaration` (its name registered in `names`)."""
    decl: dict[str, Any] = {"name": names.add(fn.name)}
    if fn.description:
        decl["description"] = fn.description
    if _takes_arguments(fn.parameters):
        assert fn.parameters is not None
        if json_schema:
            decl["parametersJsonSchema"] = to_json_schema(fn.parameters)
        else:
            converted = to_openapi_schema(fn.parameters)
            dropped.extend(k for k in converted.dropped if k not in dropped)
            if converted.schema.get("type") == "OBJECT":  # not a free-form object (sent as no parameters)
                decl["parameters"] = converted.schema
    return decl


def _allowed_names(choice: Any) -> tuple[str, list[str]]:
    allowed = choice.allowed_tools
    names = []
    for i, tool in enumerate(allowed.tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest(
                f"Invalid 'tool_choice.allowed_tools.tools[{i}]': "
                'expected {"type": "function", "function": {"name": ...}}.',
                param=f"tool_choice.allowed_tools.tools[{i}]",
                code="invalid_value",
            )
        names.append(fn["name"])
    return allowed.mode, names


def allowed_tools_config(
    mode: str, gemini_allowed: list[str], declarations: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """`allowed_tools` (a subset of the declared functions) -> (declarations to send, functionCallingConfig)."""
    if mode == "required":
        return declarations, {"mode": "ANY", "allowedFunctionNames": gemini_allowed}
    # `auto` among a subset: declare only that subset (allowedFunctionNames needs ANY)
    keep = set(gemini_allowed)
    return [d for d in declarations if d["name"] in keep], {"mode": "AUTO"}


def tools_to_gemini(
    req: ChatCompletionRequest, json_schema: bool
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, ToolNames, bool, list[str]]:
    """-> (tools, toolConfig, names, legacy_functions, dropped schema keywords)."""
    names = ToolNames()
    dropped: list[str] = []
    functions: list[FunctionDefinition] = []
    legacy = False
    for i, tool in enumerate(req.tools or ()):
        if tool.type != "function":
            raise UnsupportedParameter(
                f"Invalid 'tools[{i}].type': tools of type '{tool.type}' are not supported by Gemini; "
                "only 'function' tools are.",
                param=f"tools[{i}].type",
            )
        if tool.function is None:
            raise InvalidRequest(
                f"Missing required parameter: 'tools[{i}].function'.",
                param=f"tools[{i}].function",
                code="missing_required_parameter",
            )
        functions.append(tool.function)
    if req.functions:
        if req.tools:
            raise InvalidRequest("Use either 'tools' or the deprecated 'functions', not both.", param="functions")
        functions = list(req.functions)
        legacy = True

    declarations = [function_declaration(fn, names, json_schema, dropped) for fn in functions]
    seen: set[str] = set()
    for i, fn in enumerate(functions):
        if fn.name in seen:
            raise InvalidRequest(
                f"Invalid 'tools': the function name '{fn.name}' is used twice.", param=f"tools[{i}].function.name"
            )
        seen.add(fn.name)

    config: dict[str, Any] | None = None
    choice: Any = req.function_call if legacy else req.tool_choice
    choice_param = "function_call" if legacy else "tool_choice"
    if choice is not None and not functions:
        raise InvalidRequest(
            f"Invalid value for '{choice_param}': '{choice_param}' is only allowed when "
            f"'{'functions' if legacy else 'tools'}' are specified.",
            param=choice_param,
        )
    if isinstance(choice, str):
        config = {"mode": CHOICE_MODES[choice]}
    elif choice is not None:
        kind = getattr(choice, "type", "function")
        if kind == "function" or legacy:
            name = choice.name if legacy else (choice.function.name if choice.function else None)
            if name is None:
                raise InvalidRequest(
                    f"Missing required parameter: '{choice_param}.function.name'.",
                    param=f"{choice_param}.function.name",
                    code="missing_required_parameter",
                )
            if name not in names.to_gemini:
                raise InvalidRequest(
                    f"Invalid value for '{choice_param}': no function named '{name}' was declared.",
                    param=choice_param,
                    code="invalid_value",
                )
            config = {"mode": "ANY", "allowedFunctionNames": [names.gemini(name)]}
        elif kind == "allowed_tools" and choice.allowed_tools is not None:
            mode, allowed = _allowed_names(choice)
            unknown = [n for n in allowed if n not in names.to_gemini]
            if unknown:
                raise InvalidRequest(
                    f"Invalid value for 'tool_choice.allowed_tools': undeclared function(s) {unknown}.",
                    param="tool_choice.allowed_tools.tools",
                    code="invalid_value",
                )
            declarations, config = allowed_tools_config(mode, [names.gemini(n) for n in allowed], declarations)
        else:
            raise UnsupportedParameter(
                f"Invalid 'tool_choice.type': '{kind}' is not supported by Gemini.", param="tool_choice.type"
            )

    tools: list[dict[str, Any]] = []
    if declarations:
        tools.append({"functionDeclarations": declarations})
    if req.web_search_options is not None:
        tools.append({"googleSearch": {}})
    return tools, config, names, legacy, dropped
