"""The native Gemini routes with the google-genai SDK, unchanged but for `base_url`, on both upstreams.

Every test runs against a Gemini API upstream and a Vertex AI upstream (the
fake, behind a recording tap: tests/api/native_support.py), so that what the
gateway sent upstream and what it answered are compared with what the client
sent and what the fake answered, byte for byte.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from google.genai import errors, types

from app.testing.credentials import write_service_account_file
from gateway_harness import GatewayServer, gateway_settings, metric_value

from .native_support import GATEWAY_KEY, Tap, genai_client

ALIASES = {"fast": "gemini-2.5-flash", "thinker": "gemini-3-pro-preview", "embedder": "gemini-embedding-001"}
RETRY = {"max_attempts": 3, "backoff_initial": 0.01, "backoff_max": 0.05, "max_retry_delay": 2}
VERTEX_VERSIONS = {"v1": "v1", "v1beta": "v1beta1", "v1alpha": "v1beta1"}
# Odd spacing, escapes and a number re-encoding would change: only an untouched body arrives like this.
ODD_GENERATE = (
    '{ "contents" : [ {"role": "user", "parts": [ {"text": "caf\\u00e9 \u2013 na\u00efve"} ] } ] ,\n'
    '  "generationConfig": {"temperature": 0.50, "maxOutputTokens": 64} }'
).encode()
ODD_COUNT = b'{"contents":[{"parts":[{"text":"count   these\\ttokens"}]}]   }'


@dataclass
class Side:
    kind: str  # "gemini" | "vertex"
    server: GatewayServer

    @property
    def url(self) -> str:
        return self.server.url

    def upstream_path(self, version: str, model: str, verb: str) -> str:
        if self.kind == "gemini":
            return f"/{version}/models/{model}:{verb}"
        return (f"/{VERTEX_VERSIONS[version]}/projects/proj-a/locations/us-central1/publishers/google/models/"
                f"{model}:{verb}")


@pytest.fixture(scope="module")
def tap(fake_gemini: Any) -> Iterator[Tap]:
    running = Tap(fake_gemini.url)
    try:
        yield running
    finally:
        running.close()


def _gateway(fake_url: str, upstream: dict[str, Any]) -> GatewayServer:
    return GatewayServer(gateway_settings(
        fake_url, upstreams=[upstream], auth={"client_keys": [GATEWAY_KEY]}, aliases=ALIASES, retry=RETRY,
    ))


@pytest.fixture(scope="module")
def gemini_side(fake_gemini: Any, tap: Tap) -> Iterator[Side]:
    server = _gateway(fake_gemini.url, {"name": "ai", "type": "gemini", "base_url": tap.url, "api_keys": ["test-key"]})
    try:
        yield Side("gemini", server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vertex_side(fake_gemini: Any, tap: Tap, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    sa = write_service_account_file(tmp_path_factory.mktemp("native") / "sa.json", fake_gemini.url + "/token", "proj-a")
    server = _gateway(fake_gemini.url, {
        "name": "vx", "type": "vertex", "project": "proj-a", "location": "us-central1", "base_url": tap.url,
        "credentials_file": str(sa),
    })
    try:
        yield Side("vertex", server)
    finally:
        server.stop()


@pytest.fixture(params=["gemini", "vertex"])
def side(request: pytest.FixtureRequest, fake: Any, tap: Tap) -> Side:
    chosen: Side = request.getfixturevalue(f"{request.param}_side")
    tap.records.clear()
    return chosen


def assert_no_gateway_key_upstream(tap: Tap) -> None:
    for record in tap.records:
        assert GATEWAY_KEY not in json.dumps(record["headers"]) and GATEWAY_KEY not in record["query"], record
        assert "key=" not in record["query"]


def assert_upstream_credential(side: Side, record: dict[str, Any]) -> None:
    if side.kind == "gemini":
        assert record["headers"]["x-goog-api-key"] == "test-key" and "authorization" not in record["headers"]
    else:
        assert record["headers"]["authorization"].startswith("Bearer ") and "x-goog-api-key" not in record["headers"]


# -- google-genai, unchanged ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1beta", "v1"])  # v1: google-genai's own default; v1beta: the usual one
def test_generate_content_through_an_alias(side: Side, tap: Tap, version: str) -> None:
    client, seen = genai_client(side.url, version=version)
    answer = client.models.generate_content(model="fast", contents="hello native")
    assert answer.text == "Echo: hello native"
    assert answer.usage_metadata is not None and answer.usage_metadata.total_token_count
    (record,) = tap.api_records()
    assert record["method"] == "POST" and record["status"] == 200
    assert record["path"] == side.upstream_path(version, "gemini-2.5-flash", "generateContent")
    assert record["body"] == seen.sent[-1]  # the SDK's body, byte for byte
    assert seen.received[-1] == record["answer"]  # and Google's answer
    assert_upstream_credential(side, record)
    assert_no_gateway_key_upstream(tap)


def test_generate_content_stream(side: Side, tap: Tap) -> None:
    client, seen = genai_client(side.url, version="v1beta")
    text = "one two three four five six seven"
    chunks = list(client.models.generate_content_stream(model="fast", contents=f'{text}\n#fake {{"chunks": 3}}'))
    assert len(chunks) == 3
    assert "".join(c.text or "" for c in chunks) == f"Echo: {text}"
    record = tap.last()
    assert record["path"] == side.upstream_path("v1beta", "gemini-2.5-flash", "streamGenerateContent")
    assert record["query"] == "alt=sse" and record["body"] == seen.sent[-1]
    assert_no_gateway_key_upstream(tap)


def test_count_tokens(side: Side, tap: Tap) -> None:
    client, seen = genai_client(side.url)
    counted = client.models.count_tokens(model="fast", contents="count these tokens please")
    assert counted.total_tokens and counted.total_tokens > 0
    assert tap.last()["path"] == side.upstream_path("v1", "gemini-2.5-flash", "countTokens")
    assert tap.last()["body"] == seen.sent[-1]


def test_models_list_and_get(side: Side, tap: Tap) -> None:
    client, _ = genai_client(side.url, version="v1beta")
    names = [m.name for m in client.models.list(config={"page_size": 3})]  # the pager follows pageToken
    assert "models/gemini-2.5-flash" in names and "models/gemini-3-pro-preview" in names
    assert len(names) == len(set(names)) > 3
    first = tap.api_records()[0]
    assert first["method"] == "GET" and first["query"] == "pageSize=3"
    assert first["path"] == ("/v1beta/models" if side.kind == "gemini" else "/v1beta1/publishers/google/models")
    model = client.models.get(model="fast")  # an alias: the resource of the model it names
    assert model.name == "models/gemini-2.5-flash"
    assert tap.last()["path"].endswith("/models/gemini-2.5-flash")
    if side.kind == "gemini":
        assert model.input_token_limit and model.supported_actions and "generateContent" in model.supported_actions
    else:
        assert model.version == "001"
    assert_no_gateway_key_upstream(tap)


def test_embed_content_is_passed_on(side: Side, tap: Tap) -> None:
    """google-genai's embed_content (always batchEmbedContents) through an alias, on both backends."""
    client, seen = genai_client(side.url, version="v1beta")
    result = client.models.embed_content(model="embedder", contents=["first text", "second text"])
    record = tap.last()
    assert record["status"] == 200
    assert result.embeddings is not None and len(result.embeddings) == 2
    assert all(e.values and len(e.values) > 8 for e in result.embeddings)
    assert result.embeddings[0].values != result.embeddings[1].values
    assert record["path"] == side.upstream_path("v1beta", "gemini-embedding-001", "batchEmbedContents")
    # batchEmbedContents names the model again in every request; an alias is renamed there too, and only there
    body = json.loads(record["body"])
    assert [r["model"] for r in body["requests"]] == ["models/gemini-embedding-001"] * 2
    assert [r["content"] for r in body["requests"]] == [r["content"] for r in json.loads(seen.sent[-1])["requests"]]


