"""Golden fixtures for the pure embeddings translator: `tests/golden/embeddings/<case>/`.

Each case folder holds paired files, compared as PARSED JSON:

* `openai_request.json`: the body a client sends to `POST /v1/embeddings`. It is read as the
  endpoint reads it (`parse_body`, then `plan_embeddings`), cut into batches and translated for one
  target. `meta.json` (optional) names the Gemini model id (`model`, default gemini-embedding-001)
  and the `backend` (`gemini` | `vertex`).
* request side: `gemini_calls.json`, the upstream calls the request becomes, one per batch
  (`{"verb", "body"}`, in input order), or `error.json` (`{"status", "error"}`) for a request the
  gateway refuses.
* response side (optional): `gemini_responses.json`, Google's answer to each of those calls ->
  `openai_response.json` (the body the client gets) and `headers.json` (the extra answer headers;
  absent = none), or `openai_error.json` when the answers cannot be read.

Outbound bodies are checked by the fake Gemini's strict validator for their backend and verb
(what Google refuses, the fake refuses); every vector of the Gemini fixtures by google-genai's
`ContentEmbedding` (it forbids unknown fields).

`UPDATE_GOLDEN=1 pytest tests/translate/test_tr_embeddings_golden.py` rewrites the expected files
(review the diff!); the default run only compares.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.genai import types as gtypes

from app.api.validation import parse_body
from app.errors import GatewayError
from app.schemas.openai import EmbeddingRequest
from app.testing.fake_gemini.catalogue import MODELS
from app.testing.fake_gemini.embed import check_request
from app.translate import embeddings, float32
from app.translate.capabilities import capabilities_for
from app.translate.embeddings import EmbedCall, batches, embed_call, plan_embeddings, read_batch, to_openai

from .golden_support import check_call_folders, check_optional, check_or_update, error_summary, ids, load, meta

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "embeddings"
DEFAULT_MODEL = "gemini-embedding-001"
KNOWN_FILES = {
    "openai_request.json", "meta.json", "gemini_calls.json", "error.json", "gemini_responses.json",
    "openai_response.json", "headers.json", "openai_error.json",
}  # fmt: skip

CASES = sorted(d for d in GOLDEN.iterdir() if d.is_dir())  # every folder: the well-formed test checks each
RESPONSE_CASES = [c for c in CASES if (c / "gemini_responses.json").exists()]


def translate(case: Path) -> tuple[Any, list[EmbedCall]]:
    """(the plan, the upstream calls) of a case; raises GatewayError for a refused request."""
    m = meta(case)
    model = m.get("model", DEFAULT_MODEL)
    plan = plan_embeddings(parse_body((case / "openai_request.json").read_bytes(), EmbeddingRequest))
    caps = capabilities_for(model)
    vertex = m.get("backend", "gemini") == "vertex"
    return plan, [embed_call(plan, texts, model, caps, vertex) for texts in batches(plan)]


def test_golden_folders_are_well_formed() -> None:
    check_call_folders(CASES, KNOWN_FILES)


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_request(case: Path) -> None:
    try:
        _, calls = translate(case)
    except GatewayError as exc:
        check_or_update(case / "error.json", error_summary(exc))
        return
    check_or_update(case / "gemini_calls.json", [{"verb": c.verb, "body": c.body} for c in calls])


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_calls_pass_the_fakes_strict_validation(case: Path) -> None:
    try:
        _, calls = translate(case)
    except GatewayError:
        return
    m = meta(case)
    spec = MODELS[m.get("model", DEFAULT_MODEL)]
    for call in calls:
        body = orjson.loads(orjson.dumps(call.body))  # exactly what goes on the wire
        items = check_request(m.get("backend", "gemini"), call.verb, spec, body)
        assert len(items) == call.count


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=ids(RESPONSE_CASES))
def test_response(case: Path) -> None:
    plan, calls = translate(case)
    answers = load(case / "gemini_responses.json")
    assert len(answers) == len(calls), "one answer per call"
    try:
        answer = to_openai(plan, [read_batch(call, answer) for call, answer in zip(calls, answers, strict=True)])
    except GatewayError as exc:
        check_or_update(case / "openai_error.json", error_summary(exc))
        assert not (case / "openai_response.json").exists()
        return
    body = json.loads(answer.body)
    check_or_update(case / "openai_response.json", body)
    check_optional(case / "headers.json", answer.headers)
    assert answer.prompt_tokens == body["usage"]["prompt_tokens"]
    assert not (case / "openai_error.json").exists()


READERS = {"stdlib": float32.arrays_float32_base64_stdlib, "simdjson": float32.arrays_float32_base64_simdjson}


@pytest.mark.parametrize("reader", READERS.values(), ids=READERS.keys())
@pytest.mark.parametrize("option", [0, orjson.OPT_INDENT_2], ids=["compact", "pretty"])
@pytest.mark.parametrize("case", RESPONSE_CASES, ids=ids(RESPONSE_CASES))
def test_answers_read_from_their_bytes_give_the_same_response(
    case: Path, option: int, reader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway reads Google's answer bytes (scanned, not parsed, where it can): same result as parsing them,
    whichever float32 reader turns the scanned arrays into base64 (translate/float32.py)."""
    assert reader is not None, "the test extra installs the speedups"
    monkeypatch.setattr(embeddings, "arrays_float32_base64", reader)
    plan, calls = translate(case)
    answers = load(case / "gemini_responses.json")
    try:
        expected = to_openai(plan, [read_batch(c, a) for c, a in zip(calls, answers, strict=True)])
    except GatewayError as exc:
        with pytest.raises(GatewayError) as caught:
            to_openai(plan, [read_batch(c, orjson.dumps(a, option=option)) for c, a in zip(calls, answers, strict=True)])
        assert caught.value.body() == exc.body()
        return
    got = to_openai(plan, [read_batch(c, orjson.dumps(a, option=option)) for c, a in zip(calls, answers, strict=True)])
    assert json.loads(got.body) == json.loads(expected.body)
    assert (got.prompt_tokens, got.headers) == (expected.prompt_tokens, expected.headers)


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=ids(RESPONSE_CASES))
def test_response_fixture_vectors_are_valid(case: Path) -> None:
    for answer in load(case / "gemini_responses.json"):
        items = list(answer.get("embeddings", []))
        if "embedding" in answer:
            items.append(answer["embedding"])
        items += [p["embeddings"] for p in answer.get("predictions", [])]
        for item in items:
            if "values" in item:
                gtypes.ContentEmbedding.model_validate({"values": item["values"]})
