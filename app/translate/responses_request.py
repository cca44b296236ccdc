"""OpenAI Responses request -> Gemini `GenerateContentRequest` body. Pure.

`to_gemini(request, capabilities, env, history)` returns a `ResponsesCall`: the
JSON body to send, plus the `ResponsesOptions` the response translators need
(the model name, the tool-name mapping, what `include` asked for, and the
request fields the Response object repeats). `history` holds the items of the
`previous_response_id` chain (oldest first, as the gateway's response store
gave them); everything else the gateway looked up first (stored thought
signatures, fetched media) comes in through chat's `TranslationEnv`.

The same Gemini call as chat (docs/design.md#parameters) built from the same
policies, imported: tools and tool choice (`tools.py`), JSON Schema
(`json_schema.py` through `chat_request.json_output`), thinking
(`capabilities.py`); input items become contents in `responses_items.py`
(media, function results and thought signatures, again chat's policies).

Errors name the field: `input[3].call_id`, `tools[0].name`, `text.format.schema`,
`reasoning.effort`; an item of the stored history is named `previous_response_id`.
Mapping rules: docs/parameters.md ("Responses").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidRequest, UnsupportedParameter
from app.schemas.openai import FunctionDefinition
from app.schemas.responses import InputItem, ResponsesRequest
from app.translate import signatures
from app.translate.capabilities import ModelCapabilities, effort_to_thinking
from app.translate.chat_request import (
    PARAM_KEYS,
    TranslationEnv,
    camel_keys,
    finish_body,
    google_thinking_config,
    json_output,
)
from app.translate.responses_items import ItemsBuilder, missing
from app.translate.tools import CHOICE_MODES, ToolNames, allowed_tools_config, function_declaration

WEB_SEARCH_TOOLS = frozenset({"web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11"})
HISTORY = "previous_response_id"

# Responses parameters -> the generationConfig keys they become (per-model `drop_params`, chat's names too).
RESPONSES_PARAM_KEYS = {
    **PARAM_KEYS,
    "max_output_tokens": ("maxOutputTokens",),
    "reasoning": ("thinkingConfig",),
    "top_logprobs": ("responseLogprobs", "logprobs"),
}


@dataclass(frozen=True)
class Echo:
    """The request fields the Response object repeats (`_echo`), in its order, in the three runs
    `responses_response.response_object` places whole: before `model`, between `output` and `usage`, after `usage`."""

    head: Mapping[str, Any]
    middle: Mapping[str, Any]
    tail: Mapping[str, Any]


@dataclass(frozen=True)
class ResponsesOptions:
    """How to encode the answer; decided by the request."""

    model: str
    tool_names: Mapping[str, str] = field(default_factory=dict)  # gemini name -> openai name
    include_thoughts: bool = False  # reasoning.summary: thought summaries as reasoning items
    encrypted_reasoning: bool = False  # include reasoning.encrypted_content: signatures on reasoning items
    logprobs: bool = False  # include message.output_text.logprobs / top_logprobs
    search_sources: bool = False  # include web_search_call.action.sources
    echo: Echo = field(default_factory=lambda: _echo(ResponsesRequest(model="-")))  # (default: OpenAI's defaults)


@dataclass
class ResponsesCall:
    body: dict[str, Any]
    stream: bool
    options: ResponsesOptions
    signature_bypasses: int = 0
    signatures_passed: int = 0
    signatures_restored: int = 0
    dropped_schema_keywords: list[str] = field(default_factory=list)


# -- tools, output format, thinking --------------------------------------------------------------


def _tools(
    req: ResponsesRequest, caps: ModelCapabilities, dropped: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, ToolNames]:
    names = ToolNames()
    declarations: list[dict[str, Any]] = []
    search = False
    for i, tool in enumerate(req.tools or ()):
        if tool.type == "function":
            if not tool.name:
                raise missing(f"tools[{i}].name")
            if tool.name in names.to_gemini:
                raise InvalidRequest(f"Invalid 'tools': the function name '{tool.name}' is used twice.", param=f"tools[{i}].name")
            fn = FunctionDefinition(name=tool.name, description=tool.description, parameters=tool.parameters)
            declarations.append(function_declaration(fn, names, caps.json_schema, dropped))
        elif tool.type in WEB_SEARCH_TOOLS:
            if tool.filters and tool.filters.get("allowed_domains"):
                raise UnsupportedParameter(
                    f"Invalid 'tools[{i}].filters.allowed_domains': Google Search grounding cannot be limited to "
                    "chosen domains; remove the filter.",
                    param=f"tools[{i}].filters.allowed_domains",
                )
            search = True
        else:
            raise UnsupportedParameter(
                f"Invalid 'tools[{i}].type': tools of type '{tool.type}' are not supported by Gemini; "
                "'function' and 'web_search' tools are.",
                param=f"tools[{i}].type",
            )
    declarations, config = _tool_choice(req, names, declarations)
    tools: list[dict[str, Any]] = []
    if declarations:
        tools.append({"functionDeclarations": declarations})
    if search:
        tools.append({"googleSearch": {}})
    return tools, config, names


def _tool_choice(
    req: ResponsesRequest, names: ToolNames, declarations: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """-> (the declarations to send, functionCallingConfig or None for Gemini's default)."""
    choice = req.tool_choice
    if choice is None:
        return declarations, None
    if not req.tools:
        raise InvalidRequest(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice"
        )
    if isinstance(choice, str):  # (with Google Search alone there is no function calling to configure)
        return declarations, {"mode": CHOICE_MODES[choice]} if declarations else None
    if choice.type == "function":
        if not choice.name:
            raise missing("tool_choice.name")
        if choice.name not in names.to_gemini:
            raise InvalidRequest(
                f"Invalid value for 'tool_choice': no function named '{choice.name}' was declared.",
                param="tool_choice.name", code="invalid_value",
            )  # fmt: skip
        return declarations, {"mode": "ANY", "allowedFunctionNames": [names.gemini(choice.name)]}
    if choice.type == "allowed_tools":
        if choice.mode is None:
            raise missing("tool_choice.mode")
        allowed = []
        for i, tool in enumerate(choice.tools or ()):
            name = tool.get("name") if isinstance(tool, dict) else None
            if tool.get("type") in WEB_SEARCH_TOOLS:
                continue
            if tool.get("type") != "function" or not isinstance(name, str) or name not in names.to_gemini:
                raise InvalidRequest(
                    f"Invalid 'tool_choice.tools[{i}]': expected one of the declared functions, "
                    '{"type": "function", "name": ...}.',
                    param=f"tool_choice.tools[{i}]", code="invalid_value",
                )  # fmt: skip
            allowed.append(names.gemini(name))
        return allowed_tools_config(choice.mode, allowed, declarations)
    if choice.type in WEB_SEARCH_TOOLS:
        return declarations, None  # Gemini decides when to search (a hint)
    raise UnsupportedParameter(
        f"Invalid 'tool_choice.type': '{choice.type}' is not supported by Gemini.", param="tool_choice.type"
    )


def _text_format(req: ResponsesRequest, caps: ModelCapabilities, dropped: list[str]) -> dict[str, Any]:
    fmt = req.text.format if req.text else None
    if fmt is None or fmt.type == "text":
        return {}
    if fmt.type == "json_schema":
        if not fmt.name:
            raise missing("text.format.name")
        if fmt.schema_ is None:
            raise missing("text.format.schema")
    return json_output(fmt.schema_, caps, dropped)


def _summary(req: ResponsesRequest) -> str | None:
    return (req.reasoning.summary or req.reasoning.generate_summary) if req.reasoning else None


def _thinking(req: ResponsesRequest, caps: ModelCapabilities) -> tuple[dict[str, Any] | None, bool]:
    """-> (thinkingConfig, whether thought summaries come back)."""
    google = req.google_options()
    tc = google.thinking_config if google else None
    effort = req.reasoning.effort if req.reasoning else None
    if tc is not None and effort is not None:
        raise InvalidRequest(
            "Use either 'reasoning.effort' or 'extra_body.google.thinking_config', not both.", param="reasoning.effort"
        )
    if tc is not None:
        config = google_thinking_config(tc)
        if tc.include_thoughts is not None:
            return config, tc.include_thoughts
    elif effort is not None:
        try:
            config = effort_to_thinking(effort, caps)
        except ValueError as exc:
            raise InvalidRequest(
                f"Invalid value for 'reasoning.effort': '{effort}' is not supported by {req.model}: {exc}.",
                param="reasoning.effort", code="invalid_value",
            ) from None  # fmt: skip
    else:
        config = None
    thinks = caps.thinking != "none" and (config or {}).get("thinkingBudget") != 0
    if _summary(req) and thinks:
        return {**(config or {}), "includeThoughts": True}, True
    return config, False


def _echo(req: ResponsesRequest) -> Echo:
    """The request fields the Response object repeats (OpenAI's defaults where the client sent none)."""
    fmt = req.text.format if req.text and req.text.format else None
    choice = req.tool_choice
    head = {
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
    }
    middle = {
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": req.reasoning.effort if req.reasoning else None, "summary": _summary(req)},
        "safety_identifier": req.safety_identifier,
        "service_tier": req.service_tier or "default",
        "store": req.store is not False,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "text": {
            "format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"},
            "verbosity": (req.text.verbosity if req.text else None) or "medium",
        },
        "tool_choice": (choice if isinstance(choice, str) else choice.model_dump(exclude_none=True)) if choice else "auto",
        "tools": [t.model_dump(exclude_unset=True) for t in req.tools or ()],
        "top_logprobs": req.top_logprobs or 0,
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "truncation": req.truncation or "disabled",
    }
    return Echo(head, middle, {"user": req.user, "metadata": dict(req.metadata or {})})