def test_a_model_named_in_the_body_follows_the_alias(side: Side, tap: Tap) -> None:
    """Google's own curl examples repeat the model in `embedContent`'s body; through an alias it is renamed there."""
    body = {"model": "models/embedder", "content": {"parts": [{"text": "models/embedder stays as written"}]}}
    response = httpx.post(f"{side.url}/v1beta/models/embedder:embedContent", json=body,
                          headers={"x-goog-api-key": GATEWAY_KEY}, timeout=30)
    assert response.status_code == 200, response.text
    assert len(response.json()["embedding"]["values"]) > 8
    sent = json.loads(tap.last()["body"])
    assert sent["model"] == "models/gemini-embedding-001"
    assert sent["content"] == body["content"]


def test_thought_signatures_pass_untouched(side: Side, tap: Tap, fake: Any) -> None:
    client, seen = genai_client(side.url, version="v1beta")
    weather = types.FunctionDeclaration(
        name="get_weather", description="Weather in a city.",
        parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[weather])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    question = types.Content(role="user", parts=[types.Part(text='Weather in Paris?\n#fake {"tool_steps": 1}')])
    first = client.models.generate_content(model="thinker", contents=[question], config=config)
    issued = tap.last()["answer"]
    calls = [p for p in first.candidates[0].content.parts if p.function_call]
    assert calls and calls[0].thought_signature
    signature = json.loads(issued)["candidates"][0]["content"]["parts"]
    signature = next(p["thoughtSignature"] for p in signature if "functionCall" in p)
    reply = types.Content(role="user", parts=[
        types.Part.from_function_response(name="get_weather", response={"temperature_c": 21}),
    ])
    assert seen.received[-1] == issued  # the signature reached the SDK as Google sent it
    second = client.models.generate_content(model="thinker", contents=[question, first.candidates[0].content, reply],
                                            config=config)
    assert second.text
    assert tap.last()["body"] == seen.sent[-1]  # and went back as the SDK sent it
    # (google-genai itself re-encodes signatures as URL-safe base64; Google and the fake accept both spellings)
    sent_back = json.loads(seen.sent[-1])["contents"][1]["parts"]
    sent_back = next(p["thoughtSignature"] for p in sent_back if "functionCall" in p)
    assert base64.urlsafe_b64decode(sent_back) == base64.b64decode(signature)
    assert fake.stats()["signature_bypasses"] == 0
    assert [r["status"] for r in tap.api_records()] == [200, 200]


