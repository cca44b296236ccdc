"""Gemini stream bytes -> the client's SSE bytes, for any stream translator. Pure.

`StreamTranscoder` takes the upstream's SSE bytes as they are read and gives
the SSE bytes to send: `open` for the reads before the stream started, `feed`
after, `finish` at the end (`error`: the error that ended the stream, its
event sent), `usage()` at any time, also after the client left.
It owns SSE decoding (`upstream/sse.py`) and the order of the fast paths; the
translator it drives owns translation and framing (chat:
`ChatStreamTranslator`, Responses: `ResponsesStreamTranslator`):

* `feed_payload(data, at, last)`: one plain text event translated from its
  unparsed JSON (None if it is anything else): a whole read holding exactly
  one event in Google's framing (the transcoder checks the framing), or one
  payload the SSE decoder cut out;
* `feed_run(data)`: the plain text events a read of several starts with (the
  decoder holding nothing), translated from their unparsed bytes, and where
  they end; the rest of the read goes through the decoder;
* `feed_sse(event)`: a parsed event;
* `finish_sse()`: the closing events; `error_sse(exc)`: the event(s) of an
  error that ends the stream.

Endings that must not reach the client as a normal answer raise from the
translator, so the caller can still retry or answer with an HTTP error when
nothing was sent yet (`open` raises them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from app.errors import GatewayError
from app.translate.plain_text import EVENT_END
from app.upstream.errors import error_from_google
from app.upstream.sse import SSEDecoder, parse_payload


class StreamTranslator(Protocol):
    @property
    def ctx(self) -> Any: ...  # the answer's context; `.signatures` holds what to remember

    @property
    def usage(self) -> Mapping[str, Any] | None: ...

    def feed_payload(self, data: bytes, at: int = 0, last: bytes = b"}") -> bytes | None: ...

    def feed_run(self, data: bytes) -> tuple[bytes, int]: ...

    def feed_sse(self, event: Mapping[str, Any]) -> bytes: ...

    def finish_sse(self) -> bytes: ...

    def error_sse(self, exc: GatewayError) -> bytes: ...

    def latest_usage(self) -> Mapping[str, Any] | None: ...


T = TypeVar("T", bound=StreamTranslator)


class StreamTranscoder(Generic[T]):
    """Gemini `streamGenerateContent?alt=sse` bytes -> the SSE bytes of one client API."""

    __slots__ = ("translator", "decoder", "error", "_idle")

    def __init__(self, translator: T) -> None:
        self.translator = translator
        self.decoder = SSEDecoder()
        self.error: GatewayError | None = None  # the error that ended the stream (its event was sent)
        self._idle = True  # `decoder.idle()`, kept up to date: the next read starts a new event

    @property
    def ctx(self) -> Any:
        return self.translator.ctx

    def open(self, data: bytes) -> bytes | None:
        """A read before the stream started (b"": the body ended): None while no event is complete.

        Raises for a broken start (an error event, a blocked prompt, a malformed
        function call), so that the call can still be retried or answered with an
        HTTP error. A read of several events: the first starts the stream, the
        others take `feed`'s paths (a stream's first read holds most of a short answer).
        """
        while self._idle and data.startswith(b"data: "):
            cut = data.find(b"\r\n\r\n") + 4  # the end of the first event, in Google's framing
            if not 4 < cut < len(data):
                break
            first = self._open(data[:cut])
            data = data[cut:]
            if first is not None:  # started: the rest as any later read
                rest = self.feed(data)
                if self.error is not None:
                    raise self.error
                return first + rest
        return self._open(data)

    def _open(self, data: bytes) -> bytes | None:
        items = self.decoder.feed_payloads(data) if data else self.decoder.flush()
        self._idle = self.decoder.idle()
        if not items and data:
            return None
        out = self._events(items)
        if self.error is not None:
            raise self.error
        return out

    def feed(self, data: bytes) -> bytes:
        """One upstream read (b"": the body ended) -> what to send; an error ends the stream (`error` is set).

        (No result object per read: a stream makes one call per upstream event.)
        """
        taken = b""  # what the run path sent for the plain text events the read starts with
        if self._idle and data.startswith(b"data: "):  # the common read: whole events, mostly plain text deltas
            n = len(data) - 4  # `data: <json>\r\n\r\n` and no other line break (a read is usually one event
            if data.find(b"\n") == n + 1 and data.find(b"\r") == n:  # once the model paces its output)
                sse = self.translator.feed_payload(data, 6, EVENT_END)
                if sse is not None:
                    return sse
            else:  # several events (sent back to back): as many plain text events as the read starts with
                taken, end = self.translator.feed_run(data)
                if end == len(data):
                    return taken
                if end:
                    data = data[end:]  # the rest goes through the decoder
        out = self._events(self.decoder.feed_payloads(data) if data else self.decoder.flush())
        self._idle = self.decoder.idle()
        return taken + out if taken else out

    def _events(self, items: Sequence[bytes | dict[str, Any]]) -> bytes:
        out: list[bytes] = []
        translator = self.translator
        plain = translator.feed_payload
        try:
            for item in items:
                if type(item) is bytes:  # an event in Google's framing, not parsed yet
                    sse = plain(item)
                    if sse is not None:
                        out.append(sse)
                        continue
                    parsed = parse_payload(item)
                    if parsed is None:
                        continue
                    event: Mapping[str, Any] = parsed
                else:
                    event = item  # type: ignore[assignment]
                if "error" in event:
                    raise error_from_google(200, event)
                out.append(translator.feed_sse(event))
        except GatewayError as exc:
            out.append(translator.error_sse(exc))
            self.error = exc
        return b"".join(out)

    def finish(self) -> bytes:
        """The closing events (or the error event, if the last usage is malformed: `error` is set)."""
        try:
            return self.translator.finish_sse()
        except GatewayError as exc:
            self.error = exc
            return self.translator.error_sse(exc)

    def usage(self) -> Mapping[str, Any] | None:
        """Gemini's usage as far as the stream got (also after the client left)."""
        try:
            return self.translator.latest_usage()
        except GatewayError:
            return self.translator.usage
