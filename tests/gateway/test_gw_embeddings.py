"""Embeddings on Vertex AI (Vertex's own shapes) and across a route's targets.

Vertex takes `:embedContent` for one input and `:batchEmbedContents` for more
(the options inside `embedContentConfig`), and `:predict` with `instances` for
the older text-embedding models; each batch is built for the target that
serves it, so a route may fall back from the Gemini API to Vertex.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from app.testing.credentials import write_service_account_file
from app.testing.fake_gemini.embed import embedding_values
from gateway_harness import GatewayServer, gateway_settings

from .gw_support import gemini, oai, vertex

MODEL = "gemini-embedding-001"


@pytest.fixture(scope="module")
def vertex_gw(fake_gemini: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    sa = write_service_account_file(tmp_path_factory.mktemp("vx") / "sa.json", fake_gemini.url + "/token")
    server = GatewayServer(
        gateway_settings(fake_gemini.url, upstreams=[vertex("vx", fake_gemini.url, sa, project="emb-proj")])
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def vclient(vertex_gw: GatewayServer, fake: Any) -> Iterator[openai.OpenAI]:
    with oai(vertex_gw) as client:
        yield client


def vertex_calls(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["backend"] == "vertex"]


def verb(record: dict[str, Any]) -> str:
    return record["path"].rsplit(":", 1)[1]


def test_one_input_is_embed_content_in_vertexs_shape(vclient, fake) -> None:
    result = vclient.embeddings.create(
        model=f"google/{MODEL}", input="alone", extra_body={"google": {"task_type": "QUESTION_ANSWERING"}}
    )
    assert result.model == f"google/{MODEL}"
    assert result.data[0].embedding == embedding_values(MODEL, "alone", task_type="QUESTION_ANSWERING")
    assert result.usage.prompt_tokens == 2
    (call,) = vertex_calls(fake)
    assert verb(call) == "embedContent" and call["project"] == "emb-proj" and call["status"] == 200
    assert call["query"] == {"prettyPrint": "false"}  # a system parameter of every Google API, Vertex's too
    assert call["path"].startswith("/v1/projects/emb-proj/locations/us-central1/publishers/google/models/")
    assert call["body"] == {
        "content": {"role": "user", "parts": [{"text": "alone"}]},
        "embedContentConfig": {"taskType": "QUESTION_ANSWERING", "autoTruncate": False},
    }


def test_many_inputs_are_batches_of_100_then_embed_content_for_a_last_single(vclient, fake) -> None:
    texts = [f"vertex text {i}" for i in range(201)]
    result = vclient.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.index for d in result.data] == list(range(201))
    assert all(d.embedding == embedding_values(MODEL, texts[d.index]) for d in result.data)
    calls = vertex_calls(fake)
    assert sorted(verb(c) for c in calls) == ["batchEmbedContents", "batchEmbedContents", "embedContent"]
    for call in calls:
        if verb(call) == "batchEmbedContents":
            assert len(call["body"]["requests"]) == 100
            first = call["body"]["requests"][0]
            assert set(first) == {"content", "embedContentConfig"}  # no `model` per entry
            assert first["embedContentConfig"] == {"autoTruncate": False}


def test_dimensions_and_title_on_vertex(vclient, fake) -> None:
    google = {"task_type": "RETRIEVAL_DOCUMENT", "title": "Doc"}
    result = vclient.embeddings.create(model=MODEL, input=["a", "b"], dimensions=64, extra_body={"google": google})
    (call,) = vertex_calls(fake)
    assert verb(call) == "batchEmbedContents"
    assert call["body"]["requests"][1]["embedContentConfig"] == {
        "taskType": "RETRIEVAL_DOCUMENT", "title": "Doc", "outputDimensionality": 64, "autoTruncate": False,
    }
    for d, text in zip(result.data, "ab", strict=True):
        raw = embedding_values(MODEL, text, 64, "RETRIEVAL_DOCUMENT", "Doc")
        norm = math.hypot(*raw)
        assert all(math.isclose(g, w / norm, rel_tol=1e-6, abs_tol=1e-7) for g, w in zip(d.embedding, raw, strict=True))


def test_text_embedding_models_use_predict_with_instances(vclient, fake) -> None:
    google = {"task_type": "CLUSTERING", "title": "ignored unless a document"}
    result = vclient.embeddings.create(model="text-embedding-005", input=["x", "yy"], extra_body={"google": google})
    assert [d.embedding for d in result.data] == [
        embedding_values("text-embedding-005", t, None, "CLUSTERING", google["title"]) for t in ("x", "yy")
    ]
    assert len(result.data[0].embedding) == 768
    assert result.usage.prompt_tokens == 2  # Σ statistics.token_count
    (call,) = vertex_calls(fake)
    assert verb(call) == "predict"
    assert call["body"] == {
        "instances": [{"content": t, "task_type": "CLUSTERING", "title": google["title"]} for t in ("x", "yy")],
        "parameters": {"autoTruncate": False},
    }


def test_predict_batches_stay_under_its_token_limit(vclient, fake) -> None:
    """Vertex's :predict takes at most 20,000 input tokens a call: 100 texts of ~1000 tokens go in several calls,
    each under the limit counted from above (a token per byte: digits and rare characters can come to that),
    answered in input order."""
    texts = [f"{i} " + "word " * 800 for i in range(100)]
    result = vclient.embeddings.create(model="text-embedding-005", input=texts)
    assert [d.index for d in result.data] == list(range(100))
    assert [d.embedding for d in result.data] == [embedding_values("text-embedding-005", t, None, None, None) for t in texts]
    calls = vertex_calls(fake)
    assert len(calls) > 1 and all(verb(c) == "predict" for c in calls)
    sent = [i["content"] for c in calls for i in c["body"]["instances"]]
    assert sorted(sent) == sorted(texts)
    assert all(sum(len(i["content"]) for i in c["body"]["instances"]) <= 20_000 for c in calls)


def test_vertex_errors(vclient, fake) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        vclient.embeddings.create(model="gemini-embedding-999", input="a")
    assert caught.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as caught:
        vclient.embeddings.create(model=MODEL, input=[[1, 2]])
    assert caught.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as caught:
        vclient.embeddings.create(model=MODEL, input="")
    assert caught.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as caught:
        vclient.embeddings.create(model=MODEL, input="a", dimensions=5000)
    assert caught.value.body["param"] == "dimensions"
    # over the model's limit (2048 tokens an input; :predict also 20,000 a call): a 400 as on OpenAI, where Vertex
    # would truncate the text
    for model, text in ((MODEL, "x" * 9000), ("text-embedding-005", "x" * 9000), ("text-embedding-005", "x" * 90_000)):
        with pytest.raises(openai.BadRequestError) as caught:
            vclient.embeddings.create(model=model, input=["fits", text])
        assert caught.value.body["param"] == "input" and caught.value.body["code"] == "context_length_exceeded"


def test_a_route_falls_back_from_the_gemini_api_to_vertex_in_vertexs_shape(make_gateway, fake, sa_file) -> None:
    gw = make_gateway(
        upstreams=[gemini("ai", fake.url, "test-key"), vertex("vx", fake.url, sa_file)],
        models=[{"name": "embed", "targets": [
            {"upstream": "ai", "model": "text-embedding-005"},  # not on the Gemini API: 404, next target
            {"upstream": "vx", "model": "text-embedding-005", "priority": 1},
        ]}],
    )  # fmt: skip
    with oai(gw) as client:
        response = client.embeddings.with_raw_response.create(model="embed", input=["a", "b"])
    result = response.parse()
    assert [d.embedding for d in result.data] == [embedding_values("text-embedding-005", t) for t in "ab"]
    assert response.headers["x-gemini-proxy-target"] == "vx/text-embedding-005"
    first, second = [r for r in fake.requests() if r["backend"] in ("gemini", "vertex") and r.get("model")]
    assert verb(first) == "batchEmbedContents" and first["status"] == 404
    assert verb(second) == "predict" and second["status"] == 200


def test_an_upstream_that_refuses_prettyprint_is_asked_without_it(make_gateway, fake) -> None:
    """Google takes `prettyPrint` on every REST API; something in between that refuses it (a strict proxy) costs
    one retry, and the gateway asks without it from then on."""
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key")])
    refusal = 'Invalid JSON payload received. Unknown name "prettyPrint": Cannot bind query parameter.'
    fake.script({"error": {"status": 400, "message": refusal, "status_name": "INVALID_ARGUMENT"}})
    with oai(gw) as client:
        first = client.embeddings.create(model=MODEL, input=["a", "b"], encoding_format="float")
        second = client.embeddings.create(model=MODEL, input=["c", "d"], encoding_format="float")
    assert [d.embedding for d in first.data] == [embedding_values(MODEL, t) for t in "ab"]
    assert [d.embedding for d in second.data] == [embedding_values(MODEL, t) for t in "cd"]
    calls = [r for r in fake.requests() if r["backend"] == "gemini" and r.get("model")]
    assert [(c["query"], c["status"]) for c in calls] == [({"prettyPrint": "false"}, 400), ({}, 200), ({}, 200)]


def test_only_the_upstream_that_refused_prettyprint_is_asked_without_it(make_gateway, fake) -> None:
    """Two upstreams: the one behind a strict proxy loses the parameter, the other keeps its compact answers."""
    gw = make_gateway(
        upstreams=[gemini("strict", fake.url, "test-key"), gemini("plain", fake.url, "test-key")],
        models=[{"name": "via-strict", "targets": [{"upstream": "strict", "model": MODEL}]},
                {"name": "via-plain", "targets": [{"upstream": "plain", "model": MODEL}]}],
    )  # fmt: skip
    refusal = 'Invalid JSON payload received. Unknown name "prettyPrint": Cannot bind query parameter.'
    fake.script({"error": {"status": 400, "message": refusal, "status_name": "INVALID_ARGUMENT"}})
    with oai(gw) as client:
        for model in ("via-strict", "via-plain", "via-strict", "via-plain"):
            result = client.embeddings.create(model=model, input=["a"], encoding_format="float")
            assert result.data[0].embedding == embedding_values(MODEL, "a")
    calls = [(c["query"], c["status"]) for c in fake.requests() if c["backend"] == "gemini" and c.get("model")]
    compact, plain = {"prettyPrint": "false"}, {}
    assert calls == [(compact, 400), (plain, 200), (compact, 200), (plain, 200), (compact, 200)]


def test_another_400_is_not_taken_for_a_refused_prettyprint(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key")])
    fake.script({"error": {"status": 400, "message": "Request contains an invalid argument.", "status_name": "INVALID_ARGUMENT"}})
    with oai(gw) as client:
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model=MODEL, input=["a", "b"])
        client.embeddings.create(model=MODEL, input=["a", "b"])
    calls = [r for r in fake.requests() if r["backend"] == "gemini" and r.get("model")]
    assert [c["query"] for c in calls] == [{"prettyPrint": "false"}] * 2
