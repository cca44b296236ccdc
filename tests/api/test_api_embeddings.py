"""`POST /v1/embeddings` end to end: the openai SDK -> the gateway -> the fake Gemini API.

The SDK asks for base64 when the caller names no format and decodes it itself;
both that and `encoding_format="float"` must give exactly the fake's vectors.
Long input lists are cut into batches of 100, sent concurrently and put back
in order; `dimensions` and `extra_body.google` reach Google's body; bad input
is a 400 naming the field, and the gateway keeps serving.
"""

from __future__ import annotations

import math
from typing import Any

import openai
import pytest

from app.testing.fake_gemini.embed import embedding_values
from gateway_harness import metric_value

from .api_helpers import assert_openai_error

MODEL = "gemini-embedding-001"


def expected(text: str, dimensions: int | None = None, task_type: str | None = None, title: str | None = None) -> list[float]:
    return embedding_values(MODEL, text, dimensions, task_type, title)


def embed_calls(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["path"].endswith((":batchEmbedContents", ":embedContent", ":predict"))]


def unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector]


def still_serving(client: openai.OpenAI) -> None:
    assert client.embeddings.create(model=MODEL, input="still serving").data[0].embedding == expected("still serving")


# --- the two encodings ------------------------------------------------------------------------------


def test_default_base64_is_decoded_by_the_sdk_to_the_fakes_vectors(client, raw, fake) -> None:
    result = client.embeddings.create(model=MODEL, input=["The food was delicious.", "Der Kellner war nett."])
    assert result.object == "list" and result.model == MODEL
    assert [d.index for d in result.data] == [0, 1] and all(d.object == "embedding" for d in result.data)
    assert result.data[0].embedding == expected("The food was delicious.")  # exactly: float32 both ways
    assert result.data[1].embedding == expected("Der Kellner war nett.")
    assert len(result.data[0].embedding) == 3072
    assert result.usage.prompt_tokens == result.usage.total_tokens == 6 + 6  # Google's promptTokenCount
    (call,) = embed_calls(fake)
    assert call["body"] == {
        "requests": [
            {"model": f"models/{MODEL}", "content": {"role": "user", "parts": [{"text": t}]}}
            for t in ("The food was delicious.", "Der Kellner war nett.")
        ]
    }
    assert call["query"] == {"prettyPrint": "false"}  # Google's answer without indentation: fewer bytes to read
    # On the wire: what the SDK asked for (base64), little-endian float32 strings
    body = raw.post("/v1/embeddings", json={"model": MODEL, "input": "x", "encoding_format": "base64"}).json()
    assert isinstance(body["data"][0]["embedding"], str) and len(body["data"][0]["embedding"]) == 4 * 3072 * 4 // 3


def test_float_gives_the_fakes_numbers_untouched(client, fake) -> None:
    result = client.embeddings.create(model=MODEL, input="hello float", encoding_format="float")
    assert result.data[0].embedding == expected("hello float")


def test_single_string_and_the_short_path(raw, fake) -> None:
    r = raw.post("/embeddings", json={"model": MODEL, "input": "short path", "encoding_format": "float"})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["embedding"] == expected("short path")
    assert r.headers["x-gemini-proxy-attempts"] == "1" and r.headers["x-gemini-proxy-target"] == f"fake/{MODEL}"


# --- batches ------------------------------------------------------------------------------------------


def test_250_inputs_are_three_concurrent_calls_put_back_in_order(client, fake) -> None:
    texts = [f"sentence number {i}" for i in range(250)]
    fake.config(latency_ms=1500)  # every call waits before its answer (longer than the fake takes to compute one)
    result = client.embeddings.create(model=MODEL, input=texts)
    assert [d.index for d in result.data] == list(range(250))
    for d in result.data:
        assert d.embedding == expected(texts[d.index])
    calls = embed_calls(fake)
    sent = sorted(c["body"]["requests"][0]["content"]["parts"][0]["text"] for c in calls)
    assert sent == sorted(["sentence number 0", "sentence number 100", "sentence number 200"])
    assert sorted(len(c["body"]["requests"]) for c in calls) == [50, 100, 100]
    # Concurrent: the last call arrived before the first one was answered (one after the other, never).
    assert max(c["time"] for c in calls) < min(c["finished"] for c in calls)
    assert result.usage.prompt_tokens == sum(math.ceil(len(t) / 4) for t in texts)


def test_a_batch_that_fails_fails_the_request_and_a_retried_one_does_not(client, strict_client, fake) -> None:
    texts = [f"t{i}" for i in range(120)]
    texts[110] = 't110\n#fake {"error": {"status": 400, "message": "* BatchEmbedContentsRequest.requests[10].content: no"}}'
    with pytest.raises(openai.BadRequestError) as caught:
        strict_client.embeddings.create(model=MODEL, input=texts)
    assert caught.value.body["param"] == "input" and "requests[10].content: no" in caught.value.body["message"]
    texts[110] = 't110\n#fake {"fail_times": 1, "error": {"status": 503}}'
    response = client.embeddings.with_raw_response.create(model=MODEL, input=texts)
    result = response.parse()
    assert response.headers["x-gemini-proxy-attempts"] == "3"  # two batches, one of them retried once
    assert result.data[110].embedding == expected("t110") and result.data[0].embedding == expected("t0")
    still_serving(client)


# --- options -------------------------------------------------------------------------------------------


def test_dimensions_become_output_dimensionality_and_unit_vectors(client, fake) -> None:
    result = client.embeddings.create(model=MODEL, input=["a", "b"], dimensions=256)
    assert [r["outputDimensionality"] for r in embed_calls(fake)[0]["body"]["requests"]] == [256, 256]
    for d, text in zip(result.data, "ab", strict=True):
        assert len(d.embedding) == 256
        assert math.isclose(math.hypot(*d.embedding), 1.0, rel_tol=1e-6)  # rescaled, as OpenAI's are
        for got, want in zip(d.embedding, unit(expected(text, 256)), strict=True):
            assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-7)