def _refuse_unsupported(req: ResponsesRequest) -> None:
    if req.background:
        raise UnsupportedParameter(
            "'background' responses are not supported by this gateway; send the request without it "
            "(use 'stream' for long answers).",
            param="background",
        )
    if req.conversation is not None:
        raise UnsupportedParameter(
            "The Conversations API is not supported by this gateway; use 'previous_response_id' instead of 'conversation'.",
            param="conversation",
        )
    if req.prompt is not None:
        raise UnsupportedParameter(
            "Stored prompt templates ('prompt') are not supported by this gateway; send 'instructions' and 'input'.",
            param="prompt",
        )
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options")


def to_gemini(
    req: ResponsesRequest,
    caps: ModelCapabilities,
    env: TranslationEnv | None = None,
    history: Sequence[InputItem] = (),
) -> ResponsesCall:
    """Translate one Responses request (after its stored history) for one Gemini model."""
    env = env or TranslationEnv()
    _refuse_unsupported(req)
    dropped: list[str] = []
    tools, tool_config, names = _tools(req, caps, dropped)
    b = ItemsBuilder(caps, env, names)
    if req.instructions:
        b.system.append({"text": req.instructions})
    for item in history:
        b.add(item, HISTORY)  # (named so in errors: the client did not send these items)
    if req.input is None:
        raise missing("input")
    if isinstance(req.input, str):
        b.finish()  # (a history ending with calls must be answered first)
        b.user_text(req.input)
    else:
        for i, item in enumerate(req.input):
            b.add(item, f"input[{i}]")
        b.finish()
    if not b.contents:
        raise InvalidRequest("'input' must contain at least one message with content.", param="input")

    body: dict[str, Any] = {"contents": b.contents}
    if b.system:
        body["systemInstruction"] = {"parts": b.system}
    if tools:
        body["tools"] = tools
    if tool_config:
        body["toolConfig"] = {"functionCallingConfig": tool_config}
    google = req.google_options()
    if google and google.safety_settings:
        body["safetySettings"] = [camel_keys(s) for s in google.safety_settings]
    if google and google.cached_content:
        body["cachedContent"] = google.cached_content

    include = set(req.include or ())
    gen: dict[str, Any] = {}
    if req.max_output_tokens is not None:
        gen["maxOutputTokens"] = req.max_output_tokens
    if req.temperature is not None:
        gen["temperature"] = req.temperature
    if req.top_p is not None:
        gen["topP"] = req.top_p
    logprobs = bool(req.top_logprobs) or "message.output_text.logprobs" in include
    if logprobs:
        gen["responseLogprobs"] = True
        if req.top_logprobs:
            gen["logprobs"] = req.top_logprobs
    gen.update(_text_format(req, caps, dropped))
    thinking, include_thoughts = _thinking(req, caps)
    if thinking:
        gen["thinkingConfig"] = thinking
    if b.resolution:
        gen["mediaResolution"] = b.resolution
    finish_body(body, gen, caps, env, req.metadata, req.user, RESPONSES_PARAM_KEYS)

    bypassed = signatures.enforce_current_turn(b.contents) if caps.signatures_required else 0
    options = ResponsesOptions(
        model=req.model,
        tool_names=dict(names.to_openai),
        include_thoughts=include_thoughts,
        encrypted_reasoning="reasoning.encrypted_content" in include,
        logprobs=logprobs,
        search_sources="web_search_call.action.sources" in include,
        echo=_echo(req),
    )
    return ResponsesCall(body, bool(req.stream), options, bypassed, b.signatures_passed, b.signatures_restored, dropped)


