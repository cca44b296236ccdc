"""Inbound wire model of `POST /v1/responses` (OpenAI's Responses API).

Same rules as the chat model (schemas/openai.py): unknown fields are kept,
never refused; the types of the fields we read are checked, so a wrong type is
a 400 naming the field (`input[2].call_id`). Input items and their content
parts are flat models (one class with every field of every item type): which
fields an item of a given `type` needs is checked by the translator
(translate/responses_request.py), which knows OpenAI's messages for them.

Shapes: OpenAI's `response_create_params` (function tools, `text.format`
json_schema and `url_citation` annotations are flat, unlike chat's).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.openai import ExtraBody, GoogleOptions, InputAudio, Metadata, ReasoningEffort


class _Open(BaseModel):
    """Unknown fields are kept (extras), never an error."""

    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    """A part of a message: `input_text`, `input_image`, `input_file`; `output_text`, `refusal` in a replayed answer."""

    type: str
    text: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None
    detail: str | None = None
    refusal: str | None = None
    input_audio: InputAudio | None = None


class InputItem(_Open):
    """One item of `input`: a message (easy or typed), a function call or its output, a reasoning item, ..."""

    type: str | None = None  # absent: an "easy" message
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[ContentPart] | None = None
    id: str | None = None
    status: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ContentPart] | None = None
    summary: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None
    extra_content: dict[str, Any] | None = None  # Gemini's thought signature, as chat carries it


class Tool(_Open):
    """A tool: `function` (flat: name, description, parameters, strict) or `web_search` and its aliases."""

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    filters: dict[str, Any] | None = None
    search_context_size: str | None = None
    user_location: dict[str, Any] | None = None


class ToolChoiceObject(_Open):
    type: str
    name: str | None = None
    mode: Literal["auto", "required"] | None = None
    tools: list[dict[str, Any]] | None = None


class TextFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, min_length=1, max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(_Open):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


Summary = Literal["auto", "concise", "detailed"]


class Reasoning(_Open):
    effort: ReasoningEffort | None = None
    summary: Summary | None = None
    generate_summary: Summary | None = None  # deprecated spelling of `summary`


class ResponsesRequest(_Open):
    model: str = Field(min_length=1)
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: str | None = Field(None, min_length=1)

    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = Field(None, ge=1)

    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    include: list[str] | None = None

    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    store: bool | None = True
    metadata: Metadata | None = None
    truncation: Literal["auto", "disabled"] | None = None

    # Refused (400 naming them): no Gemini equivalent, and ignoring them would change the answer.
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None

    extra_body: ExtraBody | None = None
    google: GoogleOptions | None = None

    # Hints: accepted and not forwarded (see docs/parameters.md).
    user: str | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None

    def google_options(self) -> GoogleOptions | None:
        if self.extra_body is not None and self.extra_body.google is not None:
            return self.extra_body.google
        return self.google
