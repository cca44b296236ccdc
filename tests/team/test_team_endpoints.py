"""Every endpoint checks the key's models before Google is called: chat (test_team_keys.py), embeddings,
the native Gemini routes (403 in Google's shape; their model listing keeps only the allowed models)."""

from __future__ import annotations

import httpx
import openai
import pytest

from .team_support import sdk

EMBEDDING = "gemini-embedding-001"


@pytest.fixture
def narrow_key(admin) -> str:
    created = admin.post("/admin/keys", json={"name": "narrow", "models": ["gemini-2.5-flash", "gemini-embedding-*"]})
    assert created.status_code == 201
    return str(created.json()["key"])


def test_embeddings(team_gateway, narrow_key, fake):
    with sdk(team_gateway.url, narrow_key) as client:
        assert len(client.embeddings.create(model=EMBEDDING, input="a").data) == 1
        with pytest.raises(openai.PermissionDeniedError) as info:
            client.embeddings.create(model="text-embedding-3-small", input="a")
    error = info.value.response.json()["error"]
    assert error["code"] == "model_not_allowed" and "`text-embedding-3-small`" in error["message"]
    assert len([r for r in fake.requests() if "embed" in r["path"].lower()]) == 1


def test_native_routes(team_gateway, narrow_key, fake):
    headers = {"x-goog-api-key": narrow_key}
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    ok = httpx.post(f"{team_gateway.url}/v1beta/models/gemini-2.5-flash:generateContent", json=body, headers=headers)
    assert ok.status_code == 200, ok.text
    for verb in ("generateContent", "streamGenerateContent?alt=sse", "countTokens"):
        refused = httpx.post(f"{team_gateway.url}/v1beta/models/gemini-2.5-pro:{verb}", json=body, headers=headers)
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert error["status"] == "PERMISSION_DENIED" and "`gemini-2.5-pro`" in error["message"]
    assert httpx.get(f"{team_gateway.url}/v1beta/models/gemini-2.5-pro", headers=headers).status_code == 403
    assert httpx.get(f"{team_gateway.url}/v1beta/models/gemini-2.5-flash", headers=headers).status_code == 200
    listing = httpx.get(f"{team_gateway.url}/v1beta/models", headers=headers)
    assert listing.status_code == 200
    names = {m["name"] for m in listing.json()["models"]}
    assert "models/gemini-2.5-flash" in names and "models/gemini-2.5-pro" not in names
    assert all(n == "models/gemini-2.5-flash" or n.startswith("models/gemini-embedding-") for n in names)
    assert not [r for r in fake.requests() if "gemini-2.5-pro" in r["path"]]  # nothing refused reached Google
    assert httpx.get(f"{team_gateway.url}/v1beta/models", headers={"x-goog-api-key": "wrong"}).status_code == 401
