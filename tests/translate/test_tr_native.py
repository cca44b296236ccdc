"""The native routes' pure parts: query filtering, batch model renaming, Vertex model resources, usage
sniffing, native URLs, path parsing and which `/v1/models` requests are Google's."""

from __future__ import annotations

import json

import orjson
import pytest

from app.api.native import NativeGemini, parse_path
from app.errors import GatewayError
from app.translate.native import (
    forwarded_query,
    rename_body_models,
    sniff_usage,
    vertex_model_to_gemini,
    vertex_models_to_gemini,
)
from app.upstream.client import Endpoint

USAGE = {"promptTokenCount": 7, "candidatesTokenCount": 3, "totalTokenCount": 30, "thoughtsTokenCount": 20,
         "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 7}]}


@pytest.mark.parametrize(
    "query, forwarded",
    [
        (b"", ""),
        (b"alt=sse", "?alt=sse"),
        (b"key=secret", ""),
        (b"key=secret&alt=sse", "?alt=sse"),
        (b"alt=sse&key=secret", "?alt=sse"),
        (b"pageSize=5&key=a&pageToken=b%3D%3D&access_token=t", "?pageSize=5&pageToken=b%3D%3D"),
        (b"%6Bey=x&k%65y=y&alt=sse&&", "?alt=sse"),  # spelt with escapes, still a credential
        (b"keys=1&monkey=2&key", "?keys=1&monkey=2"),
    ],
)
def test_forwarded_query_drops_credentials_only(query: bytes, forwarded: str) -> None:
    assert forwarded_query(query) == forwarded


def test_batch_models_renamed_only_where_they_name_the_alias() -> None:
    body = orjson.dumps({"requests": [
        {"model": "models/embedder", "content": {"parts": [{"text": "models/embedder"}]}},
        {"model": "embedder", "content": {"parts": [{"text": "b"}]}},
        {"model": "models/other", "content": {"parts": [{"text": "c"}]}},
    ]})
    renamed = json.loads(rename_body_models(body, "batchEmbedContents", "embedder", "gemini-embedding-001"))
    assert [r["model"] for r in renamed["requests"]] == ["models/gemini-embedding-001"] * 2 + ["models/other"]
    assert renamed["requests"][0]["content"]["parts"][0]["text"] == "models/embedder"
    untouched = b'{"requests": [ {"model": "models/x", "content": {}} ]}'
    assert rename_body_models(untouched, "batchEmbedContents", "embedder", "gemini-embedding-001") is untouched
    for odd in (b"not json", b"[1]", b'{"requests": 3}'):
        assert rename_body_models(odd, "batchEmbedContents", "embedder", "m") is odd


@pytest.mark.parametrize(("verb", "body", "path"), [
    ("embedContent", {"model": "models/embedder", "content": {"parts": [{"text": "embedder"}]}}, ("model",)),
    ("embedContent", {"model": "embedder", "content": {"parts": [{"text": "x"}]}}, ("model",)),
    ("countTokens", {"generateContentRequest": {"model": "models/embedder", "contents": []}},
     ("generateContentRequest", "model")),
])
def test_the_model_named_in_the_body_of_other_verbs_is_renamed(verb: str, body: dict, path: tuple[str, ...]) -> None:
    renamed = json.loads(rename_body_models(orjson.dumps(body), verb, "embedder", "gemini-embedding-001"))
    found = renamed
    for key in path:
        found = found[key]
    assert found == "models/gemini-embedding-001"
    if verb == "embedContent":
        assert renamed["content"] == body["content"]  # (text naming the alias is the client's, untouched)


def test_bodies_without_the_alias_or_of_other_verbs_pass_untouched() -> None:
    for verb, body in (
        ("embedContent", b'{"model": "models/other", "content": {}}'),
        ("embedContent", b'{"content": {}}'),
        ("countTokens", b'{"contents": []}'),
        ("countTokens", b'{"generateContentRequest": "odd"}'),
        ("generateContent", b'{"model": "models/embedder", "contents": []}'),
        ("streamGenerateContent", b'{"model": "embedder"}'),
        ("embedContent", b"[1]"),
    ):
        assert rename_body_models(body, verb, "embedder", "gemini-embedding-001") is body


def test_vertex_publisher_models_as_gemini_models() -> None:
    page = {"publisherModels": [{"name": "publishers/google/models/gemini-2.5-flash", "versionId": "001",
                                 "launchStage": "GA"}, {"name": "publishers/google/models/imagen-4"}],
            "nextPageToken": "t"}
    assert vertex_models_to_gemini(page) == {
        "models": [
            {"name": "models/gemini-2.5-flash", "baseModelId": "gemini-2.5-flash", "displayName": "gemini-2.5-flash",
             "version": "001"},
            {"name": "models/imagen-4", "baseModelId": "imagen-4", "displayName": "imagen-4"},
        ],
        "nextPageToken": "t",
    }
    assert vertex_models_to_gemini({}) == {"models": []}
    assert vertex_model_to_gemini({"name": "publishers/google/models/m"})["name"] == "models/m"


def _answer(text: str, **extra: object) -> bytes:
    return orjson.dumps({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}}],
                         "usageMetadata": USAGE, "modelVersion": "gemini-2.5-flash-001", **extra})


