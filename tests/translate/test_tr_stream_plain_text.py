"""The stream translator's byte-level path for plain text deltas (`feed_payload`, whole reads and decoded payloads).

Most events of a stream are one more piece of text; the gateway recognises them in
their bytes and copies the JSON string literal into the chunk without parsing the
event. Properties: whenever that path answers, its bytes are exactly what the
parsed path (`feed_sse`) sends for the same event, and the stream's end (finish
reasons, usage, stored signatures) is the same; it answers for the plain deltas of
every wire spelling we know (so it is really used); it declines everything else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import UpstreamError
from app.translate.chat_request import ResponseOptions
from app.translate.chat_response import ResponseContext
from app.translate.chat_stream import ChatStreamTranscoder, ChatStreamTranslator
from app.translate.plain_text import PlainText

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


def ctx(**options: Any) -> ResponseContext:
    return ResponseContext(ResponseOptions(model="m", **options), "chatcmpl-t", 1, lambda: "call_t")


def parse_sse(data: bytes) -> list[Any]:
    return [json.loads(block[6:]) for block in data.decode().split("\n\n") if block]


def translate_read(transcoder: ChatStreamTranscoder, data: bytes) -> tuple[bytes, Any]:
    """What the gateway sends for one upstream read, and the error that ended the stream."""
    out = transcoder.feed(data)
    return out, transcoder.error


def started(**options: Any) -> ChatStreamTranslator:
    """A translator whose choice 0 has begun (the first event of a stream always takes the parsed path)."""
    translator = ChatStreamTranslator(ctx(**options))
    translator.feed_sse(text_event("Hi"))
    return translator


def both_ways(events: list[bytes], **options: Any) -> tuple[list[Any], list[Any], int]:
    """(chunks by the byte path where it answers, chunks by the parsed path, events the byte path took).

    Each event's bytes must be the same either way (asserted here).
    """
    fast, slow = started(**options), started(**options)
    out_fast: list[Any] = []
    out_slow: list[Any] = []
    taken = 0
    for payload in events:
        sse, took = feed_both(fast, slow, payload)
        taken += took
        out_fast.extend(parse_sse(sse))
        out_slow.extend(parse_sse(sse))  # the same bytes (asserted)
    out_fast.extend(fast.finish())
    out_slow.extend(slow.finish())
    assert fast.ctx.signatures == slow.ctx.signatures
    return out_fast, out_slow, taken


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(texts, min_size=1, max_size=5), spelling=st.sampled_from(sorted(SPELLINGS)),
       ascii_only=st.booleans(), index=st.booleans(), with_usage=st.booleans())
def test_the_byte_path_sends_what_the_parsed_path_sends(pieces: list[str], spelling: str, ascii_only: bool,
                                                         index: bool, with_usage: bool) -> None:
    events = [dumps(text_event(t, index=index, usage=USAGE if with_usage else None), spelling, ascii_only) for t in pieces]
    fast, slow, _ = both_ways(events)
    assert fast == slow


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize("ascii_only", [True, False])
def test_plain_deltas_take_the_byte_path_in_every_spelling(spelling: str, index: bool, ascii_only: bool) -> None:
    events = [dumps(text_event(t, index=index), spelling, ascii_only) for t in SAMPLE_TEXTS]
    fast, slow, taken = both_ways(events)
    assert fast == slow
    assert taken == len(SAMPLE_TEXTS)


def test_the_usage_of_the_last_plain_event_is_parsed_once_at_the_end() -> None:
    last = {**USAGE, "candidatesTokenCount": 4, "totalTokenCount": 16}
    fast, slow, taken = both_ways([dumps(text_event("a")), dumps(text_event("b", usage=last)), dumps(text_event("c", usage=None))],
                                  include_usage=True)
    assert taken == 3 and fast == slow
    assert fast[-1]["usage"]["completion_tokens"] == 4


DECLINED = {
    "thought signature beside the text": b'{"candidates": [{"content": {"parts": [{"text": "a","thoughtSignature": "c2ln"}],'
                                         b'"role": "model"},"index": 0}]}',
    "a thought": b'{"candidates": [{"content": {"parts": [{"text": "a","thought": true}],"role": "model"},"index": 0}]}',
    "two parts": b'{"candidates": [{"content": {"parts": [{"text": "a"},{"text": "b"}],"role": "model"},"index": 0}]}',
    "finish reason": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"finishReason": "STOP","index": 0}]}',
    "another candidate": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 1}]}',
    "two candidates": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0},'
                      b'{"content": {"parts": [{"text": "b"}],"role": "model"},"index": 1}]}',
    "logprobs": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0,'
                b'"logprobsResult": {"topCandidates": [],"chosenCandidates": []}}]}',
    "prompt feedback": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],'
                       b'"promptFeedback": {"blockReason": "SAFETY"}}',
    "usage after other members": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],'
                                 b'"modelVersion": "m","usageMetadata": {"promptTokenCount": 3}}',
    "an unescaped quote before the tail": b'{"candidates": [{"content": {"parts": [{"text": "a","x": "b"}],"role": "model"},"index": 0}]}',
    "an error member": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],'
                       b'"error": {"code": 500,"message": "boom","status": "INTERNAL"}}',
    "a member name spelled with an escape": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],'
                                            b'"usage\\u004detadata": {"promptTokenCount": 99}}',
    "a null usage": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],"usageMetadata": null}',
    "an escaped quote, then a sibling": b'{"candidates": [{"content": {"parts": [{"text": "a\\"","x": "b\\\\"}],'
                                        b'"role": "model"},"index": 0}]}',
}


@pytest.mark.parametrize("payload", DECLINED.values(), ids=DECLINED.keys())
def test_everything_else_is_left_to_the_parsed_path(payload: bytes) -> None:
    json.loads(payload)  # each is a valid event
    translator = started()
    assert translator.feed_payload(payload) is None
    assert read_whole(translator, b"data: " + payload + b"\r\n\r\n") is None


NOT_JSON = {
    "a raw tab": b"a\tb",
    "a raw NUL": b"a\x00b",
    "an unknown escape": b"a\\qb",
    "a short unicode escape": b"a\\u12zz",
    "a lone surrogate": b"a\\ud800b",
    "bytes that are not UTF-8": b"a\xffb",
}


@pytest.mark.parametrize("text", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_a_text_that_is_not_a_valid_json_string_is_never_copied(text: bytes) -> None:
    """Copied, it would make the chunk invalid JSON; parsed, the event is reported as malformed."""
    payload = b'{"candidates": [{"content": {"parts": [{"text": "' + text + b'"}],"role": "model"},"index": 0}]}'
    translator = started()
    assert translator.feed_payload(payload) is None
    assert read_whole(translator, b"data: " + payload + b"\r\n\r\n") is None
    out, error = translate_read(ChatStreamTranscoder(translator), b"data: " + payload + b"\r\n\r\n")
    assert error is not None and error.status == 502 and "Malformed event" in parse_sse(out)[-1]["error"]["message"]


def test_an_unfinished_event_is_not_copied() -> None:
    whole = b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}]}'
    assert started().feed_payload(whole[:-1]) is None
    assert read_whole(started(), b"data: " + whole[:-1] + b"\r\n\r\n") is None


def test_a_null_usage_keeps_the_last_one_in_either_path() -> None:
    null_usage = DECLINED["a null usage"]
    fast, slow, taken = both_ways([dumps(text_event("a")), null_usage, dumps(text_event("b", usage=None))], include_usage=True)
    assert fast == slow and taken == 2
    assert fast[-1]["usage"]["prompt_tokens"] == USAGE["promptTokenCount"]


def run_taken(data: bytes) -> tuple[int, bytes]:
    """How many events of `data` (one read) a byte path took, and what the transcoder sent for the whole read."""
    transcoder = ChatStreamTranscoder(started())
    taken = count_byte_path(transcoder.translator)
    out = transcoder.feed(data)
    return sum(taken), out


def test_the_plain_events_of_a_read_in_googles_framing_take_a_byte_path() -> None:
    one = framed(dumps(text_event("a")))
    taken = {one[:-2]: 0,  # unfinished: kept for the next read
             one[:-5] + b"\r\n}\r\n\r\n": 0,  # a line break inside: not one event
             one: 1, one * 3: 3,  # whole events in Google's framing: feed_payload for one, feed_run for several
             one[:-4] + b"\n\n": 0, b"data:" + one[6:]: 0, b": keep-alive\r\n\r\n" + one: 0}  # other lines: parsed
    for data, count in taken.items():
        assert run_taken(data)[0] == count, data
    call = framed(dumps({"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}],
                                                     "role": "model"}, "index": 0}]}))
    taken, out = run_taken(one * 2 + call + one)  # the run up to the call; the rest through the decoder
    assert taken == 3
    assert [c["choices"][0]["delta"].get("content") for c in parse_sse(out)] == ["a", "a", None, "a"]
    taken, out = run_taken(one * 2 + one[:-9])  # an event cut by the read: kept for the next one
    assert taken == 2 and len(parse_sse(out)) == 2



def test_a_read_of_plain_events_is_split_at_once_and_one_with_others_between_them_event_by_event(monkeypatch) -> None:
    """`PlainText.run` finds a read's plain events with one `split`; a read where another event comes between two
    plain ones, or where an event carries no usage first, is matched event by event, with the same result."""
    usages = [{**USAGE, "candidatesTokenCount": n} for n in range(3)]
    plain = [framed(dumps(text_event(t, usage=u), "compact")) for t, u in zip(("a", " b", " c"), usages, strict=True)]
    finish = framed(dumps(json.loads(DECLINED["finish reason"]), "compact"))
    call = framed(dumps({"candidates": [{"content": {"parts": [{"functionCall": {"name": "f"}}], "role": "model"}}]}))
    no_usage = framed(dumps(text_event(" d", usage=None), "compact"))
    later_usage = framed(b'{"candidates":[{"content":{"parts":[{"text":" e"}],"role":"model"},"index":0}],'
                         b'"modelVersion":"m","usageMetadata":{"promptTokenCount":3}}')
    reads = {  # read -> (texts of the run, where it ends, the usage kept, whether it was split at once)
        b"".join(plain): (["a", " b", " c"], sum(map(len, plain)), usages[2], True),
        b"".join(plain) + finish: (["a", " b", " c"], sum(map(len, plain)), usages[2], True),
        b"".join(plain) + finish + plain[0]: (["a", " b", " c"], sum(map(len, plain)), usages[2], False),
        plain[0] + call + plain[1]: (["a"], len(plain[0]), usages[0], False),
        plain[0] + no_usage + plain[1]: (["a", " d", " b"], len(plain[0] + no_usage + plain[1]), usages[1], False),
        plain[0] + later_usage + plain[1]: (["a"], len(plain[0]), usages[0], False),
    }
    one_by_one = PlainText._events
    used: list[bool] = []
    monkeypatch.setattr(PlainText, "_events", lambda self, data: used.append(True) or one_by_one(self, data))
    for data, (texts_sent, end, usage, at_once) in reads.items():
        used.clear()
        recogniser = PlainText()
        literals, texts_taken, taken_end = recogniser.run(data)
        assert (texts_taken, taken_end, not used) == (texts_sent, end, at_once), data
        assert literals == [json.dumps(t).encode() for t in texts_taken]
        assert recogniser.usage(None) == usage  # the newest usage taken, kept as bytes and parsed when asked for

TAIL_ODDITIES = {
    "a lone CR as whitespace": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],\r'
                               b'"usageMetadata": {"promptTokenCount": 3}}',
    "a lone LF as whitespace": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],'
                               b'"usageMetadata": {"promptTokenCount": 3},\n"modelVersion": "m"}',
    "an escape after the text": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],'
                                b'"usageMetadata": {"promptTokenCount": 3},"modelVersion": "m\\/2"}',
    # after a usage first: each event of the read looks plain to the pattern, the read is split at once
    "a lone CR after the usage": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],'
                                 b'"usageMetadata": {"promptTokenCount": 3},\r"modelVersion": "m"}',
    "an error member after the usage": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],'
                                       b'"usageMetadata": {"promptTokenCount": 3},"error": {"code": 500,"message": "boom",'
                                       b'"status": "INTERNAL"}}',
    "prompt feedback after the usage": b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],'
                                       b'"usageMetadata": {"promptTokenCount": 3},"promptFeedback": {"blockReason": "SAFETY"}}',
    "a text ending in an escaped quote and error": b'{"candidates": [{"content": {"parts": [{"text": "say \\"error"}],'
                                                   b'"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 3}}',
}


@pytest.mark.parametrize("odd", [*DECLINED.values(), *TAIL_ODDITIES.values()], ids=[*DECLINED, *TAIL_ODDITIES])
def test_a_run_with_any_other_event_in_it_sends_the_parsed_paths_bytes(odd: bytes) -> None:
    """Plain events (one of them escaped) around any other event, in one read: the same bytes as the parsed path."""
    plain, escaped = dumps(text_event("x y")), dumps(text_event('a "q"\u00e9'))
    data = b"".join(framed(p) for p in (plain, escaped, odd, plain))
    fast = ChatStreamTranscoder(started(include_usage=True))
    slow = ChatStreamTranscoder(started(include_usage=True))  # the parsed path alone: the decoder and feed_sse
    slow.translator.feed_run, slow.translator.feed_payload = (lambda data: (b"", 0)), (lambda *args: None)
    sent = [(t.feed(data) + (t.feed(b"") if t.error is None else b""), t.error) for t in (fast, slow)]
    assert sent[0][0] == sent[1][0]
    assert (sent[0][1] is None) == (sent[1][1] is None)
    assert fast.usage() == slow.usage()


KINDS: dict[str, Any] = {
    "plain": text_event("x y"), "escaped": text_event('a "q"\n\u00e9'), "empty": text_event(""),
    "no usage": text_event("z", usage=None), "null usage": json.loads(DECLINED["a null usage"]),
    "call": {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {"k": 1}}}],
                                         "role": "model"}, "index": 0}]},
    "error": {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}},
}


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=4), spelling=st.sampled_from(sorted(SPELLINGS)))
def test_reads_of_several_events_cut_anywhere_send_the_parsed_paths_bytes(events: list[str], cuts: list[int],
                                                                          spelling: str) -> None:
    """The run path, the decoder's and the parsed path agree, wherever the network splits the body."""
    parsed_events = [KINDS[e] for e in events]
    body = b"".join(framed(dumps(e, spelling)) for e in parsed_events)
    transcoder = ChatStreamTranscoder(started(include_usage=True))
    out = []
    at = 0
    for cut in sorted({min(c, len(body)) for c in cuts} | {len(body)}):
        out.append(transcoder.feed(body[at:cut]))
        at = cut
        if transcoder.error is not None:
            break
    slow = started(include_usage=True)
    expected = []
    for event in parsed_events:
        if "error" in event:
            break
        expected.append(slow.feed_sse(event))
    if transcoder.error is None:
        out.append(transcoder.feed(b""))
        assert b"".join(out) == b"".join(expected)
        assert transcoder.usage() == slow.latest_usage()
    else:
        assert transcoder.error.status == 503 and b"".join(out).startswith(b"".join(expected))


