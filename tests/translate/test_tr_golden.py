"""Golden fixtures for the pure translator: `tests/golden/chat/<case>/`.

Each case folder holds paired files, compared as PARSED JSON (never as strings):

* request side: `openai_request.json` -> `gemini_request.json` (the body
  `to_gemini` builds) and `call.json` (the rest of the `GeminiCall`: response
  options, signature bypasses, dropped schema keywords), or `error.json`
  (`{"status": ..., "error": {...}}`) for a request that must be refused.
  `meta.json` (optional) gives the Gemini model id used for capabilities
  (`model`), `backend` (`gemini` | `vertex`), capability overrides
  (`capabilities`), the `TranslationEnv` look-ups (`signatures`, `fetched`) and
  `images`.
* response side: `gemini_response.json` -> `openai_response.json` (or
  `openai_error.json` when the answer must become an error), and
  `gemini_response.sse` -> `openai_response.sse`: the exact events the gateway
  sends (chunks from `ChatStreamTranslator`, an error event when the upstream
  reports one, then `data: [DONE]`; the gateway turns an error met before its
  first byte into an HTTP error instead, see app/api/chat.py). Response
  options come from the case's request (when it has one) and then
  `options.json` (ResponseOptions fields). `stored_signatures.json` holds the
  signatures the answer asks the gateway to remember (absent = none).

Every `.sse` golden is also replayed split at every byte offset (two pieces)
and one byte at a time; the output must not change.

Outbound Gemini bodies are validated with `google.genai.types` (they forbid
unknown fields) and with the fake Gemini's strict validator; Gemini fixtures
are validated with `GenerateContentResponse` so they stay realistic.

`UPDATE_GOLDEN=1 pytest tests/translate/test_tr_golden.py` rewrites the
expected files deliberately (review the diff!); the default run only compares.
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

from app.errors import GatewayError
from app.schemas.openai import ChatCompletionRequest
from app.translate.capabilities import capabilities_for
from app.translate.chat_request import GeminiCall, ResponseOptions, TranslationEnv, to_gemini
from app.translate.chat_response import ResponseContext, to_openai
from app.translate.chat_stream import ChatStreamTranscoder, ChatStreamTranslator
from app.upstream.sse import SSEDecoder, parse_payload

from .golden_support import UPDATE, cases, check_optional, check_or_update, error_summary, ids, load, meta
from .tr_oracles import validate_request_body

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "chat"

DEFAULT_MODEL = "gemini-2.5-flash"
COMPLETION_ID = "chatcmpl-golden"
CREATED = 1700000000
DONE = "[DONE]"


REQUEST_CASES = cases(GOLDEN, "openai_request.json")
RESPONSE_CASES = cases(GOLDEN, "gemini_response.json")
STREAM_CASES = cases(GOLDEN, "gemini_response.sse")


# -- file helpers ---------------------------------------------------------------------------


def parse_sse_text(text: str) -> list[Any]:
    """Our gateway's SSE (`data: <json>` events separated by blank lines) -> parsed events."""
    events: list[Any] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        lines = [ln for ln in block.split("\n") if ln and not ln.startswith(":")]
        assert all(ln.startswith("data: ") for ln in lines), f"not a data event: {block!r}"
        data = "\n".join(ln[6:] for ln in lines)
        events.append(DONE if data == DONE else json.loads(data))
    return events


def render_sse(events: list[Any]) -> str:
    return "".join(
        "data: " + (DONE if e == DONE else json.dumps(e, ensure_ascii=False, separators=(",", ":"))) + "\n\n"
        for e in events
    )



SSE = (parse_sse_text, render_sse)

# -- translating a case ---------------------------------------------------------------------


def translate_request(case: Path) -> GeminiCall:
    """Raises GatewayError for a refused request."""
    m = meta(case)
    caps = capabilities_for(m.get("model", DEFAULT_MODEL), None, m.get("capabilities"))
    env = TranslationEnv(
        signatures=m.get("signatures", {}),
        fetched=m.get("fetched", {}),
        vertex=m.get("backend", "gemini") == "vertex",
        images=m.get("images", "audio"),
    )
    req = ChatCompletionRequest.model_validate(load(case / "openai_request.json"))
    return to_gemini(req, caps, env)


def call_summary(call: GeminiCall) -> dict[str, Any]:
    return {
        "stream": call.stream,
        "options": asdict(call.options),
        "signature_bypasses": call.signature_bypasses,
        "dropped_schema_keywords": call.dropped_schema_keywords,
    }


def response_options(case: Path) -> ResponseOptions:
    overrides = load(case / "options.json") if (case / "options.json").exists() else {}
    base: ResponseOptions | None = None
    if (case / "openai_request.json").exists():
        try:
            base = translate_request(case).options
        except GatewayError:
            base = None
    if base is None:
        base = ResponseOptions(model=overrides.get("model", DEFAULT_MODEL))
    return replace(base, **overrides)


