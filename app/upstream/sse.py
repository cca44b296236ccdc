"""Bytes of a Gemini `streamGenerateContent?alt=sse` body -> parsed events.

`SSEDecoder.feed(bytes)` returns the events completed by those bytes,
`flush()` whatever the end of the body completes. An event is the parsed JSON
object of one `data:` event (several `data:` lines are joined with `\\n`).
`feed_payloads(bytes)` is `feed` for a caller that can handle some events
without parsing them: the events in Google's own framing come back as their
unparsed JSON bytes (`parse_payload` parses one), the others parsed.

Google also reports a failure after the 200 in two other forms, both turned
into an `{"error": {...}}` event here (docs/gemini-facts.md#streaming): an unprefixed,
possibly pretty-printed JSON object spread over several lines (collected until
its braces balance, ignoring braces inside strings), and the JSON-array form
`[{"error": {...}}]`. Lines end at CR, LF or CRLF; a CR at the very end of a
chunk is held back until the next byte shows whether an LF follows, so the
result never depends on where the network split the body.
"""

from __future__ import annotations

from typing import Any

import orjson


def _malformed(detail: str) -> dict[str, Any]:
    return {"error": {"code": 502, "status": "BAD_GATEWAY", "message": f"Malformed event from upstream: {detail}"}}


def parse_payload(payload: bytes) -> dict[str, Any] | None:
    """The event of one `data:` payload (None for `[DONE]` and blanks; an error event when malformed)."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        if payload == b"[DONE]" or not payload.strip():
            return None
        return _malformed(payload[:200].decode("utf-8", "replace"))
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else {"candidates": []} if not value else value[0]
    if not isinstance(value, dict):
        return _malformed(payload[:200].decode("utf-8", "replace"))
    return value


def _brace_delta(line: bytes, in_string: bool) -> tuple[int, bool]:
    depth = 0
    escaped = False
    for byte in line:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
    return depth, in_string


class SSEDecoder:
    __slots__ = ("_buf", "_data", "_raw", "_depth", "_in_string")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._raw: list[bytes] | None = None  # an unprefixed JSON object being collected
        self._depth = 0
        self._in_string = False

    def idle(self) -> bool:
        """Nothing buffered: the next bytes start a new event."""
        return not self._buf and not self._data and self._raw is None

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for item in self.feed_payloads(chunk):
            if isinstance(item, bytes):
                event = parse_payload(item)
                if event is not None:
                    events.append(event)
            else:
                events.append(item)
        return events

    def feed_payloads(self, chunk: bytes) -> list[bytes | dict[str, Any]]:
        buf = self._buf + chunk if self._buf else chunk
        if not buf:
            return []
        if not self._data and self._raw is None and buf.startswith(b"data: "):
            return self._feed_fast(buf)
        return self._feed_lines(buf)  # type: ignore[return-value]

    def _feed_fast(self, buf: bytes) -> list[bytes | dict[str, Any]]:
        """Google's own framing, `data: <json>\r\n\r\n`: one split, no line walking.

        A piece with any other line in it goes through the general parser, so
        the result is the same as `_feed_lines` would give.
        """
        pieces = buf.split(b"\r\n\r\n")
        rest = pieces.pop()
        events: list[bytes | dict[str, Any]] = []
        # The usual case: the separators are the only line breaks, so every piece is one line.
        single_lines = buf.count(b"\n") == buf.count(b"\r") == 2 * len(pieces)
        for piece in pieces:
            if (
                self._raw is None
                and piece.startswith(b"data: ")
                and (single_lines or (b"\n" not in piece and b"\r" not in piece))
            ):
                events.append(piece[6:])
            else:
                events.extend(self._feed_lines(piece + b"\r\n\r\n"))
        if b"\n" in rest or b"\r" in rest:  # other framing (`\n\n`, `\r\r`) or a separator cut in two
            events.extend(self._feed_lines(rest))
        else:
            self._buf = rest  # set after `_feed_lines`, which resets the buffer
        return events

    def _feed_lines(self, buf: bytes) -> list[dict[str, Any]]:
        lines = buf.splitlines(keepends=True)
        last = lines[-1]
        if last.endswith(b"\n"):
            self._buf = b""
        else:  # an unfinished line, or a CR that may be the first half of CRLF
            self._buf = last
            lines.pop()
        events: list[dict[str, Any]] = []
        for line in lines:
            self._line(line.rstrip(b"\r\n"), events)
        return events

    def flush(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._buf:
            self._line(self._buf.rstrip(b"\r\n"), events)
            self._buf = b""
        if self._raw is not None:
            event = parse_payload(b"\n".join(self._raw))
            self._raw = None
            if event is not None:
                events.append(event)
        self._dispatch(events)
        return events

    def _dispatch(self, events: list[dict[str, Any]]) -> None:
        if self._data:
            event = parse_payload(self._data[0] if len(self._data) == 1 else b"\n".join(self._data))
            self._data = []
            if event is not None:
                events.append(event)

    def _line(self, line: bytes, events: list[dict[str, Any]]) -> None:
        if self._raw is not None:
            self._raw.append(line)
            delta, self._in_string = _brace_delta(line, self._in_string)
            self._depth += delta
            if self._depth <= 0:
                event = parse_payload(b"\n".join(self._raw))
                self._raw = None
                if event is not None:
                    events.append(event)
            return
        if not line:
            self._dispatch(events)
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value[:1] == b" " else value)
        elif line[:1] == b":" or line.startswith((b"event:", b"id:", b"retry:")):
            return
        elif line.lstrip()[:1] in (b"{", b"["):
            self._dispatch(events)
            self._raw = [line]
            self._depth, self._in_string = _brace_delta(line, False)
            if self._depth <= 0:
                event = parse_payload(line)
                self._raw = None
                if event is not None:
                    events.append(event)
        # anything else (a stray field name, a closing `]` of the array form) is ignored, as SSE says
