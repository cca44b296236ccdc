"""Gemini stream events -> the Responses API's typed `response.*` SSE events. Pure.

`ResponsesStreamTranslator` is the translator `StreamTranscoder`
(translate/transcoder.py) drives for `POST /v1/responses` with `stream: true`.
The events come from `OutputBuilder` (responses_response.py, the one state
machine of streamed and whole answers), in OpenAI's order with consecutive
`sequence_number`s: `response.created`, `response.in_progress`, then per
output item `output_item.added`, its content events and `output_item.done`,
then `response.completed` / `response.incomplete` with the whole Response. A
failure after the start is `response.failed` then an `error` event (whose
`error` member makes the openai SDK raise). Each is framed
`event: <type>\\ndata: <json>\\n\\n`; there is no `[DONE]`.

Text deltas, most of a stream, take the byte fast path: a plain text event
(`PlainText.match`, plain_text.py) becomes an `output_text.delta` event by
joining the text's JSON string literal and the sequence number with the
pieces of the event the parsed path would send (`text_delta`), so
the bytes are the same either way, without parsing or encoding the event
(bench/README.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from app.errors import GatewayError
from app.translate.plain_text import PlainText
from app.translate.responses_response import (
    TEXT_DELTA,
    OutputBuilder,
    ResponsesContext,
    _Message,
    stream_event,
    text_delta,
)


def sse_event(event: Mapping[str, Any]) -> bytes:
    """One typed SSE event: `event: <type>` then its JSON."""
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def delta_parts(item_id: str, output_index: int) -> tuple[bytes, bytes, bytes]:
    """The SSE bytes of a text delta of one message, cut around its two variable values: an event is
    `head + sequence number + mid + text's literal + tail`."""
    sse = sse_event(stream_event(TEXT_DELTA, 0, text_delta(item_id, output_index, "", [])))
    head, seq, rest = sse.partition(b'"sequence_number":0')
    mid, text, tail = rest.partition(b'"delta":""')
    assert seq and text, sse
    return head + b'"sequence_number":', mid + b'"delta":', tail


# Sequence numbers as bytes: a run's events are joined from ready pieces (a bytes format per event cost ~2.5 times
# as much); the numbers of longer streams are made as needed.
_SEQ = tuple(b"%d" % n for n in range(2048))


def _numbers(first: int, n: int) -> Sequence[bytes]:
    end = first + n
    return _SEQ[first:end] if end <= len(_SEQ) else [b"%d" % i for i in range(first, end)]


def _parts_of(m: _Message) -> tuple[bytes, bytes, bytes]:
    """The message's text delta pieces (`delta_parts`), made on its first plain text delta."""
    m.delta_parts = delta_parts(m.id, m.index)
    return m.delta_parts


class ResponsesStreamTranslator:
    def __init__(self, ctx: ResponsesContext) -> None:
        self.builder = OutputBuilder(ctx)
        self._plain = PlainText()

    @property
    def ctx(self) -> ResponsesContext:
        return self.builder.ctx

    @property
    def usage(self) -> Mapping[str, Any] | None:
        return self.builder.usage

    def _drain(self) -> bytes:
        events, self.builder.events = self.builder.events, []
        return b"".join([sse_event(e) for e in events])

    def feed_sse(self, event: Mapping[str, Any]) -> bytes:
        if "usageMetadata" in event:
            self._plain.usage_payload = None  # (this event's usage is the newest)
        self.builder.feed(event)
        return self._drain()

    def feed_payload(self, data: bytes, at: int = 0, last: bytes = b"}") -> bytes | None:
        """The SSE bytes of a plain text event from its unparsed JSON (`data[at:]`), once a message is open; else None."""
        b = self.builder
        m = b.message
        if m is None:
            return None
        found = self._plain.match(data, at, last)
        if found is None:
            return None
        literal, text = found
        if not text:
            return b""
        head, mid, tail = m.delta_parts or _parts_of(m)
        m.texts.append(text)  # (`length` counts only for whole answers)
        seq = b.seq
        b.seq = seq + 1
        return b"".join((head, _SEQ[seq] if seq < len(_SEQ) else b"%d" % seq, mid, literal, tail))

    def feed_run(self, data: bytes) -> tuple[bytes, int]:
        """The events of the plain text events at the start of one read of whole events in Google's framing, and
        where they end (0: none taken; `PlainText.run`). The same bytes as `feed_payload` per event."""
        b = self.builder
        m = b.message
        if m is None:
            return b"", 0
        literals, texts, end = self._plain.run(data)
        if not literals:
            return b"", end
        head, mid, tail = m.delta_parts or _parts_of(m)
        m.texts += texts
        seq = b.seq
        n = len(literals)
        b.seq = seq + n
        parts = [tail + head] * (4 * n + 1)  # head, then per event: number, mid, literal, tail + next head
        parts[0] = head
        parts[1::4] = _numbers(seq, n)
        parts[2::4] = [mid] * n
        parts[3::4] = literals
        parts[-1] = tail
        return b"".join(parts), end

    def latest_usage(self) -> Mapping[str, Any] | None:
        """Gemini's `usageMetadata` as far as the stream got (parses the one kept as bytes)."""
        self.builder.usage = self._plain.usage(self.builder.usage)
        return self.builder.usage

    def finish_sse(self) -> bytes:
        self.latest_usage()
        self.builder.finish()
        return self._drain()

    def error_sse(self, exc: GatewayError) -> bytes:
        try:  # `response.failed` reports the usage as far as the stream got, the one kept as bytes included
            self.latest_usage()
        except GatewayError:  # (that usage was malformed: the last one parsed)
            pass
        self.builder.fail(exc)
        return self._drain()