# chat's name of a parameter a Google 400 is about (tables.GOOGLE_MESSAGE_TO_PARAM) -> the Responses one.
_RESPONSES_PARAMS = {
    "reasoning_effort": "reasoning.effort",
    "max_completion_tokens": "max_output_tokens",
    "logprobs": "top_logprobs",
    "response_format": "text.format",
    "messages": "input",
}


def sent_param(param: str | None, req: ResponsesRequest) -> str | None:
    """The Responses parameter a Google 400 is about, among the ones this request actually sent."""
    if param == "reasoning_effort":
        google = req.google_options()
        if google is not None and google.thinking_config is not None:
            return "extra_body.google.thinking_config"
        if req.reasoning is not None and req.reasoning.effort is None and _summary(req):
            return "reasoning.summary"
    return _RESPONSES_PARAMS.get(param, param) if param else param


# Fields of a GenerateContentRequest that Vertex's CountTokensRequest takes beside `contents`.
_VERTEX_COUNT_FIELDS = ("systemInstruction", "tools", "generationConfig")


def count_tokens_body(body: dict[str, Any], model: str, vertex: bool) -> dict[str, Any]:
    """A translated request -> the body of Gemini's `countTokens` for it (`POST /v1/responses/input_tokens`).

    The Gemini API takes the whole request as `generateContentRequest` (with its
    model); Vertex takes `contents` and a few of the request's fields directly.
    """
    if vertex:
        return {k: body[k] for k in ("contents", *_VERTEX_COUNT_FIELDS) if k in body}
    return {"generateContentRequest": {"model": f"models/{model}", **body}}
