"""Golden fixtures for the pure images translator: `tests/golden/images/<case>/`.

Each case folder holds paired files, compared as PARSED JSON:

* `openai_request.json`: the fields a client sends (the JSON body of `POST /v1/images/generations`,
  or the form fields of an edit). `meta.json` (optional): the Gemini `model` (default
  gemini-2.5-flash-image), the `backend` (`gemini` | `vertex`), and for an edit `"edit": true`,
  `images` (`[{"base64", "content_type"?}]`, the uploaded files in order) and `files` (the names of
  other file fields sent, such as `mask`). It is read as the endpoint reads it (`plan_images`) and
  translated for one target.
* request side: `gemini_calls.json`, the upstream calls (`{"verb", "body"}`, in image order), or
  `error.json` (`{"status", "error"}`) for a request the gateway refuses.
* response side (optional): `gemini_responses.json`, Google's answer to each of those calls ->
  `openai_response.json` (the `ImagesResponse`, `created` fixed at 1767225600), or `openai_error.json`
  (no image: content policy or no_image).

Outbound bodies pass the fake Gemini's strict checks for their backend and verb (Imagen's
`:predict`: `imagen.check_request`; `generateContent`: the schema validator and the per-model rules,
which check `imageConfig`); `generateContent` answers are valid `google.genai.types.GenerateContentResponse`.

`UPDATE_GOLDEN=1 pytest tests/translate/test_tr_images_golden.py` rewrites the expected files
(review the diff!); the default run only compares.
"""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from google.genai import types as gtypes

from app.errors import GatewayError
from app.testing.fake_gemini import imagen
from app.testing.fake_gemini.catalogue import MODELS
from app.testing.fake_gemini.strictness import check_model_rules
from app.testing.gemini_schema import validate_generate_content
from app.translate.capabilities import capabilities_for
from app.translate.images import ImageCall, ImagePlan, image_calls, plan_images, read_answer, sniff_image, to_openai

from .golden_support import check_call_folders, check_or_update, error_summary, ids, load, meta

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "images"
DEFAULT_MODEL = "gemini-2.5-flash-image"
CREATED = 1767225600
KNOWN_FILES = {
    "openai_request.json", "meta.json", "gemini_calls.json", "error.json", "gemini_responses.json",
    "openai_response.json", "openai_error.json",
}  # fmt: skip

CASES = sorted(d for d in GOLDEN.iterdir() if d.is_dir())  # every folder: the well-formed test checks each
RESPONSE_CASES = [c for c in CASES if (c / "gemini_responses.json").exists()]


def translate(case: Path) -> tuple[ImagePlan, list[ImageCall]]:
    """(the plan, the upstream calls) of a case; raises GatewayError for a refused request."""
    m = meta(case)
    model = m.get("model", DEFAULT_MODEL)
    fields = load(case / "openai_request.json")
    images = [
        sniff_image(base64.b64decode(i["base64"]), i.get("content_type"), f"image[{n}]")
        for n, i in enumerate(m.get("images", []))
    ]
    plan = plan_images(fields, images, edit=m.get("edit", False), files=m.get("files", []))
    return plan, image_calls(plan, model, capabilities_for(model), m.get("backend", "gemini") == "vertex")


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
    backend = m.get("backend", "gemini")
    spec = MODELS[m.get("model", DEFAULT_MODEL)]
    for call in calls:
        body = orjson.loads(orjson.dumps(call.body))  # exactly what goes on the wire
        if call.verb == "predict":
            imagen.check_request(backend, spec, body)
        else:
            validate_generate_content(body, backend)
            check_model_rules(spec, body, backend)


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=ids(RESPONSE_CASES))
def test_response(case: Path) -> None:
    plan, calls = translate(case)
    answers = load(case / "gemini_responses.json")
    assert len(answers) == len(calls), "one answer per call"
    try:
        answer = to_openai(plan, [read_answer(c, a) for c, a in zip(calls, answers, strict=True)], CREATED)
    except GatewayError as exc:
        check_or_update(case / "openai_error.json", error_summary(exc))
        assert not (case / "openai_response.json").exists()
        return
    check_or_update(case / "openai_response.json", answer.body)
    usage = answer.body.get("usage")
    if usage is not None:
        assert (answer.input_tokens, answer.output_tokens) == (usage["input_tokens"], usage["output_tokens"])
    assert not (case / "openai_error.json").exists()


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=ids(RESPONSE_CASES))
def test_response_fixtures_are_valid(case: Path) -> None:
    _, calls = translate(case)
    for call, answer in zip(calls, load(case / "gemini_responses.json"), strict=True):
        if call.verb == "generateContent":
            gtypes.GenerateContentResponse.model_validate(answer)
        else:
            assert set(answer) <= {"predictions", "positivePromptSafetyAttributes"}