@settings(max_examples=200, deadline=None)
@given(events=st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=4), spelling=st.sampled_from(sorted(SPELLINGS)))
def test_a_streams_first_reads_open_it_as_the_parsed_path_does(events: list[str], cuts: list[int], spelling: str) -> None:
    """`open` on the first reads (the first event parsed, the rest of its read on the byte paths) sends what the parsed
    path sends; an error among them raises (the call can still be retried), one after them ends the stream."""
    parsed_events = [KINDS[e] for e in events]
    body = b"".join(framed(dumps(e, spelling)) for e in parsed_events)
    transcoder = ChatStreamTranscoder(ChatStreamTranslator(ctx(include_usage=True)))
    out: list[bytes] = []
    opened = False
    at = 0
    for cut in sorted({min(c, len(body)) for c in cuts} | {len(body)}):
        piece, at = body[at:cut], cut
        if opened:
            out.append(transcoder.feed(piece))
            if transcoder.error is not None:
                break
            continue
        try:
            first = transcoder.open(piece)
        except UpstreamError as exc:
            assert exc.status == 503 and "error" in events
            return
        if first is not None:
            opened, out = True, [first]
    slow = ChatStreamTranslator(ctx(include_usage=True))
    expected = []
    for event in parsed_events:
        if "error" in event:
            break
        expected.append(slow.feed_sse(event))
    if transcoder.error is not None:
        assert transcoder.error.status == 503 and b"".join(out).startswith(b"".join(expected))
        return
    out.append(transcoder.feed(b"") if opened else transcoder.open(b"") or b"")
    assert b"".join(out) == b"".join(expected)
    assert transcoder.usage() == slow.latest_usage()


