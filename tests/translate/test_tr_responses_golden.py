"""Golden fixtures for the Responses translators: `tests/golden/responses/<case>/`.

Each case folder holds paired files, compared as PARSED JSON (never as strings):

* request side: `responses_request.json` -> `gemini_request.json` (the body
  `responses_request.to_gemini` builds) and `call.json` (the rest of the
  `ResponsesCall`), or `error.json` for a request that must be refused.
  `meta.json` (optional) gives the Gemini model id (`model`), `backend`
  (`gemini` | `vertex`), `capabilities` overrides, the `TranslationEnv`
  look-ups (`signatures`, `fetched`) and the stored conversation of
  `previous_response_id` (`history`: items, oldest first).
* response side: `gemini_response.json` -> `responses_response.json` (the
  Response object) or `responses_error.json`; `gemini_response.sse` ->
  `responses_response.sse`: every event the gateway sends (`event:` lines
  included). Options come from the case's request (when it has one), then
  `options.json` (ResponsesOptions fields). `stored_signatures.json` holds
  the signatures the answer asks the gateway to remember (absent = none).

Every `.sse` golden is also replayed split at every byte offset and one byte
at a time (the output must not change), checked against OpenAI's rules
(sequence numbers, order, ids) and run through openai-python's own stream
accumulator (`ResponseStreamState`), whose final response must equal our
`response.completed`. A case with both forms of one answer must give the same
output either way. Outbound bodies pass the same Google oracles as chat's.

`UPDATE_GOLDEN=1 pytest tests/translate/test_tr_responses_golden.py` rewrites the
expected files (review the diff!); the default run only compares.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
from google.genai import types as gtypes
from openai._models import construct_type_unchecked
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import ResponseStreamEvent

from app.errors import GatewayError
from app.schemas.responses import InputItem, ResponsesRequest
from app.translate.capabilities import capabilities_for
from app.translate.chat_request import TranslationEnv
from app.translate.responses_request import ResponsesCall, ResponsesOptions, to_gemini
from app.translate.responses_response import ResponsesContext, to_responses
from app.translate.responses_stream import ResponsesStreamTranslator
from app.translate.transcoder import StreamTranscoder
from app.upstream.sse import SSEDecoder

from .golden_support import UPDATE, cases, check_optional, check_or_update, error_summary, ids, load, meta
from .tr_oracles import validate_request_body

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "responses"
DEFAULT_MODEL = "gemini-2.5-flash"
RESPONSE_ID = "resp_golden"
CREATED = 1700000000
COMPLETED = 1700000009


REQUEST_CASES = cases(GOLDEN, "responses_request.json")
RESPONSE_CASES = cases(GOLDEN, "gemini_response.json")
STREAM_CASES = cases(GOLDEN, "gemini_response.sse")


def parse_sse_text(text: str) -> list[dict[str, Any]]:
    """Typed SSE (`event: <type>` + `data: <json>` per event) -> the parsed events; the two types must agree."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        event = json.loads(lines[1][6:])
        assert event["type"] == lines[0][7:], block
        events.append(event)
    return events


def render_sse(events: list[dict[str, Any]]) -> str:
    return "".join(
        f"event: {e['type']}\ndata: " + json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n\n" for e in events
    )



SSE = (parse_sse_text, render_sse)

# -- translating a case ---------------------------------------------------------------------


def translate_request(case: Path) -> ResponsesCall:
    m = meta(case)
    caps = capabilities_for(m.get("model", DEFAULT_MODEL), None, m.get("capabilities"))
    env = TranslationEnv(
        signatures=m.get("signatures", {}), fetched=m.get("fetched", {}), vertex=m.get("backend", "gemini") == "vertex"
    )
    history = [InputItem.model_validate(item) for item in m.get("history", ())]
    req = ResponsesRequest.model_validate(load(case / "responses_request.json"))
    return to_gemini(req, caps, env, history)


def call_summary(call: ResponsesCall) -> dict[str, Any]:
    echo = call.options.echo  # (its three runs as one object: the golden files list the fields the Response repeats)
    return {
        "stream": call.stream,
        "options": {**asdict(call.options), "echo": {**echo.head, **echo.middle, **echo.tail}},
        "signature_bypasses": call.signature_bypasses,
        "signatures_passed": call.signatures_passed,
        "signatures_restored": call.signatures_restored,
        "dropped_schema_keywords": call.dropped_schema_keywords,
    }


def response_options(case: Path) -> ResponsesOptions:
    overrides = load(case / "options.json") if (case / "options.json").exists() else {}
    base: ResponsesOptions | None = None
    if (case / "responses_request.json").exists():
        try:
            base = translate_request(case).options
        except GatewayError:
            base = None
    if base is None:
        base = ResponsesOptions(model=overrides.get("model", DEFAULT_MODEL))
    return replace(base, **overrides)