def test_usage_reaches_the_metrics(side: Side) -> None:
    client, _ = genai_client(side.url)
    before = metric_value(side.server, "gemini_proxy_tokens_total", model="fast", type="prompt")
    client.models.generate_content(model="fast", contents="count me")
    list(client.models.generate_content_stream(model="fast", contents='count me too\n#fake {"chunks": 4}'))
    after = metric_value(side.server, "gemini_proxy_tokens_total", model="fast", type="prompt")
    assert after - before >= 2  # both answers' usageMetadata, read from their tails
    assert metric_value(side.server, "gemini_proxy_requests_total", endpoint="native.streamGenerateContent") >= 1


# -- bytes, both ways --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "verb, query, body, content_type",
    [
        ("generateContent", "", ODD_GENERATE, "application/json"),
        ("countTokens", "", ODD_COUNT, "application/json"),
        ("streamGenerateContent", "alt=sse", ODD_GENERATE, "text/event-stream"),
        ("streamGenerateContent", "", ODD_GENERATE, "application/json"),  # Google's streamed JSON array
    ],
)
def test_bodies_pass_byte_for_byte(side: Side, tap: Tap, verb: str, query: str, body: bytes, content_type: str) -> None:
    url = f"{side.url}/v1beta/models/fast:{verb}?key={GATEWAY_KEY}" + (f"&{query}" if query else "")
    response = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    record = tap.last()
    assert response.status_code == record["status"] == 200, response.text
    assert record["body"] == body
    assert response.content == record["answer"]
    assert response.headers["content-type"].startswith(content_type)
    assert record["query"] == query  # the gateway key left, `alt=sse` stayed
    assert response.headers["x-gemini-proxy-attempts"] == "1"
    assert_no_gateway_key_upstream(tap)


