"""The Responses stream translator's byte path for plain text deltas (`feed_payload`).

Most events of a stream are one more piece of text: `ResponsesStreamTranslator`
recognises them in their bytes (`PlainText.match`, shared with chat) and joins
the text's literal and the sequence number with the pieces of an `output_text.delta`
event. Properties: the same upstream stream gives the same bytes, event by
event and at the end (`response.completed` with the whole text, stored
signatures), whether a delta takes that path or the parsed one (`feed_sse`);
the path is really taken for the plain deltas of every spelling; it leaves the
rest (the first delta, anything after a function call, thoughts) to the
parsed path. (Which events it declines is the recogniser's, tested with
chat's translator in test_tr_stream_plain_text.py.)
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.translate.responses_request import ResponsesOptions
from app.translate.responses_response import ResponsesContext
from app.translate.responses_stream import ResponsesStreamTranslator
from app.translate.transcoder import StreamTranscoder

from .plain_text_support import (
    SAMPLE_TEXTS,
    SPELLINGS,
    USAGE,
    count_byte_path,
    dumps,
    feed_both,
    framed,
    read_whole,
    text_event,
    texts,
)


def translator(**options: Any) -> ResponsesStreamTranslator:
    """A translator with deterministic ids (two of them made alike give the same ids)."""
    ids = itertools.count(1)
    ctx = ResponsesContext(ResponsesOptions(model="m", **options), "resp_t", 1, lambda prefix: f"{prefix}_{next(ids)}",
                           lambda: f"call_{next(ids)}", lambda: 2)  # fmt: skip
    return ResponsesStreamTranslator(ctx)


def both_ways(first: dict[str, Any], payloads: list[bytes], **options: Any) -> tuple[bytes, int]:
    """(the stream's bytes, events the byte path took); asserts the parsed path sends the same bytes, event by event."""
    fast, slow = translator(**options), translator(**options)
    out = [fast.feed_sse(first)]
    assert out[0] == slow.feed_sse(first)
    taken = 0
    for payload in payloads:
        sse, took = feed_both(fast, slow, payload)
        taken += took
        out.append(sse)
    out.append(fast.finish_sse())
    assert out[-1] == slow.finish_sse()
    assert fast.ctx.signatures == slow.ctx.signatures
    return b"".join(out), taken


def sent_text(data: bytes) -> str:
    """The text of the stream's completed message."""
    blocks = [block.split("\n", 1) for block in data.decode().split("\n\n") if block]
    events = {kind: json.loads(line[6:]) for kind, line in blocks}
    return str(events["event: response.output_text.done"]["text"])


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(texts, min_size=1, max_size=5), spelling=st.sampled_from(sorted(SPELLINGS)),
       ascii_only=st.booleans(), index=st.booleans(), with_usage=st.booleans())  # fmt: skip
def test_the_byte_path_sends_what_the_parsed_path_sends(
    pieces: list[str], spelling: str, ascii_only: bool, index: bool, with_usage: bool
) -> None:
    usage = USAGE if with_usage else None
    payloads = [dumps(text_event(t, index=index, usage=usage), spelling, ascii_only) for t in pieces]
    data, _ = both_ways(text_event("Hi"), payloads)
    assert sent_text(data) == "Hi" + "".join(pieces)


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize("ascii_only", [True, False])
def test_plain_deltas_take_the_byte_path_in_every_spelling(spelling: str, index: bool, ascii_only: bool) -> None:
    payloads = [dumps(text_event(t, index=index), spelling, ascii_only) for t in SAMPLE_TEXTS]
    data, taken = both_ways(text_event("Hi"), payloads)
    assert taken == len(SAMPLE_TEXTS)
    assert sent_text(data) == "Hi" + "".join(SAMPLE_TEXTS)


def test_the_first_delta_opens_the_message_on_the_parsed_path() -> None:
    fresh = translator()
    assert read_whole(fresh, framed(dumps(text_event("Hi")))) is None  # (response.created, the message item: parsed)


def call_event(name: str) -> dict[str, Any]:
    call = {"functionCall": {"name": name, "args": {"q": "x"}}, "thoughtSignature": "c2ln"}
    return {"candidates": [{"content": {"parts": [call], "role": "model"}, "index": 0}]}


