"""Upstream streams of plain text deltas, in every wire spelling we know: what the byte fast path tests of
both stream translators (chat: test_tr_stream_plain_text.py, Responses: test_tr_responses_stream_bytes.py) feed.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# (item separator, key separator) of Google (`": "`, `,"`), orjson / our fakes, Python's json.
SPELLINGS = {"google": (",", ": "), "compact": (",", ":"), "python": (", ", ": ")}
USAGE = {"promptTokenCount": 8, "totalTokenCount": 12, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}]}


def text_event(text: str, *, index: bool = True, usage: dict[str, Any] | None = USAGE, **extra: Any) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if index:
        cand["index"] = 0
    event: dict[str, Any] = {"candidates": [cand]}
    if usage is not None:
        event["usageMetadata"] = usage
    event.update({"modelVersion": "gemini-2.5-flash", "responseId": "r1"}, **extra)
    return event


def dumps(event: Any, spelling: str = "google", ascii_only: bool = False) -> bytes:
    return json.dumps(event, separators=SPELLINGS[spelling], ensure_ascii=ascii_only).encode()


def framed(payload: bytes) -> bytes:
    """One event as one upstream read, in Google's framing."""
    return b"data: " + payload + b"\r\n\r\n"


def read_whole(translator: Any, data: bytes) -> bytes | None:
    """The byte path's answer for a whole upstream read of framed events (`feed_run`, as `StreamTranscoder.feed` asks
    it when its decoder holds nothing), or None when it does not take all of it."""
    sse, end = translator.feed_run(data)
    return sse if end == len(data) else None  # type: ignore[no-any-return]


def count_byte_path(translator: Any) -> list[int]:
    """Wrap both byte paths of `translator`; the list returned grows by the events each call of either took."""
    taken: list[int] = []
    run, payload = translator.feed_run, translator.feed_payload

    def feed_run(data: bytes) -> tuple[bytes, int]:
        sse, end = run(data)
        taken.append(data.count(b"data: ", 0, end))
        return sse, end  # type: ignore[no-any-return]

    def feed_payload(data: bytes, at: int = 0, last: bytes = b"}") -> bytes | None:
        sse = payload(data, at, last)
        taken.append(sse is not None)
        return sse  # type: ignore[no-any-return]

    translator.feed_run, translator.feed_payload = feed_run, feed_payload
    return taken


def feed_both(fast: Any, slow: Any, payload: bytes) -> tuple[bytes, bool]:
    """One upstream event through `fast`'s byte path (the parsed path where it declines) and `slow`'s parsed path:
    (the SSE bytes, whether the byte path took it); asserts both send the same bytes."""
    sse = read_whole(fast, framed(payload))
    took = sse is not None
    if sse is None:
        sse = fast.feed_sse(json.loads(payload))
    assert sse == slow.feed_sse(json.loads(payload)), payload
    return sse, took


# Texts with what a JSON literal must escape, what it may escape, and a piece of the event's own tail.
texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(['"', "\\", '"}],"role": "model"},"index": 0}]', "\n", "\u2028", "é", "\U0001f600", "<a&b>", "x",
                              "/", "\x7f", "\t"]),
             max_size=8).map("".join),
)  # fmt: skip

# Plain deltas whose literals are spelled in several ways (escapes orjson would not write among them).
SAMPLE_TEXTS = ["Hello", ' "quoted" ', "back\\slash\\", "line\nbreak", "", "naïve ☃", "end\\", "a/b <c> & \u2028"]
