"""Inbound OpenAI wire models: the `POST /v1/chat/completions` and `POST /v1/embeddings` requests.

Owns the shape check of what clients send. Tolerant where OpenAI-compatible
servers are tolerant (unknown top-level and message fields are kept, not
refused: SDKs add fields faster than anyone maps them), strict on the types of
the fields we read, so a wrong type is a 400 that names the field. Role- and
part-specific rules (a tool message needs `tool_call_id`, ...) are checked by
the translator, which knows the OpenAI messages for them.

Messages and content parts are flat models (one class with every field) rather
than discriminated unions: validation is cheaper and error locations stay
`messages[2].content[0].image_url` instead of carrying union tags.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.errors import InvalidRequest

METADATA_PAIRS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512  # OpenAI's limits on `metadata`


def _metadata_limits(metadata: dict[str, str]) -> dict[str, str]:
    """OpenAI's limits on `metadata` (chat and Responses): a 400 naming the pair over them."""
    if len(metadata) > METADATA_PAIRS:
        raise InvalidRequest(
            f"Invalid 'metadata': too many properties. Expected an object with at most {METADATA_PAIRS} properties, "
            f"but got an object with {len(metadata)} properties instead.", param="metadata", code="object_above_max_properties",
        )  # fmt: skip
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS:
            raise InvalidRequest(
                f"Invalid 'metadata': property name too long. Expected a name with maximum length {METADATA_KEY_CHARS}, "
                f"but got a name with length {len(key)} instead.", param="metadata", code="string_above_max_length",
            )  # fmt: skip
        if len(value) > METADATA_VALUE_CHARS:
            raise InvalidRequest(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                f"{METADATA_VALUE_CHARS}, but got a string with length {len(value)} instead.",
                param=f"metadata.{key}", code="string_above_max_length",
            )  # fmt: skip
    return metadata


Metadata = Annotated[dict[str, str], AfterValidator(_metadata_limits)]


class _Open(BaseModel):
    """Unknown fields are kept (extras), never an error."""

    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageURL(_Open):
    url: str
    detail: str | None = None


class InputAudio(_Open):
    data: str
    format: str


class FileSpec(_Open):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class ContentPart(_Open):
    type: str
    text: str | None = None
    image_url: ImageURL | str | None = None
    input_audio: InputAudio | None = None
    file: FileSpec | None = None
    refusal: str | None = None
    extra_content: dict[str, Any] | None = None


class FunctionCall(_Open):
    name: str
    arguments: str = ""


class ToolCall(_Open):
    id: str
    type: str = "function"
    function: FunctionCall | None = None
    extra_content: dict[str, Any] | None = None


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    extra_content: dict[str, Any] | None = None


class FunctionDefinition(_Open):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Open):
    type: str
    function: FunctionDefinition | None = None


class NamedFunction(_Open):
    name: str


class AllowedTools(_Open):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class ToolChoiceObject(_Open):
    type: str
    function: NamedFunction | None = None
    allowed_tools: AllowedTools | None = None


class JSONSchemaSpec(_Open):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaSpec | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class ThinkingConfig(_Closed):
    include_thoughts: bool | None = None
    thinking_budget: int | None = None
    thinking_level: Literal["minimal", "low", "medium", "high", "MINIMAL", "LOW", "MEDIUM", "HIGH"] | None = None


class GoogleOptions(_Closed):
    """`extra_body.google`, spelled as Google's own compatibility layer spells it."""

    safety_settings: list[dict[str, Any]] | None = None
    cached_content: str | None = None
    thinking_config: ThinkingConfig | None = None
    thought_tag_marker: str | None = None
    stream_function_call_arguments: bool | None = None


class ExtraBody(_Open):
    google: GoogleOptions | None = None


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class ChatCompletionRequest(_Open):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    logit_bias: dict[str, float] | None = None

    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = None
    function_call: Literal["none", "auto"] | NamedFunction | None = None

    reasoning_effort: ReasoningEffort | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None

    extra_body: ExtraBody | None = None
    google: GoogleOptions | None = None

    # Hints: accepted and not forwarded (see docs/parameters.md).
    user: str | None = None
    metadata: Metadata | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None

    def google_options(self) -> GoogleOptions | None:
        if self.extra_body is not None and self.extra_body.google is not None:
            return self.extra_body.google
        return self.google


# --- POST /v1/embeddings ---------------------------------------------------------------------


class EmbeddingGoogleOptions(_Closed):
    """`extra_body.google` of an embeddings request (snake_case, as Google's own layer spells it)."""

    task_type: str | None = Field(None, min_length=1)
    title: str | None = None


class EmbeddingExtraBody(_Open):
    google: EmbeddingGoogleOptions | None = None


class EmbeddingRequest(_Open):
    model: str = Field(min_length=1)
    # A string or a list of strings; token arrays are refused by translate/embeddings.py with a 400
    # naming `input` (Gemini embeds text), which also words every other problem with it.
    input: Any = Field(...)
    dimensions: int | None = Field(None, ge=1)
    # "float" | "base64", checked by translate/embeddings.py in OpenAI's own wording.
    encoding_format: Any = None

    extra_body: EmbeddingExtraBody | None = None
    google: EmbeddingGoogleOptions | None = None

    # Hint: accepted and not forwarded (see docs/parameters.md#embeddings).
    user: str | None = None

    def google_options(self) -> EmbeddingGoogleOptions | None:
        if self.extra_body is not None and self.extra_body.google is not None:
            return self.extra_body.google
        return self.google
