"""Gemini `GenerateContentResponse` -> the OpenAI Response object. Pure.

A whole answer goes through the same state machine as a stream
(`OutputBuilder`, fed the answer as one event; `responses_stream.py` frames
its events as SSE and adds the byte fast path for text deltas), so a response
reads the same whether it was streamed or not. Also here: the answer's
context (ids and clock injected, so golden outputs are deterministic), the
Response object around the output items, usage, status and
`incomplete_details`, and flat `url_citation` annotations.

Rules (docs/parameters.md, "Responses"): usage through chat's policy
(`input_tokens` = prompt + tool-use prompt, `output_tokens` = candidates +
thoughts, `reasoning_tokens` = thoughts, `cached_tokens`); `MAX_TOKENS` ->
`status: incomplete`, `reason: max_output_tokens`; the safety family ->
`incomplete`, `content_filter`; a blocked prompt is a 400 and a malformed
function call a 502 after retries, as for chat (docs/design.md#endings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.errors import ContentFiltered, GatewayError
from app.translate import signatures
from app.translate.chat_response import (
    BrokenToolCall,
    annotations_to_openai,
    code_part_text,
    logprobs_to_openai,
    prompt_blocked,
    usage_to_openai,
)
from app.translate.responses_request import ResponsesOptions
from app.translate.tables import BROKEN_TOOL_CALL_FINISHES, gemini_finish_reason_to_openai

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
FINISHED = frozenset({"completed", "incomplete", "failed"})  # statuses whose Response object carries its usage


@dataclass
class ResponsesContext:
    """One answer's identity and options; ids and the clock are injected."""

    options: ResponsesOptions
    id: str  # resp_...
    created_at: int
    new_id: Callable[[str], str]  # item id for a prefix ("msg" -> "msg_...")
    new_call_id: Callable[[], str]  # call_...
    now: Callable[[], int]  # completed_at
    signatures: dict[str, str] = field(default_factory=dict)  # out: store key -> signature to remember


