"""Gemini stream events -> OpenAI `chat.completion.chunk` objects. Pure.

`ChatStreamTranscoder` is the stream transcoder of the chat path (the generic
`StreamTranscoder` of translate/transcoder.py over this translator): it takes
the upstream's SSE bytes as they are read and gives the SSE bytes to send,
including the byte fast path for plain text deltas
(`ChatStreamTranslator.feed_payload`).

`ChatStreamTranslator.feed(event)` takes one parsed Gemini SSE event (a whole
`GenerateContentResponse` holding only the new parts) and returns the chunks
to send; `finish()` returns the closing chunks (finish reasons not yet sent,
then the usage chunk when `stream_options.include_usage` asked for it).
Rules: docs/design.md#streaming.

Endings that must not reach the client as a normal answer (a blocked prompt, a
malformed function call) raise from `feed`, so the caller can still retry or
answer with an HTTP error when nothing was sent yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.errors import GatewayError
from app.translate import signatures
from app.translate.chat_response import (
    BrokenToolCall,
    ResponseContext,
    annotations_to_openai,
    code_part_text,
    image_fields,
    logprobs_to_openai,
    prompt_blocked,
    tool_call_to_openai,
    usage_to_openai,
)
from app.translate.partial_args import ArgumentsWriter
from app.translate.plain_text import PlainText
from app.translate.tables import BROKEN_TOOL_CALL_FINISHES, gemini_finish_reason_to_openai
from app.translate.transcoder import StreamTranscoder


@dataclass
class _Choice:
    index: int
    started: bool = False  # the role has been sent
    finished: bool = False
    tool_call_index: int = 0  # running index of the next tool call, across the whole stream
    saw_tool_call: bool = False
    thought_tag_open: bool = False
    text: list[str] = field(default_factory=list)  # visible content so far (signature key, annotations)
    text_signature: str | None = None
    partial: ArgumentsWriter | None = None  # a call whose arguments are still streaming
    text_head: bytes | None = None  # SSE bytes of a content delta up to the text, once started
    partial_index: int = 0
    grounding_chunks: list[Any] = field(default_factory=list)
    grounding_supports: list[Any] = field(default_factory=list)


class ChatStreamTranslator:
    def __init__(self, ctx: ResponseContext) -> None:
        self.ctx = ctx
        self.choices: dict[int, _Choice] = {}
        self.usage: Mapping[str, Any] | None = None
        self._plain = PlainText()  # plain text deltas recognised in their bytes (feed_payload)
        self._base: dict[str, Any] = {
            "id": ctx.id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.options.model,
        }
        if ctx.options.include_usage:
            self._base["usage"] = None
        # `data:` bytes of a plain content delta up to the text, and after it (see feed_payload).
        head = orjson.dumps(self._base)[:-1]
        self._text_head = b'data: ' + head + b',"choices":[{"index":'
        self._text_mid = b',"delta":{"content":'
        self._text_tail = b'},"finish_reason":null}]}\n\n'

    # -- chunk building -------------------------------------------------------------------------

    def _chunk(self, choice: _Choice, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        if not choice.started:
            choice.started = True
            choice.text_head = b"".join((self._text_head, str(choice.index).encode(), self._text_mid))
            if "content" in delta:
                delta = {"role": "assistant", **delta}
            else:
                calls = "tool_calls" in delta or "function_call" in delta
                delta = {"role": "assistant", "content": None if calls else "", **delta}
        entry: dict[str, Any] = {"index": choice.index, "delta": delta, "finish_reason": finish}
        if logprobs is not None:
            entry["logprobs"] = logprobs
        return {**self._base, "choices": [entry]}

    def _choice(self, index: int) -> _Choice:
        choice = self.choices.get(index)
        if choice is None:
            choice = self.choices[index] = _Choice(index)
        return choice

    # -- events ---------------------------------------------------------------------------------

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        if "promptFeedback" in event:
            blocked = prompt_blocked(event)
            if blocked is not None:
                raise blocked
        usage = event.get("usageMetadata")
        if usage is not None:
            self.usage = usage
            self._plain.usage_payload = None
        out: list[dict[str, Any]] = []
        for cand in event.get("candidates") or ():
            index = cand.get("index", 0)
            choice = self.choices.get(index) or self._choice(index)
            if choice.finished:
                continue
            reason = cand.get("finishReason")
            if reason in BROKEN_TOOL_CALL_FINISHES:
                raise BrokenToolCall(reason, cand.get("finishMessage"))
            content = cand.get("content")
            parts = content.get("parts") if content else None
            if parts and len(parts) == 1 and len(parts[0]) == 1 and "text" in parts[0] and not choice.thought_tag_open:
                text = parts[0]["text"]  # the common case: one plain text part
                delta: dict[str, Any] = {"content": text} if text else {}
                if text:
                    choice.text.append(text)
            else:
                delta = self._delta(choice, parts or ())
            if "groundingMetadata" in cand:
                grounding = cand["groundingMetadata"]
                choice.grounding_chunks.extend(grounding.get("groundingChunks") or ())
                choice.grounding_supports.extend(grounding.get("groundingSupports") or ())
            logprobs = logprobs_to_openai(cand["logprobsResult"]) if "logprobsResult" in cand else None
            if reason:
                out.extend(self._finish_choice(choice, delta, reason, logprobs))
            elif delta or logprobs is not None or not choice.started:
                out.append(self._chunk(choice, delta, logprobs=logprobs))
        return out

    def feed_sse(self, event: Mapping[str, Any]) -> bytes:
        """`feed(event)`, framed as SSE `data:` events.

        (Plain text deltas usually take `feed_payload` instead, before being parsed.)
        """
        return b"".join([sse_data(chunk) for chunk in self.feed(event)])

    def feed_payload(self, data: bytes, at: int = 0, last: bytes = b"}") -> bytes | None:
        """`feed_sse` of the unparsed JSON of one event, when it is a plain text delta; else None.

        The JSON starts at `data[at]` and `data` ends with `last` (the transcoder
        passes a whole read, a `data:` line with its separator, when it holds
        exactly one event).

        Most events of a stream are one more piece of text for candidate 0: such an
        event is recognised in its bytes (`PlainText.match`, app/translate/plain_text.py)
        and the text's JSON string literal copied into the chunk template. Anything
        else (the first and last events, thoughts, signatures, tool calls, other
        candidates) returns None and goes through `parse_payload` and `feed_sse`,
        which give the same chunks. The usage is kept as bytes and parsed once, by
        `finish`. (`feed_run` does the same for the plain events a read starts with.)
        """
        choice = self.choices.get(0)
        if choice is None or choice.text_head is None or choice.finished or choice.thought_tag_open:
            return None
        found = self._plain.match(data, at, last)
        if found is None:
            return None
        literal, text = found
        if not text:
            return b""
        choice.text.append(text)
        return b"".join((choice.text_head, literal, self._text_tail))

    def feed_run(self, data: bytes) -> tuple[bytes, int]:
        """The chunks of the plain text events at the start of one read of whole events in Google's framing, and
        where they end (0: none taken; `PlainText.run`). The same bytes as `feed_payload` per event."""
        choice = self.choices.get(0)  # (feed_payload's test, written out: a helper call per event cost ~2 % of a
        if choice is None or choice.text_head is None or choice.finished or choice.thought_tag_open:  # paced stream)
            return b"", 0
        literals, texts, end = self._plain.run(data)
        if not literals:
            return b"", end
        choice.text += texts
        head, tail = choice.text_head, self._text_tail
        return b"".join((head, (tail + head).join(literals), tail)), end

    def _delta(self, choice: _Choice, parts: Any) -> dict[str, Any]:
        opts = self.ctx.options
        content: list[str] = []
        reasoning: list[str] = []
        calls: list[dict[str, Any]] = []
        images: list[Any] = []
        for part in parts:
            if "functionCall" in part:
                self._tool_call(choice, part, calls)
                continue
            sig = part.get("thoughtSignature")
            if sig:
                choice.text_signature = sig
            if "text" in part:
                text = part["text"]
                if not text:
                    continue
                if part.get("thought"):
                    if opts.include_thoughts:
                        reasoning.append(text)
                        if opts.thought_tag_marker:
                            if not choice.thought_tag_open:
                                content.append(f"<{opts.thought_tag_marker}>")
                                choice.thought_tag_open = True
                            content.append(text)
                    continue
                content.append(self._close_thoughts(choice) + text)
            elif "inlineData" in part:
                images.append(part["inlineData"])
            else:
                rendered = code_part_text(part)
                if rendered:
                    content.append(self._close_thoughts(choice) + rendered)
        delta: dict[str, Any] = {}
        if reasoning:
            delta["reasoning_content"] = "".join(reasoning)
        if content:
            text = "".join(content)
            choice.text.append(text)
            delta["content"] = text
        if calls:
            if opts.legacy_functions:
                delta["function_call"] = calls[0]["function"]
                if "extra_content" in calls[0]:  # as the non-streamed message carries it
                    delta["extra_content"] = calls[0]["extra_content"]
            else:
                delta["tool_calls"] = calls
        if images:
            delta.update(image_fields(images, opts.images))
        return delta

    def _close_thoughts(self, choice: _Choice) -> str:
        if choice.thought_tag_open:
            choice.thought_tag_open = False
            return f"</{self.ctx.options.thought_tag_marker}>"
        return ""

    def _tool_call(self, choice: _Choice, part: Mapping[str, Any], calls: list[dict[str, Any]]) -> None:
        fc = part["functionCall"]
        # The last piece of a streamed call may be a bare `{}` (willContinue false is omitted).
        streaming = "partialArgs" in fc or fc.get("willContinue") or (choice.partial is not None and not fc.get("name"))
        if not streaming:
            call = tool_call_to_openai(part, self.ctx)
            call["index"] = choice.tool_call_index
            choice.tool_call_index += 1
            choice.saw_tool_call = True
            calls.append(call)
            return
        if choice.partial is None or fc.get("name"):
            if choice.partial is not None:  # a new call starts: the previous one is complete
                calls.append({"index": choice.partial_index, "function": {"arguments": choice.partial.close()}})
            head = {k: v for k, v in fc.items() if k in ("name", "id")}
            first = tool_call_to_openai({**part, "functionCall": {**head, "args": {}}}, self.ctx)
            first["index"] = choice.partial_index = choice.tool_call_index
            choice.tool_call_index += 1
            choice.saw_tool_call = True
            choice.partial = ArgumentsWriter()
            calls.append(first)
        else:
            first = None
        text = choice.partial.feed(fc.get("partialArgs") or ())
        if not fc.get("willContinue"):
            text += choice.partial.close()
            choice.partial = None
        if first is not None:  # the call's first delta carries its first argument text too
            first["function"]["arguments"] = text
        elif text:
            calls.append({"index": choice.partial_index, "function": {"arguments": text}})

    def _finish_choice(
        self, choice: _Choice, delta: dict[str, Any], reason: str | None, logprobs: Any = None
    ) -> list[dict[str, Any]]:
        opts = self.ctx.options
        choice.finished = True
        closing = self._close_thoughts(choice)
        if closing:
            delta["content"] = delta.get("content", "") + closing
            choice.text.append(closing)
        if choice.partial is not None:
            tail = {"index": choice.partial_index, "function": {"arguments": choice.partial.close()}}
            delta.setdefault("tool_calls", []).append(tail)
            choice.partial = None
        # As OpenAI does, the finish reason travels on its own chunk after the last content:
        # the SDK's stream helper only closes the last tool call (`arguments.done`, parsed
        # arguments) when the finish reason arrives after that call's deltas.
        out = [self._chunk(choice, delta, logprobs=logprobs)] if delta or logprobs is not None else []
        closing_delta: dict[str, Any] = {}
        full_text = "".join(choice.text)
        if choice.text_signature:
            closing_delta["extra_content"] = signatures.to_extra_content(choice.text_signature)
            if full_text:
                self.ctx.signatures[signatures.text_key(full_text)] = choice.text_signature
        if choice.grounding_supports:
            grounding = {"groundingChunks": choice.grounding_chunks, "groundingSupports": choice.grounding_supports}
            annotations = annotations_to_openai(grounding, [full_text], [0])
            if annotations:
                closing_delta["annotations"] = annotations
        finish = gemini_finish_reason_to_openai(reason, choice.saw_tool_call)
        if choice.saw_tool_call and opts.legacy_functions and finish == "tool_calls":
            finish = "function_call"
        out.append(self._chunk(choice, closing_delta, finish))
        return out

    def latest_usage(self) -> Mapping[str, Any] | None:
        """Gemini's `usageMetadata` as far as the stream got (parses the one kept as bytes)."""
        self.usage = self._plain.usage(self.usage)
        return self.usage

    def finish_sse(self) -> bytes:
        """`finish()` framed, then `[DONE]`."""
        return b"".join([sse_data(c) for c in self.finish()]) + DONE

    def error_sse(self, exc: GatewayError) -> bytes:
        """The event of an error that ends the stream: `data: {"error": ...}` (no `[DONE]` after it)."""
        return error_event(exc)

    def finish(self) -> list[dict[str, Any]]:
        """Close every choice still open (Gemini sends nothing after its last chunk), then usage."""
        out: list[dict[str, Any]] = []
        self.latest_usage()
        if not self.choices:
            self._choice(0)
        for index in sorted(self.choices):
            choice = self.choices[index]
            if not choice.finished:
                out.extend(self._finish_choice(choice, {}, None))
        if self.ctx.options.include_usage:
            out.append({**self._base, "choices": [], "usage": usage_to_openai(self.usage)})
        return out


def sse_data(chunk: Mapping[str, Any]) -> bytes:
    """One SSE `data:` event."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def error_event(exc: GatewayError) -> bytes:
    return sse_data(exc.body())


class ChatStreamTranscoder(StreamTranscoder[ChatStreamTranslator]):
    """Gemini `streamGenerateContent?alt=sse` bytes -> OpenAI `chat.completion.chunk` SSE bytes."""

    __slots__ = ()


__all__ = ["DONE", "ChatStreamTranscoder", "ChatStreamTranslator", "error_event", "sse_data"]
