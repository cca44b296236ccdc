"""`partial_args`: Vertex's streamed function-call arguments (`partialArgs`) -> JSON text deltas.

Property: any JSON object, sent as Gemini would send it (one piece per leaf in document order,
strings cut into `willContinue` pieces, paths in any RFC 9535 spelling) and fed in any grouping,
is written as JSON text that parses back to the same object, also through the whole
`ChatStreamTranslator` and SSE decoding.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.translate.chat_request import ResponseOptions
from app.translate.chat_response import ResponseContext
from app.translate.chat_stream import ChatStreamTranslator
from app.translate.partial_args import ArgumentsWriter, parse_json_path
from app.upstream.sse import SSEDecoder

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# -- strategies -----------------------------------------------------------------------------

keys = st.one_of(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), st.text(max_size=6))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, min_size=1, max_size=4), st.dictionaries(keys, inner, min_size=1, max_size=4)),
    max_leaves=12,
)
objects = st.dictionaries(keys, values, max_size=5)


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in leaves(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in leaves(v, (*path, i))]
    return [(path, value)]


def single_quoted(name: str) -> str:
    body = json.dumps(name, ensure_ascii=False)[1:-1].replace('\\"', '"').replace("'", "\\'")
    return f"['{body}']"


def render_path(path: tuple[Any, ...], styles: list[int]) -> str:
    out = "$"
    for step, style in zip(path, styles, strict=True):
        if isinstance(step, int):
            out += f"[{step}]"
        elif style == 0 and IDENTIFIER.match(step):
            out += "." + step
        elif style == 1:
            out += f'["{json.dumps(step, ensure_ascii=style == 2)[1:-1]}"]'
        else:
            out += single_quoted(step)
    return out


@st.composite
def partial_args(draw: st.DrawFn, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pieces Gemini would send for `obj`, in document order."""
    pieces: list[dict[str, Any]] = []
    for path, value in leaves(obj):
        json_path = render_path(path, draw(st.lists(st.integers(0, 2), min_size=len(path), max_size=len(path))))
        if isinstance(value, str):
            cuts = sorted(draw(st.lists(st.integers(0, len(value)), max_size=3)))
            bounds = [0, *cuts, len(value)]
            parts = [value[a:b] for a, b in itertools.pairwise(bounds)]
            for i, part in enumerate(parts):
                piece: dict[str, Any] = {"jsonPath": json_path, "stringValue": part}
                if i < len(parts) - 1:
                    piece["willContinue"] = True
                elif draw(st.booleans()):
                    piece["willContinue"] = False
                pieces.append(piece)
        elif value is None:
            pieces.append({"jsonPath": json_path, "nullValue": "NULL_VALUE"})
        elif isinstance(value, bool):
            pieces.append({"jsonPath": json_path, "boolValue": value})
        else:
            pieces.append({"jsonPath": json_path, "numberValue": float(value) if draw(st.booleans()) else value})
    return pieces


def groups(draw: st.DrawFn, items: list[Any]) -> list[list[Any]]:
    cuts = sorted(set(draw(st.lists(st.integers(0, len(items)), max_size=len(items) + 1))))
    bounds = [0, *cuts, len(items)]
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


# -- the writer alone -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_object_split_into_pieces_reassembles(data: st.DataObject) -> None:
    obj = data.draw(objects)
    pieces = data.draw(partial_args(obj))
    writer = ArgumentsWriter()
    text = "".join(writer.feed(group) for group in groups(data.draw, pieces)) + writer.close()
    assert orjson.loads(text) == obj


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_every_prefix_of_the_output_is_a_prefix_of_valid_json_text(data: st.DataObject) -> None:
    """Each delta only ever appends: closing the writer after any group still parses."""
    obj = data.draw(objects)
    pieces = data.draw(partial_args(obj))
    writer = ArgumentsWriter()
    written = ""
    for group in groups(data.draw, pieces):
        written += writer.feed(group)
        if written:
            json.loads(written + _close_copy(written))  # what was written so far starts a JSON object
    assert orjson.loads(written + writer.close()) == obj


