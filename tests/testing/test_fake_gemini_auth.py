"""The fake Gemini server with real clients: google-auth's refresh paths and the google-genai SDK."""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import google.auth.transport.requests
import pytest
from google import genai
from google.auth.exceptions import RefreshError
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from app.testing.credentials import write_authorized_user_file, write_service_account_file
from fake_harness import Harness

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


def service_account_credentials(fake: Harness, tmp_path: Path, scopes: list[str]) -> service_account.Credentials:
    path = write_service_account_file(tmp_path / "sa.json", f"{fake.url}/token", project_id="proj-sa")
    return service_account.Credentials.from_service_account_file(str(path), scopes=scopes)


def test_service_account_refresh_against_the_fake(fake: Harness, tmp_path: Path) -> None:
    creds = service_account_credentials(fake, tmp_path, [CLOUD_PLATFORM])
    assert creds.project_id == "proj-sa"
    creds.refresh(google.auth.transport.requests.Request())
    assert creds.token.startswith("ya29.fake-") and creds.valid
    remaining = creds.expiry - datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    assert 3500 < remaining.total_seconds() <= 3600
    response = fake.vertex_post("gemini-2.5-flash", "with a real token", creds.token, project="proj-sa")
    assert response.status_code == 200
    record = next(r for r in fake.requests() if r["backend"] == "oauth")
    assert record["body"]["claims"]["iss"] == creds.service_account_email
    stats = fake.stats()
    assert stats["token_requests"] == 1 and stats["tokens_issued"] == 1 and stats["tokens_active"] >= 1


def test_service_account_without_cloud_platform_scope_is_refused(fake: Harness, tmp_path: Path) -> None:
    creds = service_account_credentials(fake, tmp_path, ["https://www.googleapis.com/auth/generative-language"])
    with pytest.raises(RefreshError, match="invalid_scope"):
        creds.refresh(google.auth.transport.requests.Request())
    assert fake.stats()["tokens_issued"] == 0


def test_authorized_user_refresh(fake: Harness, tmp_path: Path) -> None:
    path = write_authorized_user_file(tmp_path / "adc.json", f"{fake.url}/token", quota_project_id="proj-q")
    info = json.loads(path.read_text())
    assert info["type"] == "authorized_user"
    creds = user_credentials.Credentials(
        None,
        refresh_token=info["refresh_token"],
        token_uri=info["token_uri"],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
    )
    creds.refresh(google.auth.transport.requests.Request())
    assert fake.vertex_post("gemini-2.5-flash", "hi", creds.token).status_code == 200


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "not.a.jwt"}, "invalid_grant"),
        ({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "only-one-piece"}, "invalid_grant"),
        ({"grant_type": "refresh_token", "client_id": "c", "refresh_token": "r"}, "invalid_request"),
    ],
)
def test_bad_grants(fake: Harness, form: dict[str, str], error: str) -> None:
    response = fake.http.post("/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == error and response.json()["error_description"]


def test_expired_tokens_are_rejected(fake: Harness) -> None:
    token = fake.token()
    assert fake.vertex_post("gemini-2.5-flash", "hi", token).status_code == 200
    assert fake.http.post("/_fake/tokens/expire").json()["expired"] >= 1
    response = fake.vertex_post("gemini-2.5-flash", "hi", token, method="streamGenerateContent", query="?alt=sse")
    assert response.status_code == 401
    assert response.json()["error"]["details"][0]["reason"] == "ACCESS_TOKEN_EXPIRED"


def test_token_lifetime_is_configurable(fake: Harness) -> None:
    fake.config(token_lifetime=1)
    form = {"grant_type": "refresh_token", "client_id": "c", "client_secret": "s", "refresh_token": "r"}
    issued = fake.http.post("/token", data=form).json()
    assert issued["expires_in"] == 1 and issued["token_type"] == "Bearer"
    time.sleep(1.05)
    assert fake.vertex_post("gemini-2.0-flash", "hi", issued["access_token"]).status_code == 401


# --- the google-genai SDK as a client (test-only oracle) ----------------------------------


def sdk(fake: Harness, key: str = "test-key") -> genai.Client:
    options = genai_types.HttpOptions(base_url=fake.url, api_version="v1beta")
    return genai.Client(api_key=key, http_options=options)


def test_genai_sdk_generate_and_stream(fake: Harness) -> None:
    client = sdk(fake)
    assert client.models.generate_content(model="gemini-2.5-flash", contents="hello sdk").text == "Echo: hello sdk"
    pieces = [c.text for c in client.models.generate_content_stream(model="gemini-2.5-flash", contents="a b c d e f")]
    assert len(pieces) == 3 and "".join(pieces) == "Echo: a b c d e f"
    wrong_key = sdk(fake, "wrong")
    with pytest.raises(genai_errors.ClientError) as caught:
        wrong_key.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"


@pytest.mark.parametrize("raw", [False, True])
def test_genai_sdk_sees_mid_stream_errors(fake: Harness, raw: bool) -> None:
    prompt = "a b c d e f\n#fake " + json.dumps({"error": {"status": 503, "after_chunks": 1, "raw": raw}})
    texts, client = [], sdk(fake)
    with pytest.raises(genai_errors.APIError) as caught:
        for chunk in client.models.generate_content_stream(model="gemini-2.0-flash", contents=prompt):
            texts.append(chunk.text)
    assert texts == ["Echo: a b"] and caught.value.code == 503


def test_genai_sdk_function_call_round_trip(fake: Harness) -> None:
    client = sdk(fake)
    tool = genai_types.Tool(
        function_declarations=[
            genai_types.FunctionDeclaration(
                name="lookup",
                parameters_json_schema={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            )
        ]
    )
    config = genai_types.GenerateContentConfig(tools=[tool])
    prompt = genai_types.Content(role="user", parts=[genai_types.Part(text='#fake {"tool_steps": 1}')])
    first = client.models.generate_content(model="gemini-3-pro-preview", contents=[prompt], config=config)
    call_part = first.candidates[0].content.parts[0]
    assert call_part.function_call.name == "lookup" and call_part.thought_signature
    answer = genai_types.Part.from_function_response(name="lookup", response={"output": "42"})
    history = [prompt, first.candidates[0].content, genai_types.Content(role="user", parts=[answer])]
    final = client.models.generate_content(model="gemini-3-pro-preview", contents=history, config=config)
    assert 'lookup={"output":"42"}' in final.text
    assert fake.stats()["signatures_reencoded"] == 1  # the SDK sends bytes back URL-safe


def test_genai_sdk_on_vertex_with_service_account(fake: Harness, tmp_path: Path) -> None:
    creds = service_account_credentials(fake, tmp_path, [CLOUD_PLATFORM])
    client = genai.Client(
        vertexai=True,
        project="proj-sa",
        location="us-central1",
        credentials=creds,
        http_options=genai_types.HttpOptions(base_url=fake.url),
    )
    response = client.models.generate_content(model="gemini-2.5-flash", contents="hello vertex")
    assert response.text == "Echo: hello vertex"
    vertex = [r for r in fake.requests() if r["backend"] == "vertex"]
    assert vertex and vertex[0]["project"] == "proj-sa" and vertex[0]["token"] == creds.token