def usage_to_responses(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Gemini's `usageMetadata` -> Responses usage (chat's figures, Responses' names)."""
    chat = usage_to_openai(meta)
    return {
        "input_tokens": chat["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": chat["prompt_tokens_details"]["cached_tokens"], "cache_write_tokens": 0},
        "output_tokens": chat["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": chat["completion_tokens_details"]["reasoning_tokens"]},
        "total_tokens": chat["total_tokens"],
    }


def status_of(finish_reason: str | None, calls: bool) -> tuple[str, dict[str, str] | None]:
    """Gemini's finish reason -> (`status`, `incomplete_details`); calls made are complete (chat's `tool_calls`)."""
    reason = INCOMPLETE_REASONS.get(gemini_finish_reason_to_openai(finish_reason, calls))
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def flat_annotations(
    grounding: Mapping[str, Any] | None, part_texts: list[str], part_starts: list[int]
) -> list[dict[str, Any]]:
    """Grounding supports -> Responses' flat `url_citation` annotations (chat's offsets policy)."""
    return [{"type": "url_citation", **a["url_citation"]} for a in annotations_to_openai(grounding, part_texts, part_starts)]


def blocked_prompt(event: Mapping[str, Any]) -> ContentFiltered | None:
    blocked = prompt_blocked(event)
    if blocked is not None:
        blocked.param = "input"
    return blocked


def response_object(
    ctx: ResponsesContext,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    *,
    incomplete: dict[str, str] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Response object: lifecycle fields, the request fields it repeats (`options.echo`, in three runs), output
    and usage."""
    echo = ctx.options.echo
    return {
        "id": ctx.id,
        "object": "response",
        "created_at": ctx.created_at,
        "status": status,
        "background": False,
        "completed_at": ctx.now() if status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete,
        **echo.head,
        "model": ctx.options.model,
        "output": output,
        **echo.middle,
        "usage": usage if status in FINISHED else None,
        **echo.tail,
    }


# -- the output items, as events: the one state machine of streamed and whole answers ------------

TEXT_DELTA = "response.output_text.delta"


def stream_event(kind: str, seq: int, fields: Mapping[str, Any]) -> dict[str, Any]:
    """One event of a Responses stream: its type, its sequence number, then its fields."""
    return {"type": kind, "sequence_number": seq, **fields}


@dataclass
class _Message:
    """The message item being written."""

    index: int
    id: str
    texts: list[str] = field(default_factory=list)
    pieces: dict[int, tuple[int, str]] = field(default_factory=dict)  # whole answers: Gemini part index -> (start, text)
    length: int = 0
    logprobs: list[Any] = field(default_factory=list)
    delta_parts: tuple[bytes, bytes, bytes] | None = None  # (responses_stream.py: a text delta's SSE pieces)


@dataclass
class _Reasoning:
    """The reasoning item (thought summary) being written."""

    index: int
    id: str
    texts: list[str] = field(default_factory=list)


def text_delta(item_id: str, output_index: int, text: str, logprobs: list[Any]) -> dict[str, Any]:
    """The fields of an `output_text.delta` event (responses_stream.py's byte template is made from them too)."""
    return {"item_id": item_id, "output_index": output_index, "content_index": 0, "delta": text, "logprobs": logprobs}


class OutputBuilder:
    """Gemini events -> Responses events, in OpenAI's order, with the output items and the final Response.

    `feed(event)` takes one Gemini event (a stream chunk, or a whole answer
    with `whole=True`), `finish()` closes the open items and adds the terminal
    event (`response.completed` / `response.incomplete`; `final` is then the
    Response object), `fail(exc)` ends with `response.failed` and an `error`
    event. New events collect in `events` (the caller takes them; a whole
    answer collects none, as only its `final` is sent). Item order
    follows the parts: reasoning (thought summary), message, function calls,
    as Gemini sends them; a web search comes last, since Gemini reports it
    with the end of the answer.
    """

    def __init__(self, ctx: ResponsesContext, whole: bool = False) -> None:
        self.ctx = ctx
        self.whole = whole
        self.events: list[dict[str, Any]] = []
        self.seq = 0
        self.output: list[dict[str, Any] | None] = []  # items by output_index; None while open
        self.message: _Message | None = None
        self.reasoning: _Reasoning | None = None
        self.usage: Mapping[str, Any] | None = None
        self.finish_reason: str | None = None
        self.grounding_chunks: list[Any] = []
        self.grounding_supports: list[Any] = []
        self.queries: list[str] = []
        self.calls = 0
        self.text_signature: str | None = None  # the latest on a part other than a call
        self.final: dict[str, Any] | None = None
        self.final_json = b""  # `final` as JSON, serialized once (for its event, the body of a whole answer, the store)
        self.started = False

    def emit(self, kind: str, **fields: Any) -> None:
        if not self.whole:  # (a whole answer's events are not sent: only `final` is)
            self.events.append(stream_event(kind, self.seq, fields))
        self.seq += 1

    def _open(self, item: dict[str, Any]) -> int:
        index = len(self.output)
        self.output.append(None)
        self.emit("response.output_item.added", output_index=index, item=item)
        return index

    def _done(self, index: int, item: dict[str, Any]) -> None:
        self.output[index] = item
        self.emit("response.output_item.done", output_index=index, item=item)

    def start(self) -> None:
        self.started = True
        if self.whole:
            return
        created = orjson.Fragment(orjson.dumps(response_object(self.ctx, "in_progress", [], None)))  # serialized once
        self.emit("response.created", response=created)
        self.emit("response.in_progress", response=created)

    # -- Gemini events ------------------------------------------------------------------------------

    def feed(self, event: Mapping[str, Any]) -> None:
        if not self.started:
            self.start()
        if "promptFeedback" in event:
            blocked = blocked_prompt(event)
            if blocked is not None:
                raise blocked
        usage = event.get("usageMetadata")
        if usage is not None:
            self.usage = usage
        for cand in event.get("candidates") or ():
            if cand.get("index", 0) != 0:
                continue  # (never asked for: the Responses API has one answer)
            reason = cand.get("finishReason")
            if reason in BROKEN_TOOL_CALL_FINISHES:
                raise BrokenToolCall(reason, cand.get("finishMessage"))
            grounding = cand.get("groundingMetadata")
            if grounding:
                self.grounding_chunks.extend(grounding.get("groundingChunks") or ())
                self.grounding_supports.extend(grounding.get("groundingSupports") or ())
                self.queries.extend(q for q in grounding.get("webSearchQueries") or () if q not in self.queries)
            logprobs: list[Any] = []
            if self.ctx.options.logprobs and cand.get("logprobsResult"):
                logprobs = (logprobs_to_openai(cand["logprobsResult"]) or {}).get("content") or []
            for k, part in enumerate((cand.get("content") or {}).get("parts") or ()):
                logprobs = self._part(part, k, logprobs)
            if logprobs and self.message is not None:  # (no text in this event to carry them)
                self.message.logprobs.extend(logprobs)
            if reason:
                self.finish_reason = reason

    def _part(self, part: Mapping[str, Any], k: int, logprobs: list[Any]) -> list[Any]:
        """One part; returns the logprobs not yet given to a text delta."""
        sig = part.get("thoughtSignature")
        if "functionCall" in part:
            self._call(part["functionCall"], sig)
            return logprobs
        if sig:
            self.text_signature = sig
        if "text" in part:
            if part.get("thought"):
                if self.ctx.options.include_thoughts and part["text"]:
                    self._summary(part["text"])
                return logprobs
            text = part["text"]
        elif "inlineData" in part:
            self._image(part["inlineData"])
            return logprobs
        else:
            text = code_part_text(part) or ""
        if not text:
            return logprobs
        self._text(text, k, logprobs)
        return []

    def _summary(self, text: str) -> None:
        if self.message is not None:
            self._close_message("completed")
        r = self.reasoning
        if r is None:
            r = self.reasoning = _Reasoning(0, self.ctx.new_id("rs"))
            r.index = self._open({"id": r.id, "type": "reasoning", "summary": []})
            self.emit("response.reasoning_summary_part.added", item_id=r.id, output_index=r.index, summary_index=0,
                      part={"type": "summary_text", "text": ""})  # fmt: skip
        r.texts.append(text)
        self.emit("response.reasoning_summary_text.delta", item_id=r.id, output_index=r.index, summary_index=0, delta=text)

    def _close_reasoning(self, signature: str | None = None) -> None:
        r = self.reasoning
        if r is None:
            return
        self.reasoning = None
        text = "".join(r.texts)
        self.emit("response.reasoning_summary_text.done", item_id=r.id, output_index=r.index, summary_index=0, text=text)
        part = {"type": "summary_text", "text": text}
        self.emit("response.reasoning_summary_part.done", item_id=r.id, output_index=r.index, summary_index=0, part=part)
        item: dict[str, Any] = {"id": r.id, "type": "reasoning", "summary": [part]}
        if signature:
            item["encrypted_content"] = signatures.to_encrypted_content(signature)
        self._done(r.index, item)

    def _signature_item(self, signature: str) -> None:
        """A reasoning item carrying only the step's signature (`include: ["reasoning.encrypted_content"]`)."""
        item = {"id": self.ctx.new_id("rs"), "type": "reasoning", "summary": []}
        index = self._open(item)
        self._done(index, {**item, "encrypted_content": signatures.to_encrypted_content(signature)})

    def _text(self, text: str, k: int, logprobs: list[Any]) -> None:
        self._close_reasoning()
        m = self.message
        if m is None:
            m = self.message = _Message(0, self.ctx.new_id("msg"))
            m.index = self._open({"id": m.id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"})
            self.emit("response.content_part.added", item_id=m.id, output_index=m.index, content_index=0,
                      part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""})  # fmt: skip
        if not text:
            return  # (an empty message, opened at the end)
        if self.whole:
            m.pieces[k] = (m.length, text)
        m.texts.append(text)
        m.length += len(text)
        m.logprobs.extend(logprobs)
        self.emit(TEXT_DELTA, **text_delta(m.id, m.index, text, logprobs))

    def _annotations(self, m: _Message, text: str) -> list[dict[str, Any]]:
        if not self.grounding_supports:
            return []
        grounding = {"groundingChunks": self.grounding_chunks, "groundingSupports": self.grounding_supports}
        if not self.whole:  # streamed: offsets into the whole text
            return flat_annotations(grounding, [text], [0])
        size = max(m.pieces) + 1 if m.pieces else 0
        texts, starts = [""] * size, [0] * size
        for k, (start, piece) in m.pieces.items():
            texts[k], starts[k] = piece, start
        return flat_annotations(grounding, texts, starts)

    def _close_message(self, status: str) -> None:
        m = self.message
        if m is None:
            return
        self.message = None
        text = "".join(m.texts)
        annotations = self._annotations(m, text)
        for i, annotation in enumerate(annotations):
            self.emit("response.output_text.annotation.added", item_id=m.id, output_index=m.index, content_index=0,
                      annotation_index=i, annotation=annotation)  # fmt: skip
        self.emit("response.output_text.done", item_id=m.id, output_index=m.index, content_index=0, text=text,
                  logprobs=m.logprobs)  # fmt: skip
        part = {"type": "output_text", "annotations": annotations, "logprobs": m.logprobs, "text": text}
        self.emit("response.content_part.done", item_id=m.id, output_index=m.index, content_index=0, part=part)
        item: dict[str, Any] = {"id": m.id, "type": "message", "status": status, "content": [part], "role": "assistant"}
        if self.text_signature:
            item["extra_content"] = signatures.to_extra_content(self.text_signature)
            self.ctx.signatures[signatures.text_key(text)] = self.text_signature
        self._done(m.index, item)

    def _call(self, fc: Mapping[str, Any], sig: str | None) -> None:
        carry = sig if sig and self.calls == 0 and self.ctx.options.encrypted_reasoning else None
        had_reasoning = self.reasoning is not None
        self._close_reasoning(carry)
        self._close_message("completed")
        if carry and not had_reasoning:
            self._signature_item(carry)
        name = fc.get("name", "")
        call_id = self.ctx.new_call_id()
        head = {"id": self.ctx.new_id("fc"), "type": "function_call", "status": "in_progress", "arguments": "",
                "call_id": call_id, "name": self.ctx.options.tool_names.get(name, name)}  # fmt: skip
        index = self._open(head)
        arguments = orjson.dumps(fc.get("args") or {}).decode()
        self.emit("response.function_call_arguments.delta", item_id=head["id"], output_index=index, delta=arguments)
        self.emit("response.function_call_arguments.done", item_id=head["id"], output_index=index, arguments=arguments,
                  name=head["name"])  # fmt: skip
        item = {**head, "status": "completed", "arguments": arguments}
        if sig:
            item["extra_content"] = signatures.to_extra_content(sig)
            self.ctx.signatures[call_id] = sig
        if fc.get("id"):
            self.ctx.signatures[signatures.call_id_key(call_id)] = fc["id"]
        self._done(index, item)
        self.calls += 1

    def _image(self, blob: Mapping[str, Any]) -> None:
        self._close_reasoning()
        self._close_message("completed")
        mime = str(blob.get("mimeType", ""))
        item = {"id": self.ctx.new_id("ig"), "type": "image_generation_call", "status": "in_progress", "result": None}
        index = self._open(item)
        self._done(index, {**item, "status": "completed", "result": blob.get("data", ""),
                           "output_format": mime.partition("/")[2] or None})  # fmt: skip

    def _web_search(self) -> None:
        item: dict[str, Any] = {"id": self.ctx.new_id("ws"), "type": "web_search_call", "status": "in_progress"}
        index = self._open(item)
        for stage in ("in_progress", "searching", "completed"):
            self.emit(f"response.web_search_call.{stage}", item_id=item["id"], output_index=index)
        action: dict[str, Any] = {"type": "search", "query": self.queries[0] if self.queries else "", "queries": self.queries}
        if self.ctx.options.search_sources:
            urls = dict.fromkeys((c.get("web") or {}).get("uri") for c in self.grounding_chunks)
            action["sources"] = [{"type": "url", "url": u} for u in urls if u]
        self._done(index, {**item, "status": "completed", "action": action})

    # -- endings ------------------------------------------------------------------------------------

    def finish(self) -> None:
        """Close what is open, then `response.completed` / `response.incomplete` (Gemini sends no end of its own)."""
        if not self.started:
            self.start()
        status, incomplete = status_of(self.finish_reason, self.calls > 0)
        self._close_reasoning()
        if not self.output:  # an answer without content is still a message (as chat's choice), never `output: []`
            self._text("", 0, [])
        self._close_message(status)
        if self.text_signature and not self.calls and self.ctx.options.encrypted_reasoning:
            self._signature_item(self.text_signature)
        if self.queries:
            self._web_search()
        output = [item for item in self.output if item is not None]
        self.final = response_object(self.ctx, status, output, usage_to_responses(self.usage), incomplete=incomplete)
        self.final_json = orjson.dumps(self.final)
        self.emit(f"response.{status}", response=orjson.Fragment(self.final_json))

    def fail(self, exc: GatewayError) -> None:
        """End with `response.failed` (the items finished so far) and an `error` event (SDKs raise on it)."""
        if not self.started:
            self.start()
        error = {"code": exc.code or exc.type, "message": exc.message}
        output = [item for item in self.output if item is not None]
        self.final = response_object(self.ctx, "failed", output, usage_to_responses(self.usage), error=error)
        self.final_json = orjson.dumps(self.final)
        self.emit("response.failed", response=orjson.Fragment(self.final_json))
        self.emit("error", code=exc.code or exc.type, message=exc.message, param=exc.param, error=exc.body()["error"])


def to_responses(response: Mapping[str, Any], ctx: ResponsesContext) -> dict[str, Any]:
    """Translate a whole (non-streamed) Gemini answer. Raises ContentFiltered / BrokenToolCall."""
    return whole_answer(response, ctx)[0]


def whole_answer(response: Mapping[str, Any], ctx: ResponsesContext) -> tuple[dict[str, Any], bytes]:
    """`to_responses`, and the Response as JSON (serialized once: the body, and what the store keeps)."""
    builder = OutputBuilder(ctx, whole=True)
    builder.feed(response)
    builder.finish()
    assert builder.final is not None
    return builder.final, builder.final_json
