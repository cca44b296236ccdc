"""OpenAI chat request -> Gemini `GenerateContentRequest` body. Pure.

`to_gemini(request, capabilities, env)` returns a `GeminiCall`: the JSON body
to send, plus the `ResponseOptions` the response translators need (the
requested model name, the tool-name mapping, thought options, ...). Everything
the gateway had to look up first (stored thought signatures, fetched media)
comes in through `TranslationEnv`, so this module does no I/O.

Mapping rules: docs/parameters.md and docs/design.md#parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.errors import InvalidRequest, UnsupportedParameter
from app.schemas.openai import ChatCompletionRequest, ContentPart, Message, ThinkingConfig
from app.translate import media, signatures
from app.translate.capabilities import ModelCapabilities, effort_to_thinking
from app.translate.json_schema import to_json_schema, to_openapi_schema
from app.translate.tools import ToolNames, tools_to_gemini

ImageOutput = str  # "audio" | "images" | "both"


@dataclass(frozen=True)
class TranslationEnv:
    """What the gateway looked up before translating (no I/O happens in here)."""

    signatures: Mapping[str, str] = field(default_factory=dict)  # store key -> thought signature
    fetched: Mapping[str, dict[str, str]] = field(default_factory=dict)  # url -> {"mimeType", "data"}
    vertex: bool = False
    images: ImageOutput = "audio"


@dataclass(frozen=True)
class ResponseOptions:
    """How to encode the answer; decided by the request."""

    model: str
    tool_names: Mapping[str, str] = field(default_factory=dict)  # gemini name -> openai name
    legacy_functions: bool = False
    include_thoughts: bool = False
    thought_tag_marker: str | None = None
    images: ImageOutput = "audio"
    include_usage: bool = False
    stream_function_call_arguments: bool = False


@dataclass
class GeminiCall:
    body: dict[str, Any]
    stream: bool
    options: ResponseOptions
    signature_bypasses: int = 0
    signatures_passed: int = 0
    signatures_restored: int = 0
    dropped_schema_keywords: list[str] = field(default_factory=list)


_PART_TYPES = ("text", "image_url", "input_audio", "file")
_LABEL_BAD = re.compile(r"[^a-z0-9_-]")


def _text_of(content: str | list[ContentPart] | None, param: str, allowed: tuple[str, ...] = ("text",)) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if part.type not in allowed:
            raise InvalidRequest(
                f"Invalid value: '{part.type}'. Supported values are: {', '.join(repr(a) for a in allowed)}.",
                param=f"{param}[{j}].type",
                code="invalid_value",
            )
        texts.append((part.text if part.type == "text" else part.refusal) or "")
    return "".join(texts) if len(texts) == 1 else "\n".join(t for t in texts if t)


class _Builder:
    """Walks the messages once, producing contents, system parts and media settings."""

    def __init__(self, req: ChatCompletionRequest, caps: ModelCapabilities, env: TranslationEnv, names: ToolNames):
        self.req, self.caps, self.env, self.names = req, caps, env, names
        self.system: list[dict[str, Any]] = []
        self.contents: list[dict[str, Any]] = []
        self.resolution: str | None = None
        self.calls: dict[str, tuple[str, int, str | None]] = {}  # tool_call_id -> (name, position, Gemini's id)
        self.open_calls: list[str] = []  # ids of the last step still waiting for answers
        self.open_since = -1
        self.tool_run: list[tuple[int, dict[str, Any], list[dict[str, Any]]]] = []
        google = req.google_options()
        self.marker = google.thought_tag_marker if google else None
        self.signatures_passed = 0  # kept by the client
        self.signatures_restored = 0  # from the signature store

    # -- helpers -------------------------------------------------------------------------------

    def _signature(self, extra: Mapping[str, Any] | None, key: str | None) -> str | None:
        """A model step's thought signature: the client's, else the stored one (counted apart)."""
        sig = signatures.from_extra_content(extra)
        if sig:
            self.signatures_passed += 1
            return sig
        sig = self.env.signatures.get(key) if key is not None else None
        if sig:
            self.signatures_restored += 1
        return sig

    def _append(self, role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if self.contents and self.contents[-1]["role"] == role:
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": parts})

    def _media_part(self, part: ContentPart, param: str) -> dict[str, Any]:
        if part.type == "image_url":
            spec = part.image_url
            if spec is None:
                raise InvalidRequest(
                    f"Missing required parameter: '{param}.image_url'.",
                    param=f"{param}.image_url",
                    code="missing_required_parameter",
                )
            url = spec if isinstance(spec, str) else spec.url
            url_param = f"{param}.image_url.url" if not isinstance(spec, str) else f"{param}.image_url"
            out = media.url_part(url, url_param, self.env.fetched)
            detail = None if isinstance(spec, str) else spec.detail
            level = media.DETAIL_TO_RESOLUTION.get(detail or "")
            if level:
                if self.caps.per_part_media_resolution:
                    out["mediaResolution"] = {"level": level}
                elif media.RESOLUTION_RANK[level] > media.RESOLUTION_RANK.get(self.resolution or "", 0):
                    self.resolution = level
            return out
        if part.type == "input_audio":
            if part.input_audio is None:
                raise InvalidRequest(
                    f"Missing required parameter: '{param}.input_audio'.",
                    param=f"{param}.input_audio",
                    code="missing_required_parameter",
                )
            return media.audio_part(part.input_audio.data, part.input_audio.format, f"{param}.input_audio")
        if part.file is None:
            raise InvalidRequest(
                f"Missing required parameter: '{param}.file'.", param=f"{param}.file", code="missing_required_parameter"
            )
        return media.file_part(part.file.file_data, part.file.file_id, part.file.filename, f"{param}.file")

    def _user_parts(self, content: str | list[ContentPart] | None, param: str) -> list[dict[str, Any]]:
        if content is None:
            return []
        if isinstance(content, str):
            return [{"text": content}] if content else []
        parts = []
        for j, part in enumerate(content):
            p = f"{param}[{j}]"
            if part.type == "text":
                if part.text is None:
                    raise InvalidRequest(
                        f"Missing required parameter: '{p}.text'.", param=f"{p}.text", code="missing_required_parameter"
                    )
                if part.text:
                    parts.append({"text": part.text})
            elif part.type in _PART_TYPES:
                parts.append(self._media_part(part, p))
            else:
                raise InvalidRequest(
                    f"Invalid value: '{part.type}'. Supported values are: 'text', 'image_url', 'input_audio' and 'file'.",
                    param=f"{p}.type",
                    code="invalid_value",
                )
        return parts

    def _strip_thoughts(self, text: str) -> str:
        if not self.marker or f"<{self.marker}>" not in text:
            return text
        return re.sub(rf"<{re.escape(self.marker)}>.*?</{re.escape(self.marker)}>", "", text, flags=re.DOTALL)

    def check_answered(self) -> None:
        """Every call of the last tool step must have its result (as OpenAI and Gemini both require)."""
        if self.open_calls:
            raise InvalidRequest(
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(self.open_calls)}",
                param=f"messages[{self.open_since}].tool_calls",
            )

    # -- roles ---------------------------------------------------------------------------------

    def system_message(self, msg: Message, i: int) -> None:
        text = _text_of(msg.content, f"messages[{i}].content")
        if text:
            self.system.append({"text": text})

    def user_message(self, msg: Message, i: int) -> None:
        self._append("user", self._user_parts(msg.content, f"messages[{i}].content"))

    def assistant_message(self, msg: Message, i: int) -> None:
        param = f"messages[{i}]"
        parts: list[dict[str, Any]] = []
        text = _text_of(msg.content, f"{param}.content", ("text", "refusal")) or (msg.refusal or "")
        text = self._strip_thoughts(text)
        if text:
            parts.append({"text": text})
        parts.extend(self._echoed_images(msg))
        if parts and msg.function_call is None:  # (a legacy call's signature sits on the message)
            sig = self._signature(
                msg.extra_content, signatures.text_key(msg.content) if isinstance(msg.content, str) else None
            )
            if sig:
                parts[-1]["thoughtSignature"] = sig
        calls = []
        for j, tc in enumerate(msg.tool_calls or ()):
            tp = f"{param}.tool_calls[{j}]"
            if tc.type != "function" or tc.function is None:
                raise UnsupportedParameter(
                    f"Invalid '{tp}.type': only 'function' tool calls are supported by Gemini.", param=f"{tp}.type"
                )
            args = function_arguments(tc.function.arguments, f"{tp}.function.arguments")
            part: dict[str, Any] = {"functionCall": {"name": self.names.gemini(tc.function.name), "args": args}}
            gemini_id = self.env.signatures.get(signatures.call_id_key(tc.id))
            if gemini_id:
                part["functionCall"]["id"] = gemini_id
            sig = self._signature(tc.extra_content, tc.id)
            if sig:
                part["thoughtSignature"] = sig
            calls.append(part)
            self.calls[tc.id] = (tc.function.name, j, gemini_id)
        if msg.function_call is not None and not msg.tool_calls:
            fc = msg.function_call
            args = function_arguments(fc.arguments, f"{param}.function_call.arguments")
            part = {"functionCall": {"name": self.names.gemini(fc.name), "args": args}}
            sig = self._signature(msg.extra_content, signatures.legacy_call_key(fc.name, fc.arguments))
            if sig:
                part["thoughtSignature"] = sig
            calls.append(part)
        if calls:
            self.open_calls = [tc.id for tc in msg.tool_calls or ()]
            self.open_since = i
        self._append("model", parts + calls)

    def _echoed_images(self, msg: Message) -> list[dict[str, Any]]:
        """Images the gateway returned earlier (`audio` or `images`), sent back for image editing."""
        parts = []
        audio = getattr(msg, "audio", None)
        if isinstance(audio, dict) and isinstance(audio.get("data"), str):
            mime = (((audio.get("extra_content") or {}).get("google") or {}).get("mime_type"))
            if isinstance(mime, str) and mime.startswith("image/"):
                parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        images = getattr(msg, "images", None)
        if isinstance(images, list) and not parts:
            for img in images:
                url = ((img or {}).get("image_url") or {}).get("url") if isinstance(img, dict) else None
                if isinstance(url, str) and url.startswith("data:"):
                    parts.append({"inlineData": media.parse_data_url(url, "images")})
        return parts

    def tool_message(self, msg: Message, i: int) -> None:
        param = f"messages[{i}]"
        if not msg.tool_call_id:
            raise InvalidRequest(
                f"Missing required parameter: '{param}.tool_call_id'.",
                param=f"{param}.tool_call_id",
                code="missing_required_parameter",
            )
        known = self.calls.get(msg.tool_call_id)
        if known is None or msg.tool_call_id not in self.open_calls:
            raise InvalidRequest(
                "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with "
                f"'tool_calls'. No earlier assistant message has a tool call with id '{msg.tool_call_id}' "
                "still waiting for its result.",
                param=f"{param}.role",
            )
        self.open_calls.remove(msg.tool_call_id)
        name, position, gemini_id = known
        response, fr_parts = self._tool_result(msg, param)
        fr: dict[str, Any] = {"name": self.names.gemini(name), "response": response}
        if gemini_id:
            fr["id"] = gemini_id
        siblings: list[dict[str, Any]] = []
        if fr_parts:
            if self.caps.multimodal_function_response:
                fr["parts"] = fr_parts
            else:
                siblings = fr_parts
        self.tool_run.append((position, {"functionResponse": fr}, siblings))

    def function_message(self, msg: Message, i: int) -> None:
        if not msg.name:
            raise InvalidRequest(
                f"Missing required parameter: 'messages[{i}].name'.",
                param=f"messages[{i}].name",
                code="missing_required_parameter",
            )
        response, _ = self._tool_result(msg, f"messages[{i}]")
        self.tool_run.append((0, {"functionResponse": {"name": self.names.gemini(msg.name), "response": response}}, []))

    def _tool_result(self, msg: Message, param: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        extra_parts: list[dict[str, Any]] = []
        if isinstance(msg.content, list):
            texts = []
            for j, part in enumerate(msg.content):
                if part.type == "text":
                    texts.append(part.text or "")
                elif part.type in _PART_TYPES:
                    extra_parts.append(attachment(self._media_part(part, f"{param}.content[{j}]"), len(extra_parts) + 1))
                else:
                    raise InvalidRequest(
                        f"Invalid value: '{part.type}'. Supported values are: 'text', 'image_url', 'input_audio' and 'file'.",
                        param=f"{param}.content[{j}].type",
                        code="invalid_value",
                    )
            text = "\n".join(texts)
        else:
            text = msg.content or ""
        google = (msg.extra_content or {}).get("google") if msg.extra_content else None
        if isinstance(google, dict) and isinstance(google.get("parts"), list):
            extra_parts.extend(camel_keys(p) for p in google["parts"] if isinstance(p, dict))
        return function_response(text, extra_parts, self.caps.multimodal_function_response), extra_parts

    def flush_tools(self) -> None:
        if not self.tool_run:
            return
        run = sorted(self.tool_run, key=lambda item: item[0])
        self.tool_run = []
        parts = [fr for _, fr, _ in run]
        for _, _, siblings in run:
            parts.extend(siblings)
        self._append("user", parts)


def function_arguments(raw: str | None, param: str) -> dict[str, Any]:
    """A function call's `arguments` (a JSON text) -> Gemini's `args` object; 400 naming `param` if not an object."""
    if not raw or not raw.strip():
        return {}
    try:
        args = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            f"Invalid '{param}': the function arguments are not valid JSON.", param=param, code="invalid_value"
        ) from None
    if not isinstance(args, dict):
        raise InvalidRequest(
            f"Invalid '{param}': the function arguments must be a JSON object.", param=param, code="invalid_value"
        )
    return args


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def camel_keys(value: Any) -> Any:
    """snake_case keys (as Google's OpenAI layer spells Gemini's fields) -> Gemini's lowerCamelCase."""
    if isinstance(value, dict):
        return {_camel(k): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


def attachment(blob: dict[str, Any], n: int) -> dict[str, Any]:
    """A media part attached to a function result, named `attachment_<n>` (what the response's `$ref`s name)."""
    blob.pop("mediaResolution", None)
    blob[next(iter(blob))]["displayName"] = f"attachment_{n}"
    return blob


def function_response(text: str, attachments: list[dict[str, Any]], multimodal: bool) -> dict[str, Any]:
    """A function's result text (and attached media parts) -> `functionResponse.response`.

    A JSON object is sent as the response itself, anything else as `{"output": text}`.
    A `$ref` in it would be resolved by Gemini 3 against the attached parts, so
    without attachments such text stays a string; with attachments (and a model
    taking multimodal function responses) the response names them.
    """
    references = '"$ref"' in text
    response: dict[str, Any] | None = None
    if text.startswith("{") and (attachments or not references):
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            response = parsed
    if response is None:
        response = {"output": text}
    if attachments and not references and multimodal:
        names = [p[next(iter(p))].get("displayName") for p in attachments]
        response = {**response, "attachments": [{"$ref": n} for n in names if n]}
    return response


def _contents(req: ChatCompletionRequest, caps: ModelCapabilities, env: TranslationEnv, names: ToolNames) -> _Builder:
    b = _Builder(req, caps, env, names)
    for i, msg in enumerate(req.messages):
        role = msg.role
        if role == "tool":
            b.tool_message(msg, i)
            continue
        if role == "function":
            b.function_message(msg, i)
            continue
        b.flush_tools()
        b.check_answered()
        if role in ("system", "developer"):
            b.system_message(msg, i)
        elif role == "user":
            b.user_message(msg, i)
        else:
            b.assistant_message(msg, i)
    b.flush_tools()
    b.check_answered()
    return b


def vertex_labels(metadata: Mapping[str, Any] | None, user: str | None) -> dict[str, str]:
    """`user` / `metadata` -> Vertex labels: lowercase, [a-z0-9_-], <= 63 chars, keys start with a letter."""
    raw: dict[str, str] = {}
    if metadata:
        raw.update({str(k): str(v) for k, v in metadata.items()})
    if user:
        raw["user"] = user
    labels = {}
    for key, value in raw.items():
        k = _LABEL_BAD.sub("_", key.lower())[:63]
        if not k or not k[0].isalpha():
            k = ("k" + k)[:63]
        labels[k] = _LABEL_BAD.sub("_", value.lower())[:63]
        if len(labels) == 64:
            break
    return labels


def finish_body(
    body: dict[str, Any], gen: dict[str, Any], caps: ModelCapabilities, env: TranslationEnv,
    metadata: Mapping[str, Any] | None, user: str | None, param_keys: Mapping[str, tuple[str, ...]] | None = None,
) -> None:
    """`gen` as the body's `generationConfig` (the keys of the model's `drop_params` taken out first; none left: no
    field) and, on Vertex, `user` / `metadata` as its `labels`. `param_keys`: parameter -> the keys it becomes
    (`PARAM_KEYS` unless said)."""
    keys = PARAM_KEYS if param_keys is None else param_keys
    for param in caps.drop_params:
        for key in keys.get(param, ()):
            gen.pop(key, None)
    if gen:
        body["generationConfig"] = gen
    if env.vertex:
        labels = vertex_labels(metadata, user)
        if labels:
            body["labels"] = labels


def _generation_config(req: ChatCompletionRequest, caps: ModelCapabilities) -> dict[str, Any]:
    gen: dict[str, Any] = {}
    max_tokens = req.max_completion_tokens or req.max_tokens
    if max_tokens is not None:
        gen["maxOutputTokens"] = max_tokens
    if req.temperature is not None:
        gen["temperature"] = req.temperature
    if req.top_p is not None:
        gen["topP"] = req.top_p
    if req.top_k is not None:
        gen["topK"] = req.top_k
    if req.n is not None and req.n != 1:
        gen["candidateCount"] = req.n
    if req.stop:
        gen["stopSequences"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    if req.seed is not None:
        gen["seed"] = req.seed
    if req.presence_penalty:
        gen["presencePenalty"] = req.presence_penalty
    if req.frequency_penalty:
        gen["frequencyPenalty"] = req.frequency_penalty
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidRequest(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
            param="top_logprobs",
            code="invalid_value",
        )
    if req.logprobs:
        gen["responseLogprobs"] = True
        if req.top_logprobs:
            gen["logprobs"] = req.top_logprobs
    return gen


# OpenAI parameter -> the generationConfig keys it becomes (for per-model `drop_params`).
PARAM_KEYS = {
    "max_tokens": ("maxOutputTokens",),
    "max_completion_tokens": ("maxOutputTokens",),
    "temperature": ("temperature",),
    "top_p": ("topP",),
    "top_k": ("topK",),
    "n": ("candidateCount",),
    "stop": ("stopSequences",),
    "seed": ("seed",),
    "presence_penalty": ("presencePenalty",),
    "frequency_penalty": ("frequencyPenalty",),
    "logprobs": ("responseLogprobs", "logprobs"),
    "top_logprobs": ("logprobs",),
    "reasoning_effort": ("thinkingConfig",),
}


def _response_format(req: ChatCompletionRequest, caps: ModelCapabilities, gen: dict[str, Any], dropped: list[str]) -> None:
    fmt = req.response_format
    if fmt is None or fmt.type == "text":
        return
    if fmt.type == "json_schema" and fmt.json_schema is None:
        raise InvalidRequest(
            "Missing required parameter: 'response_format.json_schema'.",
            param="response_format.json_schema",
            code="missing_required_parameter",
        )
    gen.update(json_output(fmt.json_schema.schema_ if fmt.json_schema else None, caps, dropped))


def json_output(schema: dict[str, Any] | None, caps: ModelCapabilities, dropped: list[str]) -> dict[str, Any]:
    """JSON output, with a JSON Schema when given -> the generationConfig keys that ask for it."""
    gen: dict[str, Any] = {"responseMimeType": "application/json"}
    if schema:
        if caps.json_schema:
            gen["responseJsonSchema"] = to_json_schema(schema)
        else:
            converted = to_openapi_schema(schema)
            dropped.extend(k for k in converted.dropped if k not in dropped)
            if converted.schema.get("type") != "STRING" or schema.get("type") != "object":
                gen["responseSchema"] = converted.schema  # (a free-form object: JSON mode alone)
    return gen


def google_thinking_config(tc: ThinkingConfig) -> dict[str, Any] | None:
    """`extra_body.google.thinking_config`, passed as given (a budget and a level together: 400)."""
    if tc.thinking_budget is not None and tc.thinking_level is not None:
        raise InvalidRequest(
            "Set either 'thinking_budget' or 'thinking_level' in 'extra_body.google.thinking_config', not both.",
            param="extra_body.google.thinking_config",
        )
    config: dict[str, Any] = {}
    if tc.include_thoughts is not None:
        config["includeThoughts"] = tc.include_thoughts
    if tc.thinking_budget is not None:
        config["thinkingBudget"] = tc.thinking_budget
    if tc.thinking_level is not None:
        config["thinkingLevel"] = tc.thinking_level.upper()
    return config or None


def _thinking(req: ChatCompletionRequest, caps: ModelCapabilities) -> tuple[dict[str, Any] | None, bool]:
    google = req.google_options()
    tc = google.thinking_config if google else None
    if tc is not None and req.reasoning_effort is not None:
        raise InvalidRequest(
            "Use either 'reasoning_effort' or 'extra_body.google.thinking_config', not both.",
            param="reasoning_effort",
        )
    if tc is not None:
        return google_thinking_config(tc), bool(tc.include_thoughts)
    if req.reasoning_effort is not None:
        try:
            return effort_to_thinking(req.reasoning_effort, caps), False
        except ValueError as exc:
            raise InvalidRequest(
                f"Invalid value for 'reasoning_effort': '{req.reasoning_effort}' is not supported by {req.model}: {exc}.",
                param="reasoning_effort",
                code="invalid_value",
            ) from None
    return None, False


def _modalities(req: ChatCompletionRequest) -> list[str] | None:
    if req.audio is not None:
        raise UnsupportedParameter(
            "Audio output is not supported by this gateway; remove 'audio' (and 'audio' from 'modalities').",
            param="audio",
        )
    if not req.modalities:
        return None
    out = []
    for m in req.modalities:
        if m == "text":
            out.append("TEXT")
        elif m == "image":
            out.append("IMAGE")
        else:
            raise UnsupportedParameter(
                f"Invalid value for 'modalities': '{m}' output is not supported; use 'text' and/or 'image'.",
                param="modalities",
            )
    return None if out == ["TEXT"] else out


def to_gemini(req: ChatCompletionRequest, caps: ModelCapabilities, env: TranslationEnv | None = None) -> GeminiCall:
    """Translate one OpenAI chat request for one Gemini model."""
    env = env or TranslationEnv()
    if req.logit_bias:
        raise UnsupportedParameter("'logit_bias' is not supported by Gemini.", param="logit_bias")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    google = req.google_options()
    tools, tool_config, names, legacy, dropped = tools_to_gemini(req, caps.json_schema)
    b = _contents(req, caps, env, names)
    if not b.contents:
        raise InvalidRequest(
            "'messages' must contain at least one user or assistant message with content.", param="messages"
        )

    body: dict[str, Any] = {"contents": b.contents}
    if b.system:
        body["systemInstruction"] = {"parts": b.system}
    if tools:
        body["tools"] = tools
    stream_args = bool(google and google.stream_function_call_arguments)
    if stream_args and not tools:
        raise InvalidRequest(
            "'extra_body.google.stream_function_call_arguments' needs 'tools'.",
            param="extra_body.google.stream_function_call_arguments",
        )
    # Only Vertex streams arguments (the Gemini API refuses the field); elsewhere whole
    # calls arrive and are sent as one arguments delta, which OpenAI clients accept alike.
    stream_args = stream_args and bool(req.stream) and env.vertex
    if stream_args:
        tool_config = {**(tool_config or {"mode": "AUTO"}), "streamFunctionCallArguments": True}
    if tool_config:
        body["toolConfig"] = {"functionCallingConfig": tool_config}
    if google and google.safety_settings:
        body["safetySettings"] = [camel_keys(s) for s in google.safety_settings]
    if google and google.cached_content:
        body["cachedContent"] = google.cached_content

    gen = _generation_config(req, caps)
    _response_format(req, caps, gen, dropped)
    thinking, include_thoughts = _thinking(req, caps)
    if thinking:
        gen["thinkingConfig"] = thinking
    modalities = _modalities(req)
    if modalities:
        gen["responseModalities"] = modalities
    if b.resolution:
        gen["mediaResolution"] = b.resolution
    finish_body(body, gen, caps, env, req.metadata, req.user)

    bypassed = signatures.enforce_current_turn(b.contents) if caps.signatures_required else 0
    options = ResponseOptions(
        model=req.model,
        tool_names=dict(names.to_openai),
        legacy_functions=legacy,
        include_thoughts=include_thoughts,
        thought_tag_marker=google.thought_tag_marker if google else None,
        images=env.images,
        include_usage=bool(req.stream and req.stream_options and req.stream_options.include_usage),
        stream_function_call_arguments=stream_args,
    )
    return GeminiCall(body, bool(req.stream), options, bypassed, b.signatures_passed, b.signatures_restored, dropped)


def sent_param(param: str | None, req: ChatCompletionRequest) -> str | None:
    """The OpenAI parameter a Google 400 is about, among the ones this request actually sent.

    Google's message names its own field ("Penalty is not enabled ..."); several OpenAI
    parameters map to it, so the one the client used is named.
    """
    if param == "presence_penalty" and not req.presence_penalty and req.frequency_penalty:
        return "frequency_penalty"
    if param == "reasoning_effort" and req.reasoning_effort is None:
        google = req.google_options()
        if google is not None and google.thinking_config is not None:
            return "extra_body.google.thinking_config"
    if param == "max_completion_tokens" and req.max_completion_tokens is None and req.max_tokens is not None:
        return "max_tokens"
    return param
