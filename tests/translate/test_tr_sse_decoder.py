"""`upstream/sse.SSEDecoder`: bytes of a Gemini stream -> events, whatever the framing and splits.

Reference 3.6: `data: <json>` events separated by blank lines (`\\r\\n\\r\\n` from Google, `\\n\\n`
and `\\r\\r` accepted), no `[DONE]`, errors after the 200 as `data: {"error": ...}`, as an
unprefixed (possibly pretty-printed) JSON object, or as the JSON-array form.
"""

from __future__ import annotations

import json
from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.upstream.sse import SSEDecoder

EVENT_A = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}], "responseId": "r"}
EVENT_B = {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "STOP", "index": 0}]}
ERROR = {"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}


def decode(*pieces: bytes) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    events = [e for p in pieces for e in decoder.feed(p)]
    return events + decoder.flush()


def all_splits(data: bytes) -> list[list[bytes]]:
    runs = [[data], [data[i : i + 1] for i in range(len(data))]]
    runs.extend([data[:k], data[k:]] for k in range(1, len(data)))
    return runs


def assert_split_independent(data: bytes, expected: list[dict[str, Any]]) -> None:
    for pieces in all_splits(data):
        assert decode(*pieces) == expected, f"pieces {[len(p) for p in pieces][:3]}..."


def data_event(event: Any, sep: bytes = b"\r\n\r\n") -> bytes:
    return b"data: " + orjson.dumps(event) + sep


@pytest.mark.parametrize("sep", [b"\r\n\r\n", b"\n\n", b"\r\r", b"\r\n\n", b"\n\r\n"])
def test_framings(sep: bytes) -> None:
    data = data_event(EVENT_A, sep) + data_event(EVENT_B, sep)
    assert_split_independent(data, [EVENT_A, EVENT_B])


def test_events_are_returned_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(data_event(EVENT_A)[:-2]) == []
    assert decoder.feed(b"\r\n") == [EVENT_A]
    assert decoder.feed(data_event(EVENT_B, b"\n\n")) == [EVENT_B]
    assert decoder.flush() == []


def test_the_last_event_without_its_blank_line_is_dispatched_at_the_end() -> None:
    assert_split_independent(data_event(EVENT_A) + b"data: " + orjson.dumps(EVENT_B), [EVENT_A, EVENT_B])
    assert_split_independent(data_event(EVENT_A) + b"data: " + orjson.dumps(EVENT_B) + b"\r\n", [EVENT_A, EVENT_B])


def test_data_lines_are_joined_with_newlines() -> None:
    pretty = json.dumps(EVENT_A, indent=1).split("\n")
    data = "".join(f"data: {line}\r\n" for line in pretty).encode() + b"\r\n"
    assert_split_independent(data, [EVENT_A])


def test_field_without_space_and_ignored_fields() -> None:
    data = (
        b": keep-alive comment\r\n\r\n"
        b"event: message\r\nid: 7\r\nretry: 1000\r\ndata:" + orjson.dumps(EVENT_A) + b"\r\n\r\n"
        b"data: [DONE]\r\n\r\n"
        b"unknown-field: x\r\n\r\n"
    )
    assert_split_independent(data, [EVENT_A])


def test_json_line_separators_inside_strings_are_not_line_breaks() -> None:
    event = {"candidates": [{"content": {"parts": [{"text": "a\u2028b\u2029c\u0085d\x0be\x0cf"}]}}]}
    data = b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\r\n\r\n"
    assert_split_independent(data, [event])


def test_non_ascii_split_inside_a_character() -> None:
    event = {"candidates": [{"content": {"parts": [{"text": "日本語 🎉 é"}]}}]}
    assert_split_independent(b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n", [event])


@pytest.mark.parametrize(
    "payload, detail",
    [(b"not json", "not json"), (b"42", "42"), (b'"text"', '"text"'), (b"{broken", "{broken")],
)
def test_malformed_data_becomes_an_error_event(payload: bytes, detail: str) -> None:
    events = decode(data_event(EVENT_A) + b"data: " + payload + b"\r\n\r\n")
    assert events[0] == EVENT_A
    assert events[1]["error"]["code"] == 502 and detail in events[1]["error"]["message"]


def test_data_error_event() -> None:
    assert_split_independent(data_event(EVENT_A) + data_event(ERROR), [EVENT_A, ERROR])


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_unprefixed_pretty_printed_error(newline: str) -> None:
    error = {
        "error": {
            "code": 400,
            "message": 'Invalid "payload": unbalanced } and { and [ inside \\ a string',
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "a[0]"}]}],
        }
    }
    body = json.dumps(error, indent=2).replace("\n", newline) + newline
    data = data_event(EVENT_A) + body.encode() + data_event(EVENT_B)
    assert_split_independent(data, [EVENT_A, error, EVENT_B])