@pytest.mark.parametrize("wrap", [lambda g: {"google": g}, lambda g: {"extra_body": {"google": g}}], ids=["google", "extra_body"])
def test_task_type_and_title_reach_googles_body(client, fake, wrap) -> None:
    google = {"task_type": "retrieval_document", "title": "Employee handbook"}
    result = client.embeddings.create(model=MODEL, input="Vacation policy", encoding_format="float", extra_body=wrap(google))
    (request,) = embed_calls(fake)[0]["body"]["requests"]
    assert request["taskType"] == "RETRIEVAL_DOCUMENT" and request["title"] == "Employee handbook"
    assert result.data[0].embedding == expected("Vacation policy", task_type="RETRIEVAL_DOCUMENT", title="Employee handbook")


def test_usage_is_estimated_when_google_reports_none(raw, fake) -> None:
    fake.script({"no_usage": True})
    r = raw.post("/v1/embeddings", json={"model": MODEL, "input": ["twelve chars", "abc"]})
    assert r.status_code == 200
    assert r.json()["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert r.headers["x-gemini-proxy-usage"] == "estimated"
    r = raw.post("/v1/embeddings", json={"model": MODEL, "input": "abc"})
    assert "x-gemini-proxy-usage" not in r.headers


def test_embeddings_are_counted_in_the_metrics(gateway, client, fake) -> None:
    before = metric_value(gateway, "gemini_proxy_tokens_total", model=MODEL, type="prompt")
    client.embeddings.create(model=MODEL, input="count me")
    assert metric_value(gateway, "gemini_proxy_requests_total", endpoint="embeddings", model=MODEL, status="200") >= 1
    assert metric_value(gateway, "gemini_proxy_tokens_total", model=MODEL, type="prompt") == before + 2


# --- bad input: a 400 naming the field; nothing reaches Google; the gateway keeps serving ----------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": MODEL, "input": [1, 2, 3]}, "input", "unsupported_value"),
        ({"model": MODEL, "input": [[1, 2], [3]]}, "input", "unsupported_value"),
        ({"model": MODEL, "input": ""}, "input", "invalid_value"),
        ({"model": MODEL, "input": []}, "input", "invalid_value"),
        ({"model": MODEL, "input": ["a", ""]}, "input", "invalid_value"),
        ({"model": MODEL, "input": None}, "input", "invalid_type"),
        ({"model": MODEL}, "input", "missing_required_parameter"),
        ({"input": "a"}, "model", "missing_required_parameter"),
        ({"model": MODEL, "input": "a", "encoding_format": "md5"}, "encoding_format", "invalid_value"),
        ({"model": MODEL, "input": "a", "dimensions": 0}, "dimensions", "invalid_value"),
        ({"model": MODEL, "input": "a", "google": {"task": "x"}}, "google.task", "invalid_value"),
        ({"model": MODEL, "input": ["a"] * 2049}, "input", "invalid_value"),
    ],
)
def test_bad_input(strict_raw, strict_client, fake, body, param, code) -> None:
    assert_openai_error(strict_raw.post("/v1/embeddings", json=body), 400, param=param, code=code, type="invalid_request_error")
    assert embed_calls(fake) == []
    still_serving(strict_client)


def test_token_arrays_through_the_sdk(strict_client, fake) -> None:
    for tokens in ([1, 2, 3], [[1, 2], [3, 4]]):
        with pytest.raises(openai.BadRequestError) as caught:
            strict_client.embeddings.create(model=MODEL, input=tokens)
        assert caught.value.body["param"] == "input" and "token arrays" in caught.value.body["message"]


def test_googles_refusals_name_the_openai_parameter(strict_client, fake) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        strict_client.embeddings.create(model=MODEL, input="a", dimensions=4096)
    assert caught.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as caught:
        strict_client.embeddings.create(model=MODEL, input="x" * 9000)  # over the model's 2048 tokens
    assert caught.value.body["param"] == "input" and caught.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as caught:
        strict_client.embeddings.create(model=MODEL, input="a", extra_body={"google": {"task_type": "fetching"}})
    assert caught.value.body["param"] == "extra_body.google.task_type"
    still_serving(strict_client)


def test_unknown_model_is_404(strict_client, fake) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        strict_client.embeddings.create(model="gemini-embedding-999", input="a")
    assert caught.value.body["param"] == "model" and caught.value.body["code"] == "model_not_found"


def test_a_chat_model_on_embeddings_and_an_embedding_model_on_chat_are_400(strict_client, fake) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        strict_client.embeddings.create(model="gemini-2.5-flash", input="a")
    assert caught.value.body["param"] == "model" and caught.value.body["code"] == "model_not_supported"
    assert "/v1/chat/completions" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        strict_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["param"] == "model" and "POST /v1/embeddings" in caught.value.body["message"]
    assert not any(r["path"].endswith("Content") for r in fake.requests())  # neither reached Google
    with pytest.raises(openai.BadRequestError):  # an alias of a chat model is a chat model
        strict_client.embeddings.create(model="gpt-4o-mini", input="a")
    still_serving(strict_client)


def test_models_list_says_which_endpoints_serve_each_model(strict_client, fake) -> None:
    models = {m.id: m.model_extra["endpoints"] for m in strict_client.models.list()}
    assert models[MODEL] == ["embeddings"]
    assert models["gemini-2.5-flash"] == ["chat"] and models["gpt-4o-mini"] == ["chat"]
    assert strict_client.models.retrieve(MODEL).model_extra["endpoints"] == ["embeddings"]