def test_a_first_read_of_several_events_takes_the_run_path_after_the_first() -> None:
    one = framed(dumps(text_event("a")))
    transcoder = ChatStreamTranscoder(ChatStreamTranslator(ctx()))
    taken = count_byte_path(transcoder.translator)
    out = transcoder.open(one * 4)
    assert out is not None and [c["choices"][0]["delta"]["content"] for c in parse_sse(out)] == ["a"] * 4
    assert sum(taken) == 3


def test_before_the_first_delta_and_after_the_finish_the_parsed_path_decides() -> None:
    payload = dumps(text_event("a"))
    fresh = ChatStreamTranslator(ctx())
    assert fresh.feed_payload(payload) is None  # the first delta carries the role
    done = started()
    done.feed_sse(json.loads(DECLINED["finish reason"]))
    assert done.feed_payload(payload) is None


def test_an_open_thought_tag_is_closed_by_the_parsed_path() -> None:
    translator = started(include_thoughts=True, thought_tag_marker="think")
    translator.feed_sse({"candidates": [{"content": {"parts": [{"text": "hmm", "thought": True}], "role": "model"}, "index": 0}]})
    assert translator.feed_payload(dumps(text_event("answer"))) is None


def test_a_malformed_usage_member_fails_the_stream_at_its_end() -> None:
    translator = started(include_usage=True)
    broken = b'{"candidates": [{"content": {"parts": [{"text": "a"}],"role": "model"},"index": 0}],"usageMetadata": {"prompt}'
    assert translator.feed_payload(broken) is not None
    with pytest.raises(UpstreamError) as caught:
        translator.finish()
    assert caught.value.status == 502 and "Malformed event" in caught.value.message