def test_unprefixed_error_on_one_line() -> None:
    assert_split_independent(data_event(EVENT_A) + orjson.dumps(ERROR) + b"\n", [EVENT_A, ERROR])


def test_unprefixed_error_cut_off_by_the_end_of_the_body() -> None:
    events = decode(data_event(EVENT_A) + b'{\n  "error": {\n    "code": 500,\n')
    assert events[0] == EVENT_A
    assert events[1]["error"]["code"] == 502  # reported as malformed, never lost


@pytest.mark.parametrize(
    "body",
    [
        b"[" + orjson.dumps(ERROR) + b"]\r\n",
        b"[{\r\n  \"error\": {\r\n    \"code\": 503,\r\n    \"message\": \"The model is overloaded. Please try again later.\",\r\n"
        b"    \"status\": \"UNAVAILABLE\"\r\n  }\r\n}\r\n]\r\n",
        b"data: [" + orjson.dumps(ERROR) + b"]\r\n\r\n",
    ],
)
def test_json_array_error_form(body: bytes) -> None:
    assert_split_independent(data_event(EVENT_A) + body, [EVENT_A, ERROR])


def test_flush_resets_the_decoder() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: " + orjson.dumps(EVENT_A))
    assert decoder.flush() == [EVENT_A]
    assert decoder.flush() == []
    assert decoder.feed(data_event(EVENT_B)) == [EVENT_B]


def test_empty_input() -> None:
    assert decode(b"", b"") == []
    assert decode(b"\r\n\r\n\n\n") == []


# -- property: random events, random framing, random cuts -----------------------------------

texts = st.text(max_size=30)
events = st.one_of(
    texts.map(lambda t: {"candidates": [{"content": {"role": "model", "parts": [{"text": t}]}, "index": 0}]}),
    st.builds(lambda p, c: {"usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": c}}, st.integers(0, 10**6), st.integers(0, 10**6)),
    texts.map(lambda t: {"error": {"code": 500, "message": t, "status": "INTERNAL"}}),
)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[dict[str, Any]]]:
    expected = draw(st.lists(events, min_size=1, max_size=6))
    out = b""
    for event in expected:
        form = draw(st.sampled_from(["data", "pretty-data", "raw", "raw-pretty", "array"]))
        sep = draw(st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\r"]))
        nl = sep[: len(sep) // 2]
        if form == "data":
            out += b"data: " + json.dumps(event, ensure_ascii=draw(st.booleans())).encode() + sep
        elif form == "pretty-data":
            out += b"".join(b"data: " + line.encode() + nl for line in json.dumps(event, indent=1).split("\n")) + nl
        elif form == "raw":
            out += orjson.dumps(event) + nl
        elif form == "raw-pretty":
            out += json.dumps(event, indent=2).replace("\n", nl.decode()).encode() + nl
        else:
            out += b"[" + orjson.dumps(event) + b"]" + nl
        if draw(st.booleans()):
            out += b": keep-alive" + sep
    return out, expected


@settings(max_examples=200, deadline=None)
@given(streams(), st.data())
def test_any_framing_and_any_cuts_give_the_same_events(stream: tuple[bytes, list[dict[str, Any]]], data: st.DataObject) -> None:
    wire, expected = stream
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    bounds = [0, *cuts, len(wire)]
    assert decode(*(wire[a:b] for a, b in pairwise(bounds))) == expected
