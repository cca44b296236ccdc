"""The native Gemini routes at their edges: client keys, the gateway's own errors in Google's shape,
`/v1/models` shared with OpenAI's list, bring-your-own-key, and streams that fail after they started."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from google.genai import errors

from .native_support import GATEWAY_KEY, Tap, assert_google_error, genai_client

BODY = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"


@pytest.fixture
def tap(fake: Any) -> Any:
    running = Tap(fake.url)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def keyed(make_gateway: Any, tap: Tap) -> Any:
    return make_gateway(
        auth={"client_keys": [GATEWAY_KEY]},
        upstreams=[{"name": "ai", "type": "gemini", "base_url": tap.url, "api_keys": ["test-key"]}],
        aliases={"fast": "gemini-2.5-flash"},
        retry={"max_attempts": 1, "max_retry_delay": 30},
    )


# -- client keys -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, query",
    [({"x-goog-api-key": GATEWAY_KEY}, ""), ({}, f"?key={GATEWAY_KEY}"), ({"authorization": f"Bearer {GATEWAY_KEY}"}, "")],
    ids=["x-goog-api-key", "query", "bearer"],
)
def test_the_gateway_key_in_each_place_googles_clients_put_it(keyed: Any, tap: Tap, headers: Any, query: str) -> None:
    response = httpx.post(keyed.url + GENERATE + query, json=BODY, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    (record,) = tap.api_records()
    assert record["headers"]["x-goog-api-key"] == "test-key" and record["query"] == ""
    assert "authorization" not in record["headers"]


@pytest.mark.parametrize("path", [GENERATE, "/v1beta/models", "/v1beta/models/gemini-2.5-flash", "/v1beta/files"])
def test_no_key_is_a_401_in_googles_shape(keyed: Any, tap: Tap, path: str) -> None:
    method = "POST" if ":" in path else "GET"
    response = httpx.request(method, keyed.url + path, json=BODY if method == "POST" else None, timeout=30)
    message = assert_google_error(response, 401, "UNAUTHENTICATED")
    assert "x-goog-api-key" in message
    wrong = httpx.request(method, keyed.url + path, headers={"x-goog-api-key": "wrong"}, timeout=30)
    assert_google_error(wrong, 401, "UNAUTHENTICATED")
    assert tap.api_records() == []


def test_the_sdk_with_a_wrong_key_gets_a_client_error(keyed: Any, tap: Tap) -> None:
    client, _ = genai_client(keyed.url, key="not-the-gateway-key")
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model="fast", contents="hi")
    assert info.value.code == 401 and info.value.status == "UNAUTHENTICATED"
    assert tap.api_records() == []


# -- the gateway's own errors, in Google's shape -----------------------------------------------------------


def _post(gw: Any, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(gw.url + path, headers={"x-goog-api-key": GATEWAY_KEY}, timeout=30, **kwargs)


def test_paths_and_methods_the_gateway_does_not_serve(keyed: Any, tap: Tap) -> None:
    auth = {"x-goog-api-key": GATEWAY_KEY}
    assert_google_error(_post(keyed, "/v1beta/models/gemini-2.5-flash:predict", json=BODY), 404, "NOT_FOUND")
    assert_google_error(httpx.get(keyed.url + "/v1beta/files", headers=auth), 404, "NOT_FOUND")
    assert_google_error(httpx.get(keyed.url + "/v1beta/tunedModels/x", headers=auth), 404, "NOT_FOUND")
    wrong_method = httpx.get(keyed.url + GENERATE, headers=auth)
    assert_google_error(wrong_method, 405, "UNIMPLEMENTED")
    assert wrong_method.headers["allow"] == "POST"
    assert_google_error(_post(keyed, "/v1beta/models", json=BODY), 405, "UNIMPLEMENTED")
    delete = httpx.delete(keyed.url + "/v1beta/models/gemini-2.5-flash", headers=auth)
    assert_google_error(delete, 405, "UNIMPLEMENTED")
    assert delete.headers["allow"] == "GET, POST"
    assert tap.api_records() == []


@pytest.mark.parametrize("model", ["a%2F..%2F..%2Ffiles%2Fx", "..", "gemini%3Fkey=x", "x%23y", ""])
def test_a_model_name_that_could_leave_models_is_refused(keyed: Any, tap: Tap, model: str) -> None:
    response = _post(keyed, f"/v1beta/models/{model}:generateContent", json=BODY)
    message = assert_google_error(response, 400, "INVALID_ARGUMENT")
    assert "model" in message
    assert tap.api_records() == []


def test_an_unknown_model_without_passthrough_is_the_gateways_404(make_gateway: Any, tap: Tap) -> None:
    gw = make_gateway(
        passthrough=False, aliases={"fast": "gemini-2.5-flash"},
        upstreams=[{"name": "ai", "type": "gemini", "base_url": tap.url, "api_keys": ["test-key"]}],
    )
    message = assert_google_error(_post(gw, GENERATE, json=BODY), 404, "NOT_FOUND")
    assert "gemini-2.5-flash" in message
    assert _post(gw, "/v1beta/models/fast:generateContent", json=BODY).status_code == 200
    assert len(tap.api_records()) == 1


def test_google_429_passes_on_then_the_resting_key_is_the_gateways_429(keyed: Any, tap: Tap) -> None:
    limited = {"contents": [{"role": "user", "parts": [{"text": '#fake {"error": {"status": 429, "retry_delay": "20s"}}'}]}]}
    first = _post(keyed, GENERATE, json=limited)
    assert first.status_code == 429 and first.content == tap.last()["answer"]  # Google's own body, RetryInfo and all
    assert first.headers["retry-after"] == "20"
    second = _post(keyed, GENERATE, json=BODY)  # the only key rests for this model: nothing is sent
    assert_google_error(second, 429, "RESOURCE_EXHAUSTED")
    assert int(second.headers["retry-after"]) > 10
    assert len(tap.api_records()) == 1


def test_a_stream_that_stalls_ends_with_an_error_event_in_googles_shape(make_gateway: Any, tap: Tap) -> None:
    gw = make_gateway(
        upstreams=[{"name": "ai", "type": "gemini", "base_url": tap.url, "api_keys": ["test-key"]}],
        timeouts={"stream_idle": 0.5},
    )
    stalled = {"contents": [{"role": "user", "parts": [{"text": 'a b c d e f\n#fake {"chunks": 3, "stall_after_chunks": 1}'}]}]}
    response = _post(gw, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", json=stalled)
    assert response.status_code == 200
    events = [e for e in response.content.split(b"\r\n\r\n") if e]
    assert len(events) == 2 and events[0].startswith(b"data: {")
    assert events[1].startswith(b'data: {"error":')
    error = json.loads(events[1][len(b"data: "):])["error"]
    assert set(error) == {"code", "message", "status"} and (error["code"], error["status"]) == (504, "DEADLINE_EXCEEDED")
    client, _ = genai_client(gw.url)  # no client keys: any key will do
    with pytest.raises(errors.ServerError) as info:
        list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=stalled["contents"][0]["parts"][0]["text"]))
    assert info.value.code == 504


# -- /v1/models: OpenAI's list or Google's ------------------------------------------------------------------


def test_v1_models_answers_each_client_in_its_own_shape(keyed: Any, tap: Tap) -> None:
    bearer = {"authorization": f"Bearer {GATEWAY_KEY}"}
    openai_list = httpx.get(keyed.url + "/v1/models", headers=bearer).json()
    assert openai_list["object"] == "list" and "fast" in [m["id"] for m in openai_list["data"]]
    openai_model = httpx.get(keyed.url + "/v1/models/fast", headers=bearer).json()
    assert openai_model == {**openai_model, "id": "fast", "object": "model"}
    tap.records.clear()
    for query, headers in (
        ("", {"x-goog-api-key": GATEWAY_KEY}),
        (f"?key={GATEWAY_KEY}", {}),
        ("?pageSize=2", bearer),
        ("", {**bearer, "x-goog-api-client": "google-genai-sdk/3.6.1"}),
    ):
        google = httpx.get(keyed.url + "/v1/models" + query, headers=headers)
        assert google.status_code == 200 and "models" in google.json() and google.content == tap.last()["answer"]
    google_model = httpx.get(keyed.url + "/v1/models/fast", headers={"x-goog-api-key": GATEWAY_KEY}).json()
    assert google_model["name"] == "models/gemini-2.5-flash"
    generated = httpx.post(keyed.url + "/v1/models/fast:generateContent", json=BODY, headers=bearer)
    assert generated.status_code == 200 and generated.content == tap.last()["answer"]
    # an OpenAI client's unknown URL under /v1 is still OpenAI's 404
    assert set(httpx.get(keyed.url + "/v1/nothing", headers=bearer).json()["error"]) == {"message", "type", "param", "code"}


# -- bring-your-own-key --------------------------------------------------------------------------------------


def test_byok_the_clients_key_is_its_google_key(make_gateway: Any, tap: Tap) -> None:
    gw = make_gateway(auth={"byok": True}, upstreams=[{"name": "ai", "type": "gemini", "base_url": tap.url}])
    for key in ("test-key", "second-key"):
        client, _ = genai_client(gw.url, key=key)
        assert client.models.generate_content(model="gemini-2.5-flash", contents="mine").text == "Echo: mine"
        assert tap.last()["headers"]["x-goog-api-key"] == key
    assert httpx.post(gw.url + GENERATE + "?key=second-key", json=BODY).status_code == 200
    assert tap.last()["headers"]["x-goog-api-key"] == "second-key" and tap.last()["query"] == ""
    refused = httpx.post(gw.url + GENERATE, json=BODY, headers={"x-goog-api-key": "AIza-not-a-key"})
    assert_google_error(refused, 401, "UNAUTHENTICATED")
    assert b"AIza-not-a-key" not in refused.content
