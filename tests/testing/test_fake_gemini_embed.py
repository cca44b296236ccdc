"""The fake's embedding calls: `:embedContent` / `:batchEmbedContents` on both backends, Vertex `:predict`.

google-genai is the oracle for the shapes: what it sends must be accepted, what
the fake answers must parse, on the Gemini API and on Vertex AI (service-account
credentials through the fake's token endpoint). Then the refusals Google makes,
the vectors themselves and the directives.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import types as genai_types
from google.oauth2 import service_account

from app.testing.credentials import write_service_account_file
from app.testing.fake_gemini.catalogue import MODELS
from app.testing.fake_gemini.embed import embedding_values
from fake_harness import Harness

MODEL = "gemini-embedding-001"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
KEY = {"x-goog-api-key": "test-key"}


def gemini_sdk(fake: Harness) -> genai.Client:
    return genai.Client(api_key="test-key", http_options=genai_types.HttpOptions(base_url=fake.url, api_version="v1beta"))


def vertex_sdk(fake: Harness, tmp_path: Path) -> genai.Client:
    path = write_service_account_file(tmp_path / "sa.json", f"{fake.url}/token", project_id="proj-e")
    creds = service_account.Credentials.from_service_account_file(str(path), scopes=[CLOUD_PLATFORM])
    return genai.Client(
        vertexai=True, project="proj-e", location="us-central1", credentials=creds,
        http_options=genai_types.HttpOptions(base_url=fake.url),
    )


def entry(text: str, model: str = MODEL, **options: Any) -> dict[str, Any]:
    return {"model": f"models/{model}", "content": {"role": "user", "parts": [{"text": text}]}, **options}


def batch(fake: Harness, requests: list[dict[str, Any]], model: str = MODEL) -> httpx.Response:
    return fake.http.post(f"/v1beta/models/{model}:batchEmbedContents", json={"requests": requests}, headers=KEY)


def vertex(fake: Harness, token: str, model: str, verb: str, body: Any) -> httpx.Response:
    path = f"/v1beta1/projects/p/locations/us-central1/publishers/google/models/{model}:{verb}"
    return fake.http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})


def message(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


# --- google-genai as the oracle ----------------------------------------------------------------


def test_genai_embeds_on_the_gemini_api(fake: Harness) -> None:
    config = genai_types.EmbedContentConfig(task_type="RETRIEVAL_DOCUMENT", title="Doc", output_dimensionality=16)
    client = gemini_sdk(fake)  # kept in a variable: the SDK closes its transport when the client is collected
    result = client.models.embed_content(model=MODEL, contents=["first text", "second text"], config=config)
    assert [e.values for e in result.embeddings] == [
        embedding_values(MODEL, t, 16, "RETRIEVAL_DOCUMENT", "Doc") for t in ("first text", "second text")
    ]
    (call,) = fake.requests()
    assert call["path"] == f"/v1beta/models/{MODEL}:batchEmbedContents" and call["status"] == 200
    assert call["body"]["requests"][0] == entry("first text", taskType="RETRIEVAL_DOCUMENT", title="Doc", outputDimensionality=16)
    assert fake.stats()["embed_requests"] == 1 and fake.stats()["embeddings_returned"] == 2


def test_genai_embeds_on_vertex_with_each_verb(fake: Harness, tmp_path: Path) -> None:
    client = vertex_sdk(fake, tmp_path)
    config = genai_types.EmbedContentConfig(task_type="SEMANTIC_SIMILARITY", output_dimensionality=8)
    one = client.models.embed_content(model=MODEL, contents="alone", config=config)
    two = client.models.embed_content(model=MODEL, contents=["a", "b"], config=config)
    legacy = client.models.embed_content(model="text-embedding-005", contents=["x", "y"], config=config)
    assert one.embeddings[0].values == embedding_values(MODEL, "alone", 8, "SEMANTIC_SIMILARITY")
    assert [e.values for e in two.embeddings] == [embedding_values(MODEL, t, 8, "SEMANTIC_SIMILARITY") for t in "ab"]
    assert [e.values for e in legacy.embeddings] == [
        embedding_values("text-embedding-005", t, 8, "SEMANTIC_SIMILARITY") for t in "xy"
    ]
    assert one.embeddings[0].statistics.token_count == 2  # from usageMetadata, as the SDK reads it
    assert legacy.embeddings[0].statistics.token_count == 1 and legacy.metadata.billable_character_count == 8
    verbs = [r["path"].rsplit(":", 1)[1] for r in fake.requests() if r["backend"] == "vertex"]
    assert verbs == ["embedContent", "batchEmbedContents", "predict"]
    bodies = [r["body"] for r in fake.requests() if r["backend"] == "vertex"]
    assert bodies[0]["embedContentConfig"] == {"taskType": "SEMANTIC_SIMILARITY", "outputDimensionality": 8}
    assert bodies[2]["instances"][0]["task_type"] == "SEMANTIC_SIMILARITY"


# --- answers and usage ---------------------------------------------------------------------------


def test_gemini_answers_carry_usage_unless_told_not_to(fake: Harness) -> None:
    answer = batch(fake, [entry("abcdefgh"), entry("abcd")]).json()
    assert answer["usageMetadata"] == {"promptTokenCount": 3, "promptTokenDetails": [{"modality": "TEXT", "tokenCount": 3}]}
    fake.script({"no_usage": True})
    assert "usageMetadata" not in batch(fake, [entry("abcd")]).json()
    single = fake.http.post(f"/v1beta/models/{MODEL}:embedContent", json=entry("solo"), headers=KEY).json()
    assert single["embedding"]["values"] == embedding_values(MODEL, "solo")


def test_vectors_are_deterministic_unit_float32_prefixes() -> None:
    full = embedding_values(MODEL, "hello")
    assert len(full) == MODELS[MODEL].embed_dims == 3072
    assert math.isclose(math.hypot(*full), 1.0, rel_tol=1e-5)
    assert embedding_values(MODEL, "hello", 256) == full[:256]  # truncated, not rescaled
    assert embedding_values(MODEL, "hello") == full
    assert embedding_values(MODEL, "hello", task_type="RETRIEVAL_QUERY") != full
    assert embedding_values(MODEL, "hello", task_type="RETRIEVAL_QUERY", title="T") == embedding_values(
        MODEL, "hello", task_type="RETRIEVAL_QUERY"
    )  # a title counts only for documents
    assert embedding_values(MODEL, "hello", task_type="RETRIEVAL_DOCUMENT", title="T") != embedding_values(
        MODEL, "hello", task_type="RETRIEVAL_DOCUMENT"
    )
    import array

    assert array.array("f", full).tolist() == full  # every value is a float32


# --- refusals --------------------------------------------------------------------------------------


def test_batch_limit_is_100(fake: Harness) -> None:
    assert batch(fake, [entry(f"t{i}") for i in range(100)]).status_code == 200
    assert message(batch(fake, [entry(f"t{i}") for i in range(101)])) == (
        "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n"
    )
    assert batch(fake, []).status_code == 400


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        ([entry("a", model="gemini-2.5-flash")], "the model of each request must be the model of the URL"),
        ([{"content": {"parts": [{"text": "a"}]}}], "the model of each request must be the model of the URL"),
        ([entry("a", taskType="FETCH")], "Invalid value at 'requests[0].task_type'"),
        ([entry("a", embedContentConfig={"taskType": "CLUSTERING"})], 'Unknown name "embedContentConfig"'),
        ([entry("a", autoTruncate=False)], 'Unknown name "autoTruncate"'),
        ([entry("")], "the text to embed is empty"),
        ([{"model": f"models/{MODEL}", "content": {"parts": []}}], "must not be empty"),
        ([{"model": f"models/{MODEL}", "content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]}}],
         "only text parts"),
        ([entry("a", outputDimensionality=3073)], "Output dimensionality 3073 is out of range"),
        ([entry("x" * 8200)], "The input token count (2050) exceeds the maximum number of tokens allowed (2048)."),
    ],
)
def test_gemini_refusals(fake: Harness, requests: list[dict[str, Any]], expected: str) -> None:
    assert expected in message(batch(fake, requests))


def test_models_that_do_not_embed_are_404(fake: Harness) -> None:
    assert message(batch(fake, [entry("a", model="gemini-2.5-flash")], model="gemini-2.5-flash"), 404) == (
        "models/gemini-2.5-flash is not found for API version v1beta, or is not supported for batchEmbedContents. "
        "Call ListModels to see the list of available models and their supported methods."
    )
    assert batch(fake, [entry("a", model="text-embedding-005")], model="text-embedding-005").status_code == 404
    assert fake.http.post(f"/v1beta/models/{MODEL}:predict", json={}, headers=KEY).status_code == 404


def test_vertex_shapes_and_refusals(fake: Harness) -> None:
    token = fake.token()
    content = {"role": "user", "parts": [{"text": "a"}]}
    ok = vertex(fake, token, MODEL, "embedContent", {"content": content, "embedContentConfig": {"title": "t"}})
    assert ok.status_code == 200 and ok.json()["truncated"] is False
    assert 'Unknown name "taskType"' in message(vertex(fake, token, MODEL, "embedContent", {"content": content, "taskType": "CLUSTERING"}))
    too_many = {"requests": [{"content": content}] * 101}
    assert "At most 100 requests" in message(vertex(fake, token, MODEL, "batchEmbedContents", too_many))
    assert "at most 1 instance" in message(vertex(fake, token, MODEL, "predict", {"instances": [{"content": "a"}] * 2}))
    instances = {"instances": [{"content": "a"}] * 251}
    assert "at most 250 instance" in message(vertex(fake, token, "text-embedding-005", "predict", instances))
    heavy = {"instances": [{"content": "word " * 800}] * 21}  # 21 x 1000 tokens: over :predict's 20,000 a call
    assert "up to 20000 input tokens" in message(vertex(fake, token, "text-embedding-005", "predict", heavy))
    heavy["instances"].pop()
    assert vertex(fake, token, "text-embedding-005", "predict", heavy).status_code == 200
    assert "use predict" in message(vertex(fake, token, "text-embedding-005", "embedContent", {"content": content}))
    assert vertex(fake, token, "gemini-2.5-flash", "embedContent", {"content": content}).status_code == 404
    assert vertex(fake, token, MODEL, "embedContent", {"content": content}).status_code == 200
    long = {"role": "user", "parts": [{"text": "x" * 9000}]}
    cut = vertex(fake, token, MODEL, "embedContent", {"content": long}).json()
    assert cut["truncated"] is True and cut["usageMetadata"]["promptTokenCount"] == 2048
    refused = vertex(fake, token, MODEL, "embedContent", {"content": long, "embedContentConfig": {"autoTruncate": False}})
    assert "exceeds the maximum number of tokens" in message(refused)


def test_listings_show_each_backends_models(fake: Harness) -> None:
    gemini = [m["name"] for m in fake.http.get("/v1beta/models", headers=KEY).json()["models"]]
    assert f"models/{MODEL}" in gemini and "models/text-embedding-005" not in gemini
    token = fake.token()
    listed = fake.http.get("/v1beta1/publishers/google/models", headers={"Authorization": f"Bearer {token}"}).json()
    names = [m["name"] for m in listed["publisherModels"]]
    assert "publishers/google/models/text-embedding-005" in names and f"publishers/google/models/{MODEL}" in names


# --- directives --------------------------------------------------------------------------------------


def test_inline_directive_fails_the_whole_batch_and_is_stripped(fake: Harness) -> None:
    failed = batch(fake, [entry("a"), entry('b\n#fake {"error": {"status": 429}}')])
    assert failed.status_code == 429 and failed.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    fake.script({"fail_times": 1, "error": {"status": 503}})
    assert batch(fake, [entry("a")]).status_code == 503
    answer = batch(fake, [entry('b\n#fake {"first_byte_delay_ms": 1}')]).json()
    assert answer["embeddings"][0]["values"] == embedding_values(MODEL, "b")
    assert fake.requests()[-1]["directive"] == {"first_byte_delay_ms": 1}