def thought_event(text: str) -> dict[str, Any]:
    return {"candidates": [{"content": {"parts": [{"text": text, "thought": True}], "role": "model"}, "index": 0}]}


def finish_event() -> dict[str, Any]:
    return {"candidates": [{"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {**USAGE, "candidatesTokenCount": 4, "totalTokenCount": 16}}  # fmt: skip


MIXED = [thought_event("Let me think"), text_event("The answer"), text_event(" is"), call_event("look_up"),
         text_event("Then"), text_event(" more\n"), thought_event("again"), text_event("end"), finish_event()]  # fmt: skip


@pytest.mark.parametrize("per_read", [1, 2, 4, 100])
def test_a_mixed_stream_read_in_any_grouping_sends_the_parsed_paths_bytes(per_read: int) -> None:
    """Thoughts, text, a call, text again, in reads of one or several events (`feed_run`, `feed_payload`)."""
    options = {"include_thoughts": True, "encrypted_reasoning": True}
    events = [framed(dumps(e, "google")) for e in MIXED]
    transcoder = StreamTranscoder(translator(**options))
    taken = count_byte_path(transcoder.translator)
    out = []
    for i in range(0, len(events), per_read):
        out.append(transcoder.feed(b"".join(events[i : i + per_read])))
        assert transcoder.error is None
    out.append(transcoder.feed(b""))
    out.append(transcoder.finish())
    parsed = translator(**options)
    expected = b"".join([parsed.feed_sse(e) for e in MIXED]) + parsed.finish_sse()
    assert b"".join(out) == expected
    assert transcoder.ctx.signatures == parsed.ctx.signatures
    assert transcoder.usage() == parsed.usage
    assert sum(taken) == 2  # " is" and " more\n": the deltas of an open message (the others open one)


def test_a_failed_stream_reports_the_usage_its_byte_path_events_carried() -> None:
    """`response.failed` holds the newest usage, also when it came in a plain event's bytes (kept unparsed)."""
    def event(text: str, prompt: int) -> bytes:
        return framed(dumps(text_event(text, usage={"promptTokenCount": prompt, "totalTokenCount": prompt})))

    error = framed(b'{"error": {"code": 500, "message": "boom", "status": "INTERNAL"}}')
    sent = []
    for byte_paths in (True, False):
        transcoder = StreamTranscoder(translator())
        if not byte_paths:  # the parsed path alone: the reference
            transcoder.translator.feed_run, transcoder.translator.feed_payload = (lambda d: (b"", 0)), (lambda *a: None)
        out = transcoder.open(event("A", 5)) or b""
        out += transcoder.feed(event("B", 9) + event("C", 11)) + transcoder.feed(error)
        failed = next(json.loads(line[6:]) for line in out.split(b"\n") if line.startswith(b'data: {"type":"response.failed"'))
        sent.append(failed["response"]["usage"]["input_tokens"])
    assert sent == [11, 11]


@pytest.mark.parametrize("per_read", [1, 700])
def test_a_long_stream_numbers_its_deltas_past_the_ready_numbers(per_read: int) -> None:
    """Sequence numbers come from a table of ready bytes up to 2048, made as needed after: a stream of 3000 deltas
    read one event or 700 events at a time (a run across the table's end) sends the parsed path's bytes."""
    pieces = [text_event(f" w{i}") for i in range(3000)]
    events = [framed(dumps(e)) for e in pieces]
    transcoder = StreamTranscoder(translator())
    taken = count_byte_path(transcoder.translator)
    out = [transcoder.open(events[0]) or b""]
    for i in range(1, len(events), per_read):
        out.append(transcoder.feed(b"".join(events[i : i + per_read])))
    out.append(transcoder.feed(b"") + transcoder.finish())
    parsed = translator()
    expected = b"".join([parsed.feed_sse(e) for e in pieces]) + parsed.finish_sse()
    assert b"".join(out) == expected
    assert sum(taken) == len(pieces) - 1
    assert b'"sequence_number":3003,' in expected  # (created, in_progress, item added, part added, 3000 deltas)