def new_context(options: ResponsesOptions) -> ResponsesContext:
    ids = itertools.count(1)
    calls = itertools.count(1)
    return ResponsesContext(
        options, RESPONSE_ID, CREATED, lambda prefix: f"{prefix}_golden{next(ids):03d}",
        lambda: f"call_golden{next(calls):014d}", lambda: COMPLETED,
    )  # fmt: skip


def gateway_bytes(pieces: Iterable[bytes], options: ResponsesOptions) -> tuple[bytes, dict[str, str]]:
    """The bytes the gateway's stream body sends for these upstream bytes (as app/api/responses.py drives the transcoder)."""
    ctx = new_context(options)
    transcoder = StreamTranscoder(ResponsesStreamTranslator(ctx))
    out: list[bytes] = []
    for piece in [*pieces, b""]:
        out.append(transcoder.feed(piece))
        if transcoder.error is not None:
            return b"".join(out), ctx.signatures
    out.append(transcoder.finish())
    return b"".join(out), ctx.signatures


def gateway_stream(pieces: Iterable[bytes], options: ResponsesOptions) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The events the gateway's stream body sends for these upstream bytes."""
    data, stored = gateway_bytes(pieces, options)
    return parse_sse_text(data.decode()), stored


def sse_fixture_events(case: Path) -> list[dict[str, Any]]:
    decoder = SSEDecoder()
    return decoder.feed((case / "gemini_response.sse").read_bytes()) + decoder.flush()


# -- tests ----------------------------------------------------------------------------------


def test_golden_folders_are_well_formed() -> None:
    known = {
        "responses_request.json", "gemini_request.json", "call.json", "error.json", "meta.json", "options.json",
        "gemini_response.json", "responses_response.json", "responses_error.json", "stored_signatures.json",
        "gemini_response.sse", "responses_response.sse",
    }  # fmt: skip
    cases = [d for d in GOLDEN.iterdir() if d.is_dir()]
    assert len(cases) >= 30
    for case in cases:
        names = {p.name for p in case.iterdir()}
        assert names <= known, f"{case.name}: unknown files {names - known}"
        assert names & {"responses_request.json", "gemini_response.json", "gemini_response.sse"}, case.name
        if "responses_request.json" in names and not UPDATE:
            assert ("gemini_request.json" in names) != ("error.json" in names), case.name


@pytest.mark.parametrize("case", REQUEST_CASES, ids=ids(REQUEST_CASES))
def test_request(case: Path) -> None:
    try:
        call = translate_request(case)
    except GatewayError as exc:
        if UPDATE and not (case / "error.json").exists() and (case / "gemini_request.json").exists():
            raise
        check_or_update(case / "error.json", error_summary(exc))
        return
    if UPDATE and (case / "error.json").exists():
        (case / "error.json").unlink()
    check_or_update(case / "gemini_request.json", call.body)
    check_or_update(case / "call.json", call_summary(call))


@pytest.mark.parametrize("case", REQUEST_CASES, ids=ids(REQUEST_CASES))
def test_request_body_passes_google_oracles(case: Path) -> None:
    try:
        call = translate_request(case)
    except GatewayError:
        assert (case / "error.json").exists()
        return
    validate_request_body(json.loads(json.dumps(call.body)), meta(case).get("backend", "gemini"))


@pytest.mark.parametrize("case", REQUEST_CASES, ids=ids(REQUEST_CASES))
def test_request_translation_does_not_modify_its_input(case: Path) -> None:
    req = ResponsesRequest.model_validate(load(case / "responses_request.json"))
    before = req.model_dump()
    m = meta(case)
    history = [InputItem.model_validate(item) for item in m.get("history", ())]
    history_before = [h.model_dump() for h in history]
    try:
        to_gemini(req, capabilities_for(m.get("model", DEFAULT_MODEL)), TranslationEnv(signatures=m.get("signatures", {})),
                  history)  # fmt: skip
    except GatewayError:
        pass
    assert req.model_dump() == before
    assert [h.model_dump() for h in history] == history_before


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=ids(RESPONSE_CASES))
def test_response(case: Path) -> None:
    ctx = new_context(response_options(case))
    try:
        answer = to_responses(load(case / "gemini_response.json"), ctx)
    except GatewayError as exc:
        check_or_update(case / "responses_error.json", error_summary(exc))
        assert not (case / "responses_response.json").exists()
        return
    check_or_update(case / "responses_response.json", answer)
    assert not (case / "responses_error.json").exists()
    check_optional(case / "stored_signatures.json", ctx.signatures)


@pytest.mark.filterwarnings("ignore:SOME_FUTURE_REASON is not a valid FinishReason")  # an unknown value on purpose
@pytest.mark.parametrize("case", RESPONSE_CASES, ids=ids(RESPONSE_CASES))
def test_response_fixture_is_a_valid_gemini_response(case: Path) -> None:
    gtypes.GenerateContentResponse.model_validate(load(case / "gemini_response.json"))


