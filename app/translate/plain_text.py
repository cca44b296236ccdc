"""Plain text delta events of a Gemini stream, recognised in their bytes. Pure.

Most events of a stream are one more piece of text for candidate 0. The
stream translators (chat: `chat_stream.py`, Responses: `responses_stream.py`)
copy such a text's JSON string literal into a prepared output template
without parsing the event or encoding anything: parsing and re-encoding cost
more than the rest of the gateway's work per event (bench/README.md). The
literal is the one the parsed path would write: without escapes a JSON string
is spelled one way only, and a literal holding one is written again from its
text by orjson, so either path sends the same bytes.

The recognition is one regular expression, exact: the event must be
`{"candidates": [{"content": {"parts": [{"text": <string>}], "role": "model"}(, "index": 0)}]`
in one of the spacings met on the wire, the literal must be exactly one valid
JSON string (checked by decoding it, which also gives the visible text), and
what follows the candidates must hold no escape, no line break, no `error` or
`promptFeedback` member and, if any usage, an object as the first member.
`PlainText.match` recognises one payload; `PlainText.run` the plain events at
the start of a read of several (streams sent back to back arrive so: one
regex match per event, the other checks and the decoding once per read).
Anything else is declined and goes through the parser, which gives the same
result for every event that is valid JSON without repeated member names. The
usage is kept as bytes and parsed once, when asked for (`usage`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from app.errors import UpstreamError


def _plain_text_shapes() -> tuple[tuple[bytes, bytes, bytes], ...]:
    """How a plain text delta of candidate 0 looks as JSON text, in the spacings met on the wire.

    Each shape: the bytes up to the opening quote of the text, the bytes from
    its closing quote to the end of the candidates array, and the key and
    opening brace of a usage object right after that. Google writes `": "` after keys and `,"`
    between members; orjson and the fakes write no spaces; Python's json module
    writes `": "` and `, "`. Each with and without the candidate's `"index": 0`.
    """
    shapes = []
    for colon, comma in ((b": ", b","), (b":", b","), (b": ", b", ")):
        head = b'{"candidates"%s[{"content"%s{"parts"%s[{"text"%s"' % (colon, colon, colon, colon)
        role = b'"}]%s"role"%s"model"}' % (comma, colon)
        usage = b'%s"usageMetadata"%s{' % (comma, colon)
        shapes.append((head, role + b'%s"index"%s0}]' % (comma, colon), usage))
        shapes.append((head, role + b"}]", usage))
    return tuple(shapes)


PLAIN_TEXT_SHAPES = _plain_text_shapes()
EVENT_END = b"}\r\n\r\n"  # the end of a read holding one event in Google's framing: its object, then the separator


def _framed_shapes() -> tuple[re.Pattern[bytes], ...]:
    """`PLAIN_TEXT_SHAPES` as regular expressions matching the start of one event in Google's framing (`run`).

    Group 1: the text's literal, one whole JSON string (its escapes are checked by decoding it); group 2, when a
    usage object is the first member after the candidates: the rest of the event from there, but its closing brace.
    The rest of the event has no line feed and ends at its separator. (`.*` is one of the regex engine's tight loops;
    a character class is not, and cost more than the rest of an event's work. Each `find` with bounds cost ~1,500
    instructions, most of it parsing its arguments: what else must be checked is checked once per read,
    `PlainText.run`.)
    """
    literal = rb'("[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*")'
    out = []
    for head, tail, usage_open in PLAIN_TEXT_SHAPES:
        out.append(re.compile(b"data: " + re.escape(head[:-1]) + literal + re.escape(tail[1:])
                              + b"(?:(" + re.escape(usage_open) + rb".*)|.*)\}\r\n\r\n"))
    return tuple(out)


FRAMED_SHAPES = _framed_shapes()
_USAGE = b'"usageMetadata"'


class PlainText:
    """The recogniser of one stream: remembers the spelling last met, and the newest usage still unparsed."""

    __slots__ = ("shape", "framed", "usage_payload")

    def __init__(self) -> None:
        self.shape = PLAIN_TEXT_SHAPES[0]
        self.framed = FRAMED_SHAPES[0]  # `run`'s regex of the spelling last met
        self.usage_payload: tuple[bytes, int] | None = None  # newer usage than the parsed one, as bytes

    def match(self, data: bytes, at: int, last: bytes) -> tuple[bytes, str] | None:
        """(the text's JSON string literal as orjson writes it, the text) of a plain text event at `data[at]`, else None.

        `data` must end with `last` (`b"}"` for a bare payload, `EVENT_END` for a
        whole `data:` line with its separator).
        """
        if not data.endswith(last):
            return None
        head, tail, usage_open = self.shape  # the shape of the stream's last plain event first
        start = at + len(head) - 1  # the opening quote
        end = data.find(tail, start + 1) if data.startswith(head, at) else -1
        if end < 0:
            for head, tail, usage_open in PLAIN_TEXT_SHAPES:
                if data.startswith(head, at):
                    start = at + len(head) - 1
                    end = data.find(tail, start + 1)
                    if end > 0:
                        self.shape = (head, tail, usage_open)
                        break
            else:
                return None
        literal = data[start : end + 1]
        try:
            text = orjson.loads(literal)  # one whole, valid string (no unescaped quote, control character, bad UTF-8)
        except orjson.JSONDecodeError:
            return None
        rest = end + len(tail)
        escape = data.find(b"\\", start)
        if 0 <= escape < end:  # the literal is spelled with escapes (`\n`, `\u00e9`, `\/`...): written as orjson writes it
            literal = orjson.dumps(text)
            escape = data.find(b"\\", rest)
        if escape >= 0 or data.find(b'"error"', rest) >= 0 or data.find(b'"promptFeedback"', rest) >= 0:
            return None  # (without escapes, a member name can only be spelled one way)
        if data.startswith(usage_open, rest):
            self.usage_payload = (data, rest)
        elif data.find(b'"usageMetadata"', rest) >= 0:
            return None  # `null` (the parsed path keeps the previous usage), or members in an unusual order
        return literal, text

    def run(self, data: bytes) -> tuple[list[bytes], list[str], int]:
        """The plain text events at the start of one read, in Google's framing, up to the first other one: (their
        literals as orjson writes them, their texts, where they end). Events of an empty text are taken and left out.

        The events are found by one `split` of the read with the spelling's pattern, in C: a read of plain events
        (or of plain events and, last, others) is the groups of its matches with nothing between them. A read
        where something else comes between two plain events, or where an event has no usage first after its
        candidates, is matched event by event (`_events`). Some checks are made once for the whole run rather
        than per event: its only line breaks are the events' separators, its only escapes are in the texts'
        literals, it holds no `"error"` or `"promptFeedback"` member, and all its literals are valid (one
        decoding). Declined: ([], [], 0).
        """
        parts = self.framed.split(data)
        if parts[0]:  # the first event is not plain in the spelling last met: another spelling, or declined
            for pattern in FRAMED_SHAPES:
                if pattern.match(data) is not None:
                    self.framed = pattern
                    parts = pattern.split(data)
                    break
            else:
                return [], [], 0
        literals: list[bytes] = parts[1::3]
        usages: list[bytes | None] = parts[2::3]
        gaps = parts[3::3]  # what follows each match: nothing but after the last of the run
        if not literals:
            return [], [], 0
        if all(usages) and not any(gaps[:-1]):  # (a usage group is never empty)
            # The events are their fixed spellings, their literals and their usage groups (to the closing brace):
            # a line break, an escape, an `"error"` or a `"promptFeedback"` outside the literals is in those groups.
            rest = b"".join(usages)  # type: ignore[arg-type]
            if (rest.find(b"\r") >= 0 or rest.find(b"\\") >= 0 or rest.find(b'"error"') >= 0
                    or rest.find(b'"promptFeedback"') >= 0):
                return [], [], 0
            usage, end = usages[-1], len(data) - len(gaps[-1])
        else:
            literals, usage, end = self._events(data)
            if not end or not self._clean(data, end, literals):
                return [], [], 0
        joined = b",".join(literals)
        try:
            texts: list[str] = orjson.loads(b"[" + joined + b"]")
        except orjson.JSONDecodeError:
            return [], [], 0
        if joined.find(b"\\") >= 0:
            literals = [orjson.dumps(t) if lit.find(b"\\") >= 0 else lit for lit, t in zip(literals, texts, strict=True)]
        if "" in texts:
            kept = [(lit, t) for lit, t in zip(literals, texts, strict=True) if t]
            literals, texts = [lit for lit, _ in kept], [t for _, t in kept]
        if usage is not None:
            self.usage_payload = (usage + b"}", 0)
        return literals, texts, end

    @staticmethod
    def _clean(data: bytes, end: int, literals: list[bytes]) -> bool:
        """No line break but the separators, no escape but in the literals, no `"error"` or `"promptFeedback"` in
        `data[:end]`, a run of `len(literals)` events (`_events`). (A text's literal can hold `"error"` only just
        before its closing quote, `\\"error"`: such a run is merely declined.)"""
        find = data.find
        return not (data.count(b"\r", 0, end) != 2 * len(literals)
                    or (find(b"\\", 0, end) >= 0 and data.count(b"\\", 0, end) != b"".join(literals).count(b"\\"))
                    or find(b'"error"', 0, end) >= 0 or find(b'"promptFeedback"', 0, end) >= 0)

    def _events(self, data: bytes) -> tuple[list[bytes], bytes | None, int]:
        """`run`'s events matched one by one: (the literals, the newest usage's bytes but its closing brace, where
        they end). An event without a usage first, but with one later, ends the run before it."""
        match = self.framed.match
        m = match(data)
        literals: list[bytes] = []
        usage: bytes | None = None
        end = 0
        while m is not None:
            literal, found = m.group(1, 2)
            stop = m.end()
            if found is not None:
                usage = found
            elif data.find(_USAGE, m.end(1), stop) >= 0:
                break
            literals.append(literal)
            end = stop
            m = match(data, end)
        return literals, usage, end

    def usage(self, parsed: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """The newest usage: the one kept as bytes (parsed now, once) if newer than `parsed`."""
        if self.usage_payload is None:
            return parsed
        payload, rest = self.usage_payload
        self.usage_payload = None
        try:
            usage: Mapping[str, Any] = orjson.loads(b"{" + payload[rest + 1 :].rstrip())["usageMetadata"]
        except orjson.JSONDecodeError as exc:  # what parsing the event would have found
            message = f"Malformed event from upstream: {payload[:200].decode('utf-8', 'replace')}"
            raise UpstreamError(message, google_code=502, status=502, type="server_error") from exc
        return usage
