"""Gemini stream bytes -> the client's SSE bytes, for any stream translator. Pure.

`StreamTranscoder` takes the upstream's SSE bytes as they are read and gives
the SSE bytes to send: `open` for the reads before the stream started, `feed`
after, `finish` at the end, `usage()` at any time, also after the client left.
It owns SSE decoding (`upstream/sse.py`) and the order of the fast paths; the
translator it drives owns translation and framing (chat:
`ChatStreamTranslator`, Responses: `ResponsesStreamTranslator`):

* `feed_read(data)`: one whole read holding one plain text event, translated
  from its bytes (None if it is anything else);
* `feed_payload(payload)`: the same for one event's unparsed JSON;
* `feed_sse(event)`: a parsed event;
* `finish_sse()`: the closing events; `error_sse(exc)`: the event(s) of an
  error that ends the stream.

Endings that must not reach the client as a normal answer raise from the
translator, so the caller can still retry or answer with an HTTP error when
nothing was sent yet (`open` raises them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from app.errors import GatewayError
from app.upstream.errors import error_from_google
from app.upstream.sse import SSEDecoder, parse_payload


class StreamTranslator(Protocol):
    @property
    def ctx(self) -> Any: ...  # the answer's context; `.signatures` holds what to remember

    @property
    def usage(self) -> Mapping[str, Any] | None: ...

    def feed_read(self, data: bytes) -> bytes | None: ...

    def feed_payload(self, data: bytes, at: int = 0, last: bytes = b"}") -> bytes | None: ...

    def feed_sse(self, event: Mapping[str, Any]) -> bytes: ...

    def finish_sse(self) -> bytes: ...

    def error_sse(self, exc: GatewayError) -> bytes: ...

    def latest_usage(self) -> Mapping[str, Any] | None: ...


T = TypeVar("T", bound=StreamTranslator)


@dataclass(slots=True)
class Transcoded:
    """The SSE bytes to send for one upstream read, and the error that ended the stream (its event included)."""

    data: bytes
    error: GatewayError | None = None


class StreamTranscoder(Generic[T]):
    """Gemini `streamGenerateContent?alt=sse` bytes -> the SSE bytes of one client API."""

    __slots__ = ("translator", "decoder")

    def __init__(self, translator: T) -> None:
        self.translator = translator
        self.decoder = SSEDecoder()

    @property
    def ctx(self) -> Any:
        return self.translator.ctx

    def open(self, data: bytes) -> bytes | None:
        """A read before the stream started (b"": the body ended): None while no event is complete.

        Raises for a broken start (an error event, a blocked prompt, a malformed
        function call), so that the call can still be retried or answered with an
        HTTP error.
        """
        items = self.decoder.feed_payloads(data) if data else self.decoder.flush()
        if not items and data:
            return None
        out = self._events(items)
        if out.error is not None:
            raise out.error
        return out.data

    def feed(self, data: bytes) -> Transcoded:
        """One upstream read (b"": the body ended) -> what to send; an error ends the stream."""
        if data and self.decoder.idle():  # the common read: one whole event, often a plain text delta
            sse = self.translator.feed_read(data)
            if sse is not None:
                return Transcoded(sse)
        return self._events(self.decoder.feed_payloads(data) if data else self.decoder.flush())

    def _events(self, items: Sequence[bytes | dict[str, Any]]) -> Transcoded:
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
            return Transcoded(b"".join(out), exc)
        return Transcoded(b"".join(out))

    def finish(self) -> Transcoded:
        """The closing events (or the error event, if the last usage is malformed)."""
        try:
            return Transcoded(self.translator.finish_sse())
        except GatewayError as exc:
            return Transcoded(self.translator.error_sse(exc), exc)

    def usage(self) -> Mapping[str, Any] | None:
        """Gemini's usage as far as the stream got (also after the client left)."""
        try:
            return self.translator.latest_usage()
        except GatewayError:
            return self.translator.usage
