"""Client authentication, `GET /v1/models`, health endpoints and unknown URLs, over real HTTP."""

from __future__ import annotations

import hashlib
import logging

import httpx
import openai
import pytest

from .api_helpers import assert_openai_error, say

MODEL = "gemini-2.5-flash"
KEY_A = "sk-a-0123456789"
KEY_B = "sk-b-secret-only-stored-hashed"
KEY_C = "sk-c-object-form"


@pytest.fixture
def authed(make_gateway, fake):
    return make_gateway(
        auth={"client_keys": [KEY_A, {"key_sha256": hashlib.sha256(KEY_B.encode()).hexdigest()}, {"name": "c", "key": KEY_C}]}
    )


def sdk(gw, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=30)


# -- client keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY_A, KEY_B, KEY_C])
def test_configured_keys_work(authed, fake, key):
    with sdk(authed, key) as c:
        completion = c.chat.completions.create(model=MODEL, messages=say("authorised"))
        assert completion.choices[0].message.content == "Echo: authorised"
        chunks = list(c.chat.completions.create(model=MODEL, messages=say("authorised stream"), stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "Echo: authorised stream"
        assert any(m.id == MODEL for m in c.models.list())
    # the client's key is not the upstream key
    assert {r["api_key"] for r in fake.requests()} <= {"test-key"}


@pytest.mark.parametrize("stream", [False, True])
def test_wrong_key_is_401(authed, fake, stream):
    with sdk(authed, "sk-wrong") as c:
        with pytest.raises(openai.AuthenticationError) as info:
            result = c.chat.completions.create(model=MODEL, messages=say("hi"), stream=stream)
            list(result)
    err = assert_openai_error(info.value.response, 401, type="invalid_request_error", code="invalid_api_key")
    assert "sk-wrong" not in err["message"]
    assert fake.stats()["requests"] == 0


def test_sha256_digest_is_not_itself_a_key(authed, fake):
    with sdk(authed, hashlib.sha256(KEY_B.encode()).hexdigest()) as c:
        with pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model=MODEL, messages=say("hi"))


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Basic c2stYTo="}, {"authorization": "Bearer"}, {"authorization": f"Token {KEY_A}"}],
    ids=["none", "basic", "empty-bearer", "other-scheme"],
)
def test_missing_key_is_401(authed, fake, headers):
    """No key is refused as an unknown one is: 401 `invalid_api_key`, in OpenAI's type for a bad key."""
    r = httpx.post(authed.url + "/v1/chat/completions", json={"model": MODEL, "messages": say("hi")}, headers=headers)
    assert_openai_error(r, 401, type="invalid_request_error", code="invalid_api_key")
    r = httpx.get(authed.url + "/v1/models", headers=headers)
    assert_openai_error(r, 401, type="invalid_request_error", code="invalid_api_key")
    assert fake.stats()["requests"] == 0


def test_auth_checked_before_body(authed, fake):
    """A wrong key gets 401 even with a malformed body: nothing is parsed for strangers."""
    r = httpx.post(authed.url + "/v1/chat/completions", content=b"{not json", headers={"authorization": "Bearer nope"})
    assert_openai_error(r, 401)


def test_bearer_scheme_case_insensitive_and_api_key_header(authed, fake):
    body = {"model": MODEL, "messages": say("header forms")}
    r = httpx.post(authed.url + "/v1/chat/completions", json=body, headers={"authorization": f"bearer {KEY_A}"})
    assert r.status_code == 200, r.text
    r = httpx.post(authed.url + "/v1/chat/completions", json=body, headers={"api-key": KEY_C})
    assert r.status_code == 200, r.text


def test_models_protected(authed, fake):
    with sdk(authed, "sk-nope") as c:
        with pytest.raises(openai.AuthenticationError):
            c.models.list()
        with pytest.raises(openai.AuthenticationError):
            c.models.retrieve(MODEL)
    with sdk(authed, KEY_A) as c:
        assert c.models.retrieve(MODEL).id == MODEL


def test_client_keys_never_logged(make_gateway, fake, caplog):
    caplog.set_level(logging.DEBUG)
    gw = make_gateway(auth={"client_keys": [KEY_A]})
    with sdk(gw, KEY_A) as c:
        c.chat.completions.create(model=MODEL, messages=say("log check"))
    with sdk(gw, KEY_A + "-typo") as c:
        with pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model=MODEL, messages=say("log check"))
    assert KEY_A not in caplog.text