def new_context(options: ResponseOptions) -> ResponseContext:
    counter = itertools.count(1)
    return ResponseContext(options, COMPLETION_ID, CREATED, lambda: f"call_golden{next(counter):014d}")


def gateway_stream(pieces: Iterable[bytes], options: ResponseOptions) -> tuple[list[Any], dict[str, str]]:
    """What the gateway's stream body sends for these upstream bytes (`ChatStreamTranscoder`, as app/api/chat.py uses it)."""
    ctx = new_context(options)
    transcoder = ChatStreamTranscoder(ChatStreamTranslator(ctx))
    out: list[Any] = []
    for piece in [*pieces, b""]:  # b"": the end of the body
        out.extend(parse_sse_text(transcoder.feed(piece).decode()))
        if transcoder.error is not None:
            return out, ctx.signatures
    out.extend(parse_sse_text(transcoder.finish().decode()))
    return out, ctx.signatures


def sse_fixture_events(case: Path) -> list[dict[str, Any]]:
    data = (case / "gemini_response.sse").read_bytes()
    decoder = SSEDecoder()
    return decoder.feed(data) + decoder.flush()


# -- tests ----------------------------------------------------------------------------------


def test_golden_folders_are_well_formed() -> None:
    known = {
        "openai_request.json", "gemini_request.json", "call.json", "error.json", "meta.json", "options.json",
        "gemini_response.json", "openai_response.json", "openai_error.json", "stored_signatures.json",
        "gemini_response.sse", "openai_response.sse",
    }  # fmt: skip
    cases = [d for d in GOLDEN.iterdir() if d.is_dir()]
    assert len(cases) >= 60
    for case in cases:
        names = {p.name for p in case.iterdir()}
        assert names <= known, f"{case.name}: unknown files {names - known}"
        assert names & {"openai_request.json", "gemini_response.json", "gemini_response.sse"}, case.name
        if "openai_request.json" in names and not UPDATE:
            assert ("gemini_request.json" in names) != ("error.json" in names), case.name
        for name in names:
            if name.endswith(".json"):
                load(case / name)  # parses


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
    body = json.loads(json.dumps(call.body))  # exactly what goes on the wire
    validate_request_body(body, meta(case).get("backend", "gemini"))


@pytest.mark.parametrize("case", REQUEST_CASES, ids=ids(REQUEST_CASES))
def test_request_translation_does_not_modify_its_input(case: Path) -> None:
    raw = load(case / "openai_request.json")
    req = ChatCompletionRequest.model_validate(raw)
    before = req.model_dump()
    m = meta(case)
    try:
        to_gemini(req, capabilities_for(m.get("model", DEFAULT_MODEL), None, m.get("capabilities")),
                  TranslationEnv(signatures=m.get("signatures", {}), vertex=m.get("backend") == "vertex"))  # fmt: skip
    except GatewayError:
        pass
    assert req.model_dump() == before


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=ids(RESPONSE_CASES))
def test_response(case: Path) -> None:
    ctx = new_context(response_options(case))
    try:
        completion = to_openai(load(case / "gemini_response.json"), ctx)
    except GatewayError as exc:
        check_or_update(case / "openai_error.json", error_summary(exc))
        assert not (case / "openai_response.json").exists()
        return
    check_or_update(case / "openai_response.json", completion)
    assert not (case / "openai_error.json").exists()
    check_optional(case / "stored_signatures.json", ctx.signatures)


@pytest.mark.filterwarnings("ignore:SOME_FUTURE_REASON is not a valid FinishReason")  # an unknown value on purpose
@pytest.mark.parametrize("case", RESPONSE_CASES, ids=ids(RESPONSE_CASES))
def test_response_fixture_is_a_valid_gemini_response(case: Path) -> None:
    gtypes.GenerateContentResponse.model_validate(load(case / "gemini_response.json"))


@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_stream(case: Path) -> None:
    events, stored = gateway_stream([(case / "gemini_response.sse").read_bytes()], response_options(case))
    check_or_update(case / "openai_response.sse", events, sse=SSE)
    if not (case / "gemini_response.json").exists():
        check_optional(case / "stored_signatures.json", stored)


@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_stream_fixture_events_are_valid_gemini_responses(case: Path) -> None:
    events = sse_fixture_events(case)
    assert events
    for event in events:
        if "error" not in event:
            gtypes.GenerateContentResponse.model_validate(event)