def test_sniff_usage_reads_the_last_answer() -> None:
    assert sniff_usage(_answer("hi")) == (USAGE, "gemini-2.5-flash-001")
    pretty = json.dumps(json.loads(_answer("hi")), indent=2).encode()  # Google's pretty-printed form
    assert sniff_usage(pretty) == (USAGE, "gemini-2.5-flash-001")
    first = orjson.dumps({"usageMetadata": {"promptTokenCount": 1}, "modelVersion": "old"})
    stream = b"data: " + first + b"\r\n\r\ndata: " + _answer("end") + b"\r\n\r\n"
    assert sniff_usage(stream) == (USAGE, "gemini-2.5-flash-001")
    array = b"[" + first + b",\n" + _answer("end") + b"\n]"
    assert sniff_usage(array) == (USAGE, "gemini-2.5-flash-001")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b'{"candidates": []}',
        _answer("x")[: _answer("x").index(b'"thoughtsTokenCount"')],  # cut inside the usage: unknown, never a guess
        b'{"text": "usageMetadata"}',
        _answer('he said "usageMetadata": {"promptTokenCount": 999}').replace(b'"usageMetadata":{', b'"usage":{'),
    ],
)
def test_sniff_usage_unknown_rather_than_wrong(data: bytes) -> None:
    usage, _ = sniff_usage(data)
    assert usage is None


def test_a_key_quoted_in_text_is_not_taken_for_the_answers() -> None:
    data = _answer('"usageMetadata": {"promptTokenCount": 999}')
    assert sniff_usage(data)[0] == USAGE


def test_native_urls_keep_the_clients_version() -> None:
    gemini = Endpoint.gemini("http://g.test/v1beta")
    assert gemini.native_url("v1alpha", "m", "countTokens") == "http://g.test/v1alpha/models/m:countTokens"
    assert gemini.native_model_url("v1") == "http://g.test/v1/models"
    assert gemini.native_model_url("v1beta", "m") == "http://g.test/v1beta/models/m"
    vertex = Endpoint.vertex("p", "us", base_url=None)
    prefix = "https://aiplatform.us.rep.googleapis.com"
    assert vertex.native_url("v1", "m", "generateContent") == (
        f"{prefix}/v1/projects/p/locations/us/publishers/google/models/m:generateContent"
    )
    assert vertex.native_url("v1beta", "m", "embedContent").startswith(f"{prefix}/v1beta1/projects/p/locations/us/")
    assert vertex.native_url("v1alpha", "m", "x").startswith(f"{prefix}/v1beta1/")
    assert vertex.native_model_url("v1") == f"{prefix}/v1beta1/publishers/google/models"
    assert vertex.native_model_url("v1", "m") == f"{prefix}/v1beta1/publishers/google/models/m"
    assert vertex.generate_url("m") == f"{prefix}/v1/projects/p/locations/us/publishers/google/models/m:generateContent"


@pytest.mark.parametrize(
    "method, path, parsed",
    [
        ("POST", "/v1beta/models/gemini-2.5-flash:generateContent", ("v1beta", "gemini-2.5-flash", "generateContent")),
        ("POST", "/v1/models/team/alias:countTokens", ("v1", "team/alias", "countTokens")),
        ("GET", "/v1alpha/models", ("v1alpha", "", "")),
        ("GET", "/v1beta/models/", ("v1beta", "", "")),
        ("GET", "/v1beta/models/gemini-2.5-flash", ("v1beta", "gemini-2.5-flash", "")),
    ],
)
def test_parse_path(method: str, path: str, parsed: tuple[str, str, str]) -> None:
    assert parse_path(method, path) == parsed


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("POST", "/v1beta/models/m:predict", 404),
        ("POST", "/v1beta/files", 404),
        ("POST", "/v1beta1/models/m:generateContent", 404),
        ("GET", "/v1/modelsx", 404),
        ("GET", "/v1beta/models/m:generateContent", 405),
        ("POST", "/v1beta/models/m", 405),
        ("POST", "/v1beta/models", 405),
        ("POST", "/v1beta/models/:generateContent", 400),
    ],
)
def test_parse_path_refusals(method: str, path: str, status: int) -> None:
    with pytest.raises(GatewayError) as info:
        parse_path(method, path)
    assert info.value.status == status


@pytest.mark.parametrize(
    "method, path, headers, query, claimed",
    [
        ("GET", "/v1beta/models", [], b"", True),
        ("DELETE", "/v1alpha/models/x", [], b"", True),
        ("POST", "/v1/models/x:generateContent", [(b"authorization", b"Bearer k")], b"", True),
        ("GET", "/v1/models", [(b"authorization", b"Bearer k")], b"", False),
        ("GET", "/v1/models/x", [(b"authorization", b"Bearer k")], b"", False),
        ("DELETE", "/v1/models/x", [(b"x-goog-api-key", b"k")], b"", False),
        ("GET", "/v1/models", [(b"x-goog-api-key", b"k")], b"", True),
        ("GET", "/v1/models", [(b"x-goog-api-client", b"google-genai-sdk/3.6.1")], b"", True),
        ("GET", "/v1/models", [], b"key=k", True),
        ("GET", "/v1/models", [], b"pageSize=3", True),
        ("GET", "/v1/models", [], b"foo=1&pageToken=t", True),
        ("GET", "/v1/models", [], b"monkey=1", False),
    ],
)
def test_which_requests_are_googles(method: str, path: str, headers: list, query: bytes, claimed: bool) -> None:
    scope = {"method": method, "path": path, "headers": headers, "query_string": query}
    assert NativeGemini.claims(NativeGemini.__new__(NativeGemini), scope) is claimed