def _close_copy(text: str) -> str:
    """Close the open strings and containers of a JSON text prefix (a tiny JSON scanner)."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            stack.pop()
    tail = '"' if in_string else ""
    if not in_string and text.rstrip().endswith(":"):
        tail += "null"
    return tail + "".join(reversed(stack))


def test_worked_example() -> None:
    writer = ArgumentsWriter()
    out = [
        writer.feed([{"jsonPath": "$.location", "stringValue": "Bos", "willContinue": True}]),
        writer.feed([{"jsonPath": "$.location", "stringValue": "ton \"MA\""}]),
        writer.feed([{"jsonPath": "$.days", "numberValue": 3.0}, {"jsonPath": "$.opts.metric", "boolValue": False}]),
        writer.feed([{"jsonPath": "$.opts.hours[0]", "numberValue": 9}, {"jsonPath": "$.opts.hours[1]", "nullValue": "NULL_VALUE"}]),
        writer.feed([{"jsonPath": "$['odd key']", "stringValue": "é"}]),
        writer.close(),
    ]
    assert out == [
        '{"location":"Bos',
        'ton \\"MA\\""',
        ',"days":3,"opts":{"metric":false',
        ',"hours":[9,null',
        ']},"odd key":"é"',
        "}",
    ]
    assert orjson.loads("".join(out)) == {"location": 'Boston "MA"', "days": 3, "opts": {"metric": False, "hours": [9, None]}, "odd key": "é"}


def test_no_pieces_is_an_empty_object() -> None:
    assert ArgumentsWriter().close() == "{}"
    writer = ArgumentsWriter()
    assert writer.feed([]) == "" and writer.feed([{"jsonPath": "$"}]) == ""
    assert writer.close() == "{}"


def test_string_left_open_is_closed() -> None:
    writer = ArgumentsWriter()
    text = writer.feed([{"jsonPath": "$.a.b", "stringValue": "x", "willContinue": True}]) + writer.close()
    assert orjson.loads(text) == {"a": {"b": "x"}}


@pytest.mark.parametrize(
    "path, expected",
    [
        ("$", []),
        ("$.a", ["a"]),
        ("$.a.b[0]", ["a", "b", 0]),
        ("$['a b'][12]", ["a b", 12]),
        ('$["a.b"].c', ["a.b", "c"]),
        ("$['it\\'s']", ["it's"]),
        ("$['back\\\\slash']", ["back\\slash"]),
        ("$['line\\nbreak']", ["line\nbreak"]),
        ("$['\\u00e9t\\u00e9']", ["été"]),
        ('$["say \\"hi\\""]', ['say "hi"']),
        ("$['quote\"inside']", ['quote"inside']),
        ("$.ünïcode", ["ünïcode"]),
        ("$['']", [""]),
        ("$['0']", ["0"]),
    ],
)
def test_parse_json_path(path: str, expected: list[Any]) -> None:
    assert parse_json_path(path) == expected


@pytest.mark.parametrize("path", ["a.b", "$.", "$[x]", "$['unclosed", "$[-1]", "$.a[0"])
def test_parse_json_path_refuses_what_is_not_a_path(path: str) -> None:
    with pytest.raises(ValueError):
        parse_json_path(path)


# -- through the stream translator and the SSE decoder --------------------------------------


def _chunk(part: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": [part]}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand], "modelVersion": "gemini-3.1-pro-preview", "responseId": "r"}


@st.composite
def streamed_calls(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Gemini stream events for 1-3 calls whose arguments stream as partialArgs."""
    objs = draw(st.lists(objects, min_size=1, max_size=3))
    events: list[dict[str, Any]] = []
    for n, obj in enumerate(objs):
        batches = groups(draw, draw(partial_args(obj)))
        for i, batch in enumerate(batches):
            fc: dict[str, Any] = {}
            if i == 0:
                fc["name"] = f"fn_{n}"
            if batch:
                fc["partialArgs"] = batch
            if i < len(batches) - 1 or draw(st.booleans()):
                fc["willContinue"] = True
            part: dict[str, Any] = {"functionCall": fc}
            if i == 0 and n == 0:
                part["thoughtSignature"] = "c2ln"
            events.append(_chunk(part))
        if events and "willContinue" in events[-1]["candidates"][0]["content"]["parts"][0]["functionCall"]:
            events.append(_chunk({"functionCall": {}}))  # the closing piece: willContinue false is omitted
    events.append(_chunk({"text": ""}, "STOP"))
    return objs, events


def _run(events_bytes: bytes, split: int) -> list[dict[str, Any]]:
    counter = itertools.count()
    ctx = ResponseContext(ResponseOptions(model="m", stream_function_call_arguments=True), "id", 1, lambda: f"call_{next(counter)}")
    translator, decoder = ChatStreamTranslator(ctx), SSEDecoder()
    out: list[dict[str, Any]] = []
    for piece in (events_bytes[:split], events_bytes[split:]):
        for event in decoder.feed(piece):
            out.extend(translator.feed(event))
    for event in decoder.flush():
        out.extend(translator.feed(event))
    return out + translator.finish()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_streamed_calls_become_argument_deltas_that_parse(data: st.DataObject) -> None:
    objs, events = data.draw(streamed_calls())
    wire = b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in events)
    chunks = _run(wire, data.draw(st.integers(0, len(wire))))
    calls: dict[int, dict[str, Any]] = {}
    finishes = []
    for chunk in chunks:
        for choice in chunk["choices"]:
            if choice["finish_reason"]:
                finishes.append(choice["finish_reason"])
            for tc in choice["delta"].get("tool_calls") or ():
                entry = calls.setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
                if "id" in tc:
                    assert entry["id"] is None, "a call's id comes once, on its first delta"
                    entry["id"], entry["name"] = tc["id"], tc["function"]["name"]
                entry["arguments"] += tc["function"].get("arguments", "")
    assert finishes == ["tool_calls"]
    assert sorted(calls) == list(range(len(objs)))
    for n, obj in enumerate(objs):
        assert calls[n]["name"] == f"fn_{n}" and calls[n]["id"] == f"call_{n}"
        assert orjson.loads(calls[n]["arguments"]) == obj