@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_stream_encoded_fast_path_equals_the_chunk_objects(case: Path) -> None:
    """`feed_payload` (template bytes for plain text deltas, from the unparsed event) and `feed` (chunk objects) agree."""
    options = response_options(case)
    by_objects = ChatStreamTranslator(new_context(options))
    by_bytes = ChatStreamTranslator(new_context(options))
    decoder = SSEDecoder()
    items = decoder.feed_payloads((case / "gemini_response.sse").read_bytes()) + decoder.flush()
    for item in items:
        event = parse_payload(item) if type(item) is bytes else item
        if event is None:
            continue
        if "error" in event:
            break
        try:
            expected = by_objects.feed(event)
        except GatewayError:
            with pytest.raises(GatewayError):
                by_bytes.feed_sse(event)
            break
        sse = by_bytes.feed_payload(item) if type(item) is bytes else None
        if sse is None:
            sse = by_bytes.feed_sse(event)
        assert parse_sse_text(sse.decode()) == expected
    assert by_bytes.finish() == by_objects.finish()


def _split_runs(data: bytes) -> Iterable[tuple[str, list[bytes]]]:
    for k in range(1, len(data)):
        yield f"split at {k}", [data[:k], data[k:]]
    yield "one byte at a time", [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_stream_does_not_depend_on_chunk_boundaries(case: Path) -> None:
    data = (case / "gemini_response.sse").read_bytes()
    options = response_options(case)
    whole = gateway_stream([data], options)
    expected_events = sse_fixture_events(case)
    for label, pieces in _split_runs(data):
        decoder = SSEDecoder()
        decoded = [e for p in pieces for e in decoder.feed(p)] + decoder.flush()
        assert decoded == expected_events, f"{case.name}: decoded events differ when {label}"
        assert gateway_stream(pieces, options) == whole, f"{case.name}: output differs when {label}"


def _tool_arguments(events: list[Any]) -> dict[tuple[int, int], str]:
    args: dict[tuple[int, int], str] = {}
    for event in events:
        if not isinstance(event, dict) or "choices" not in event:
            continue
        for choice in event["choices"]:
            for call in choice["delta"].get("tool_calls") or ():
                key = (choice["index"], call["index"])
                args[key] = args.get(key, "") + ((call.get("function") or {}).get("arguments") or "")
    return args


@pytest.mark.parametrize("case", STREAM_CASES, ids=ids(STREAM_CASES))
def test_stream_chunks_follow_openai_rules(case: Path) -> None:
    """Role on each choice's first delta, one finish per choice, ids and ids of calls consistent, args parse."""
    events, _ = gateway_stream([(case / "gemini_response.sse").read_bytes()], response_options(case))
    chunks = [e for e in events if isinstance(e, dict) and "choices" in e]
    seen_role: set[int] = set()
    finished: set[int] = set()
    call_ids: dict[tuple[int, int], str] = {}
    for chunk in chunks:
        assert (chunk["id"], chunk["object"], chunk["created"]) == (COMPLETION_ID, "chat.completion.chunk", CREATED)
        for choice in chunk["choices"]:
            i = choice["index"]
            assert i not in finished, "a delta after the choice's finish_reason"
            assert ("role" in choice["delta"]) == (i not in seen_role)
            seen_role.add(i)
            if choice["finish_reason"] is not None:
                finished.add(i)
            for call in choice["delta"].get("tool_calls") or ():
                key = (i, call["index"])
                if key not in call_ids:
                    assert call["id"].startswith("call_") and call["type"] == "function" and call["function"]["name"]
                    call_ids[key] = call["id"]
                else:
                    assert call.get("id", call_ids[key]) == call_ids[key]
    if events and events[-1] == DONE:
        assert finished == seen_role and finished, "every choice must end with a finish_reason"
    for key, text in _tool_arguments(events).items():
        assert isinstance(json.loads(text), dict), f"arguments of tool call {key} do not parse: {text!r}"


def _sse_and_json_twins() -> list[Path]:
    return [c for c in STREAM_CASES if (c / "gemini_response.json").exists()]


@pytest.mark.parametrize("case", _sse_and_json_twins(), ids=ids(_sse_and_json_twins()))
def test_stream_agrees_with_non_stream_twin(case: Path) -> None:
    """A case holding both forms of one answer: the accumulated stream equals the completion."""
    options = response_options(case)
    events, stored = gateway_stream([(case / "gemini_response.sse").read_bytes()], options)
    ctx = new_context(options)
    completion = to_openai(load(case / "gemini_response.json"), ctx)
    assert stored == ctx.signatures
    for choice in completion["choices"]:
        content = "".join(
            c["delta"].get("content") or ""
            for e in events if isinstance(e, dict)
            for c in e.get("choices", ()) if c["index"] == choice["index"]
        )  # fmt: skip
        assert content == (choice["message"]["content"] or "")
        finishes = [
            c["finish_reason"]
            for e in events if isinstance(e, dict)
            for c in e.get("choices", ()) if c["index"] == choice["index"] and c["finish_reason"]
        ]  # fmt: skip
        assert finishes == [choice["finish_reason"]]
        calls = _tool_arguments(events)
        want = [json.loads(tc["function"]["arguments"]) for tc in choice["message"].get("tool_calls") or ()]
        got = [json.loads(v) for (ci, _), v in sorted(calls.items()) if ci == choice["index"]]
        assert got == want