@pytest.mark.parametrize("version", ["v1beta", "v1", "v1alpha"])
def test_the_clients_api_version_is_kept(side: Side, tap: Tap, version: str) -> None:
    response = httpx.post(f"{side.url}/{version}/models/gemini-2.5-flash:countTokens",
                          headers={"x-goog-api-key": GATEWAY_KEY}, content=ODD_COUNT, timeout=30)
    assert response.status_code == 200, response.text
    assert tap.last()["path"] == side.upstream_path(version, "gemini-2.5-flash", "countTokens")


def test_query_parameters_other_than_credentials_pass(side: Side, tap: Tap) -> None:
    query = f"alt=sse&key={GATEWAY_KEY}&%6Bey=x&access_token=t&prettyPrint=false&%24fields=candidates"
    response = httpx.post(f"{side.url}/v1beta/models/fast:streamGenerateContent?{query}", content=ODD_GENERATE,
                          timeout=30)
    assert response.status_code == 200, response.text
    # (the upstream client writes URLs in their normal form: `%24` is sent as the `$` it stands for)
    assert parse_qsl(tap.last()["query"]) == [("alt", "sse"), ("prettyPrint", "false"), ("$fields", "candidates")]


def test_google_errors_pass_through_unchanged(side: Side, tap: Tap) -> None:
    bad = b'{"contents": [{"role": "user", "parts": [{"text": "x"}]}], "bogusField": 1}'
    response = httpx.post(f"{side.url}/v1beta/models/fast:generateContent", content=bad,
                          headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=30)
    record = tap.last()
    assert response.status_code == record["status"] == 400
    assert response.content == record["answer"] and b"bogusField" in response.content
    assert len(tap.api_records()) == 1  # a client error is not retried


def test_google_errors_reach_the_sdk_as_google_errors(side: Side, tap: Tap) -> None:
    client, _ = genai_client(side.url, version="v1beta")
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-2.5-pro", contents="think less",
                                       config={"thinking_config": {"thinking_budget": 0}})
    google = json.loads(tap.last()["answer"])["error"]
    assert info.value.code == 400 and info.value.status == google["status"] == "INVALID_ARGUMENT"
    assert info.value.message == google["message"]
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="gemini-0-nonexistent", contents="hi")
    assert info.value.code == 404 and info.value.message == json.loads(tap.last()["answer"])["error"]["message"]


def test_a_stream_error_from_google_passes_through(side: Side, tap: Tap) -> None:
    client, _ = genai_client(side.url, version="v1beta")
    prompt = 'one two three four five six\n#fake {"chunks": 3, "error": {"status": 500, "after_chunks": 1}}'
    received = []
    with pytest.raises(errors.ServerError) as info:
        for chunk in client.models.generate_content_stream(model="fast", contents=prompt):
            received.append(chunk.text)
    assert len(received) == 1 and info.value.code == 500
    response = httpx.post(f"{side.url}/v1beta/models/fast:streamGenerateContent?alt=sse&key={GATEWAY_KEY}",
                          json={"contents": [{"role": "user", "parts": [{"text": prompt}]}]}, timeout=30)
    assert response.status_code == 200 and response.content == tap.last()["answer"]


def test_retries_apply(side: Side, tap: Tap, request: pytest.FixtureRequest) -> None:
    directive = json.dumps({"fail_times": 1, "fail_key": request.node.name, "error": {"status": 503}})
    response = httpx.post(f"{side.url}/v1beta/models/fast:generateContent?key={GATEWAY_KEY}",
                          json={"contents": [{"role": "user", "parts": [{"text": f"retry me\n#fake {directive}"}]}]},
                          timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["x-gemini-proxy-attempts"] == "2"
    assert [r["status"] for r in tap.api_records()] == [503, 200]
    assert response.content == tap.last()["answer"]