def test_translate_read_takes_either_path_and_keeps_going() -> None:
    transcoder = ChatStreamTranscoder(ChatStreamTranslator(ctx()))
    first, error = translate_read(transcoder, b"data: " + dumps(text_event("Hel")) + b"\r\n\r\n")
    assert error is None and parse_sse(first)[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hel"}
    both = b"data: " + dumps(text_event("lo")) + b"\r\n\r\ndata: " + dumps(text_event(" you")) + b"\r\n\r\n"
    out, error = translate_read(transcoder, both)
    assert error is None and [c["choices"][0]["delta"]["content"] for c in parse_sse(out)] == ["lo", " you"]
    out, error = translate_read(transcoder, b'data: {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}\r\n\r\n')
    assert error is not None and error.status == 503 and parse_sse(out)[0]["error"]["message"] == "overloaded"


def test_a_literal_whose_closing_quote_is_escaped_is_not_copied() -> None:
    """Not valid JSON (Google never sends it): copied, it would corrupt the chunk; parsed, it is a clean error."""
    broken = b'{"candidates": [{"content": {"parts": [{"text": "a\\"}],"role": "model"},"index": 0}]}'
    assert started().feed_payload(broken) is None
    assert started().feed_payload(broken.replace(b'a\\"', b'a\\\\"')) is not None  # an escaped backslash ends it


def test_a_first_event_without_payload_does_not_delay_the_start() -> None:
    """The first read's first event gives nothing (a `[DONE]` line in another framing): the next event of the same read
    starts the stream, as when the read was decoded whole."""
    transcoder = ChatStreamTranscoder(ChatStreamTranslator(ctx()))
    read = b'data: [DONE]\r\r\n\r\n' + framed(b'{"usageMetadata": {"promptTokenCount": 3}}')
    assert transcoder.open(read) == b""