@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_stream(case: Path) -> None:
    events, stored = gateway_stream([(case / "gemini_response.sse").read_bytes()], response_options(case))
    check_or_update(case / "responses_response.sse", events, sse=SSE)
    if not (case / "gemini_response.json").exists():
        check_optional(case / "stored_signatures.json", stored)


@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_stream_fixture_events_are_valid_gemini_responses(case: Path) -> None:
    for event in sse_fixture_events(case):
        if "error" not in event:
            gtypes.GenerateContentResponse.model_validate(event)


def _split_runs(data: bytes) -> Iterable[tuple[str, list[bytes]]]:
    for k in range(1, len(data)):
        yield f"split at {k}", [data[:k], data[k:]]
    yield "one byte at a time", [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_stream_does_not_depend_on_chunk_boundaries(case: Path) -> None:
    data = (case / "gemini_response.sse").read_bytes()
    options = response_options(case)
    whole = gateway_stream([data], options)
    for label, pieces in _split_runs(data):
        assert gateway_stream(pieces, options) == whole, f"{case.name}: output differs when {label}"


def check_openai_order(events: list[dict[str, Any]]) -> None:
    """OpenAI's rules for a Responses stream (docs: endpoints reference C.6/C.7)."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[0]["response"]["status"] == "in_progress"
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert ids == {RESPONSE_ID}, "the response id never changes"
    added: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    for event in events:
        kind = event["type"]
        if kind == "response.output_item.added":
            index = event["output_index"]
            assert index == len(added), "output indexes 0, 1, 2... in the order items are added"
            assert not done.keys() - added.keys()
            added[index] = event["item"]
        elif kind == "response.output_item.done":
            index = event["output_index"]
            assert index in added and index not in done
            assert (added[index]["type"], added[index]["id"]) == (event["item"]["type"], event["item"]["id"])
            done[index] = event["item"]
        elif "output_index" in event:
            assert event["output_index"] in added and event["output_index"] not in done, kind
    terminal = events[-1]
    if terminal["type"] == "error":
        assert events[-2]["type"] == "response.failed"
        return
    assert terminal["type"] in ("response.completed", "response.incomplete")
    assert done.keys() == added.keys(), "every item added is done"
    assert terminal["response"]["output"] == [done[i] for i in sorted(done)]
    for item in done.values():
        if item["type"] == "function_call":
            assert isinstance(json.loads(item["arguments"]), dict)


@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_stream_follows_openai_rules(case: Path) -> None:
    events, _ = gateway_stream([(case / "gemini_response.sse").read_bytes()], response_options(case))
    check_openai_order(events)


@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_stream_accumulates_in_openai_python(case: Path) -> None:
    """openai-python's own stream state (what `responses.stream()` runs) accepts every event and ends where we end."""
    events, _ = gateway_stream([(case / "gemini_response.sse").read_bytes()], response_options(case))
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=omit)
    for event in events:
        if event["type"] == "error":
            continue
        state.handle_event(construct_type_unchecked(type_=ResponseStreamEvent, value=event))  # type: ignore[arg-type]
    if events[-1]["type"] == "response.completed":
        final = state._completed_response
        assert final is not None
        assert _unparsed(final.to_dict()) == events[-1]["response"]


def _unparsed(value: Any) -> Any:
    """The SDK's object without the fields its parse helpers add (`parsed`, `parsed_arguments`)."""
    if isinstance(value, dict):
        return {k: _unparsed(v) for k, v in value.items() if k not in ("parsed", "parsed_arguments")}
    if isinstance(value, list):
        return [_unparsed(v) for v in value]
    return value


def _twins() -> list[Path]:
    return [c for c in STREAM_CASES if (c / "gemini_response.json").exists()]


@pytest.mark.parametrize("case", _twins(), ids=ids(_twins()))
def test_stream_agrees_with_non_stream_twin(case: Path) -> None:
    """A case holding both forms of one answer: the streamed Response equals the whole one."""
    options = response_options(case)
    events, stored = gateway_stream([(case / "gemini_response.sse").read_bytes()], options)
    ctx = new_context(options)
    whole = to_responses(load(case / "gemini_response.json"), ctx)
    assert stored == ctx.signatures
    assert events[-1]["response"] == whole


@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_stream_fast_path_equals_the_parsed_path(case: Path) -> None:
    """Text deltas made from the unparsed bytes (`feed_payload`) are byte for byte those of the parsed events (`feed_sse`)."""
    options = response_options(case)
    fast, _ = gateway_bytes([(case / "gemini_response.sse").read_bytes()], options)
    parsed = ResponsesStreamTranslator(new_context(options))
    out: list[bytes] = []
    try:
        for event in sse_fixture_events(case):
            if "error" in event:
                raise GatewayError("upstream error")  # (compared up to here)
            out.append(parsed.feed_sse(event))
        out.append(parsed.finish_sse())
    except GatewayError:
        fast = fast[: len(b"".join(out))]
    assert b"".join(out) == fast