def test_no_auth_configured_accepts_anything(client, fake):
    assert client.chat.completions.create(model=MODEL, messages=say("open")).choices[0].message.content == "Echo: open"


# -- models ---------------------------------------------------------------------------------------------


def test_models_list_shape(strict_client, strict_raw, fake):
    r = strict_raw.get("/v1/models")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert len(ids) == len(set(ids))
    for entry in body["data"]:
        assert set(entry) == {"id", "object", "created", "owned_by", "endpoints"}
        assert entry["object"] == "model" and isinstance(entry["created"], int) and entry["owned_by"]
        assert entry["endpoints"] in (["chat"], ["embeddings"], ["images"], ["chat", "images"])
    assert "demo" not in body
    # the alias, and the fake's models that can generate content
    assert "gpt-4o-mini" in ids
    for model in ("gemini-2.5-flash", "gemini-2.0-flash", "gemini-2.5-pro", "gemini-3-pro-preview", "gemini-3-flash-preview"):
        assert model in ids
    embedding = next(m for m in body["data"] if m["id"] == "gemini-embedding-001")  # embedContent, no generateContent
    assert embedding["endpoints"] == ["embeddings"]
    assert not any(i.startswith("models/") for i in ids)
    sdk_ids = [m.id for m in strict_client.models.list()]
    assert sdk_ids == ids


def test_models_retrieve(strict_client, fake):
    alias = strict_client.models.retrieve("gpt-4o-mini")
    assert alias.id == "gpt-4o-mini" and alias.object == "model"
    model = strict_client.models.retrieve("gemini-3-flash-preview")
    assert model.id == "gemini-3-flash-preview"
    with pytest.raises(openai.NotFoundError) as info:
        strict_client.models.retrieve("gpt-17-ultra")
    assert info.value.code == "model_not_found"


def test_models_without_v1_prefix(strict_raw, fake):
    assert strict_raw.get("/models").json()["object"] == "list"


def test_models_cached(make_gateway, fake):
    gw = make_gateway()
    with sdk(gw, "x") as c:
        first = [m.id for m in c.models.list()]
        second = [m.id for m in c.models.list()]
        c.models.retrieve(MODEL)
    assert first == second
    listings = [r for r in fake.requests() if r["method"] == "GET" and r["path"].endswith("/models")]
    assert len(listings) == 1
    assert listings[0]["api_key"] == "test-key"


def test_listed_models_can_be_called(strict_client, fake):
    ids = [m.id for m in strict_client.models.list()]
    for model in ("gpt-4o-mini", "gemini-2.0-flash", "gemini-3-flash-preview"):
        assert model in ids
        completion = strict_client.chat.completions.create(model=model, messages=say("callable"))
        assert completion.model == model


def test_models_listing_with_upstream_down_still_lists_aliases(make_gateway, fake):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    gw = make_gateway(
        upstreams=[{"name": "dead", "type": "gemini", "base_url": dead, "api_keys": ["k"]}],
        aliases={"gpt-4o-mini": "gemini-2.5-flash"},
    )
    r = httpx.get(gw.url + "/v1/models")
    assert r.status_code == 200
    assert "gpt-4o-mini" in [m["id"] for m in r.json()["data"]]


# -- health and unknown URLs ----------------------------------------------------------------------------


def test_healthz_and_readyz(strict_raw, fake):
    r = strict_raw.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = strict_raw.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["demo"] is False and body["upstreams"] == ["fake"]


def test_health_not_behind_client_auth(authed, fake):
    assert httpx.get(authed.url + "/healthz").status_code == 200
    assert httpx.get(authed.url + "/readyz").status_code == 200


@pytest.mark.parametrize("method, path", [("GET", "/v1/nothing"), ("POST", "/v1/completions/x"), ("GET", "/")])
def test_unknown_url_is_openai_404(strict_raw, fake, method, path):
    r = strict_raw.request(method, path)
    err = assert_openai_error(r, 404)
    assert path in err["message"]
    with pytest.raises(openai.NotFoundError):
        strict_raw_sdk = openai.OpenAI(base_url=str(strict_raw.base_url) + "/v1", api_key="x", max_retries=0)
        strict_raw_sdk.get("/nothing-here", cast_to=object)
