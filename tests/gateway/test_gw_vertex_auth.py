"""Vertex AI credentials through google-auth, for real, against the fake's token endpoint.

Service-account files (a real RS256-signed JWT), authorized-user files
(refresh-token grant), ADC through `GOOGLE_APPLICATION_CREDENTIALS`, zero-config
from Google's standard variables (also through the real CLI), token caching and
refresh (google-auth counts a token as expired 3 min 45 s early), one refresh
however many requests wait, off the event loop, and a token endpoint that fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from app.settings import load_settings
from app.testing.credentials import write_authorized_user_file, write_service_account_file
from app.upstream.auth import CLOUD_PLATFORM_SCOPE, GoogleCredentialsAuth, load_google_credentials
from gateway_harness import GatewayServer

from .gw_support import msg, oai, vertex

VERTEX_PATH = "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}"


def _token_requests(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["backend"] == "oauth"]


def _vertex_requests(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["backend"] == "vertex"]


def test_service_account_file_signs_a_jwt_and_the_token_is_cached(make_gateway, fake, sa_file) -> None:
    gw = make_gateway(upstreams=[vertex("vx", fake.url, sa_file, project="proj-a", location="europe-west4")])
    with oai(gw) as client:
        first = client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=msg("hello"))
        second = client.chat.completions.create(model="gemini-2.5-flash", messages=msg("again"))
    assert first.parse().choices[0].message.content == "Echo: hello"
    assert first.headers["x-gemini-proxy-target"] == "vx/gemini-2.5-flash"
    assert second.choices[0].message.content == "Echo: again"

    tokens = _token_requests(fake)
    assert len(tokens) == 1, "the token must be cached between requests"
    grant = tokens[0]["body"]
    assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert grant["claims"]["iss"] == "fake-gemini@proj-a.iam.gserviceaccount.com"
    assert CLOUD_PLATFORM_SCOPE in grant["claims"]["scope"].split()
    issued = tokens[0]["token"]

    calls = _vertex_requests(fake)
    assert [c["path"] for c in calls] == [
        VERTEX_PATH.format(project="proj-a", location="europe-west4", model="gemini-2.5-flash", method="generateContent")
    ] * 2
    assert {c["token"] for c in calls} == {issued}
    assert all(c["status"] == 200 for c in calls)


def test_token_seen_as_expired_by_google_auth_is_refreshed_before_the_next_request(make_gateway, fake, sa_file) -> None:
    # A lifetime under google-auth's 3 min 45 s margin: every token is "expired" as soon as it arrives.
    fake.config(token_lifetime=60)
    gw = make_gateway(upstreams=[vertex("vx", fake.url, sa_file)])
    with oai(gw) as client:
        client.chat.completions.create(model="gemini-2.5-flash", messages=msg("one"))
        assert fake.stats()["token_requests"] == 1
        client.chat.completions.create(model="gemini-2.5-flash", messages=msg("two"))
        assert fake.stats()["token_requests"] == 2, "an expired token must be refreshed before use"
        fake.config(token_lifetime=3600)
        client.chat.completions.create(model="gemini-2.5-flash", messages=msg("three"))
        client.chat.completions.create(model="gemini-2.5-flash", messages=msg("four"))
    assert fake.stats()["token_requests"] == 3, "a fresh one-hour token is reused"
    calls = _vertex_requests(fake)
    tokens = [t["token"] for t in _token_requests(fake)]
    assert [c["token"] for c in calls] == [tokens[0], tokens[1], tokens[2], tokens[2]]
    assert all(c["status"] == 200 for c in calls)


@pytest.mark.anyio
async def test_concurrent_requests_on_an_expired_token_share_one_refresh(make_gateway, fake, sa_file) -> None:
    fake.config(token_lifetime=60)
    gw = make_gateway(upstreams=[vertex("vx", fake.url, sa_file)])
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=30) as client:
        await client.chat.completions.create(model="gemini-2.5-flash", messages=msg("warm up"))
        assert fake.stats()["token_requests"] == 1
        fake.config(token_lifetime=3600)  # the cached token is expired for google-auth; the next one is not
        n = 24
        results = await asyncio.gather(
            *(
                client.chat.completions.create(model="gemini-2.5-flash", messages=msg(f"q{i}"), stream=i % 2 == 0)
                for i in range(n)
            )
        )
        texts = []
        for i, result in enumerate(results):
            if i % 2 == 0:
                texts.append("".join([c.choices[0].delta.content or "" async for c in result if c.choices]))
            else:
                texts.append(result.choices[0].message.content)
    assert texts == [f"Echo: q{i}" for i in range(n)]
    assert fake.stats()["token_requests"] == 2, "one refresh for all the waiting requests"
    new_token = _token_requests(fake)[-1]["token"]
    calls = _vertex_requests(fake)[1:]
    assert len(calls) == n and {c["token"] for c in calls} == {new_token}


@pytest.mark.anyio
async def test_refresh_runs_once_off_the_event_loop(fake, sa_file) -> None:
    """Unit level, with google-auth's real credentials and transport, slowed down on purpose."""
    auth = GoogleCredentialsAuth(load_google_credentials(str(sa_file)))
    real_request = auth._request
    threads: list[int] = []

    def slow_request(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        time.sleep(0.3)  # a blocking token endpoint: would freeze the loop if run on it
        return real_request(*args, **kwargs)

    auth._request = slow_request
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        headers = await asyncio.gather(*(auth.headers() for _ in range(16)))
    finally:
        ticking.cancel()
    assert len(threads) == 1 and auth.refreshes == 1
    assert threads[0] != threading.get_ident(), "the refresh must run in a worker thread"
    assert ticks >= 10, "the event loop kept running during the refresh"
    assert len({h["authorization"] for h in headers}) == 1
    assert headers[0]["authorization"] == "Bearer " + _token_requests(fake)[-1]["token"]
    assert fake.stats()["token_requests"] == 1


def test_token_rejected_by_google_is_refreshed_and_the_call_retried(make_gateway, fake, sa_file) -> None:
    """google-auth still thinks the token is valid, Google says ACCESS_TOKEN_EXPIRED (revoked, clock skew)."""
    gw = make_gateway(upstreams=[vertex("vx", fake.url, sa_file)])
    with oai(gw) as client:
        client.chat.completions.create(model="gemini-2.5-flash", messages=msg("before"))
        assert fake.http.post("/_fake/tokens/expire").json()["expired"] >= 1
        after = client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=msg("after"))
        assert after.parse().choices[0].message.content == "Echo: after"
        stream = client.chat.completions.create(model="gemini-2.5-flash", messages=msg("streamed"), stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: streamed"
    assert fake.stats()["token_requests"] == 2
    statuses = [c["status"] for c in _vertex_requests(fake)]
    assert statuses == [200, 401, 200, 200]


@pytest.mark.anyio
async def test_many_requests_refused_at_once_share_one_refresh(make_gateway, fake, sa_file, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    gw = make_gateway(upstreams=[vertex("vx", fake.url, sa_file)])
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, timeout=30) as client:
        await client.chat.completions.create(model="gemini-2.5-flash", messages=msg("warm up"))
        fake.http.post("/_fake/tokens/expire")
        answers = await asyncio.gather(
            *(client.chat.completions.create(model="gemini-2.5-flash", messages=msg(f"r{i}")) for i in range(12))
        )
    assert [a.choices[0].message.content for a in answers] == [f"Echo: r{i}" for i in range(12)]
    assert fake.stats()["token_requests"] == 2, "one refresh for every request that saw the token refused"
    tokens = [t["token"] for t in _token_requests(fake)]
    for record in caplog.records:
        for token in tokens:
            assert token not in record.getMessage(), "an access token reached the log"


@pytest.mark.parametrize("where", ["missing path", "closed port"])
def test_token_endpoint_failure_is_a_502_without_details_and_logged(
    make_gateway, fake, tmp_path, caplog, where
) -> None:
    if where == "missing path":
        token_uri = fake.url + "/no-such-token-endpoint"
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            token_uri = f"http://127.0.0.1:{s.getsockname()[1]}/token"
    sa = write_service_account_file(tmp_path / "sa.json", token_uri, project_id="proj-b")
    gw = make_gateway(upstreams=[vertex("vx", fake.url, sa, project="proj-b")])
    caplog.set_level(logging.INFO)
    with oai(gw) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("hi"))
        stream_error = None
        try:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("hi"), stream=True)
        except openai.APIStatusError as exc:
            stream_error = exc
    for exc in (info.value, stream_error):
        assert exc is not None and exc.status_code == 502
        body = exc.body
        assert body["code"] == "upstream_auth_failed" and body["type"] == "server_error"
        text = str(exc.response.text)
        assert "token" not in text.lower() and "127.0.0.1" not in text and "proj-b" not in text
    assert _vertex_requests(fake) == [], "no call goes to Vertex without a token"
    logged = [r for r in caplog.records if r.name.startswith("gemini_proxy") and r.levelno >= logging.ERROR]
    assert any("could not be refreshed" in r.getMessage() for r in logged)
    for record in caplog.records:
        assert "PRIVATE KEY" not in record.getMessage() and "BEGIN" not in record.getMessage()


def test_authorized_user_credentials_use_the_files_token_uri(make_gateway, fake, tmp_path) -> None:
    path = write_authorized_user_file(
        tmp_path / "adc.json", fake.url + "/token", refresh_token="rt-123", quota_project_id="billing-proj"
    )
    gw = make_gateway(upstreams=[vertex("vx", fake.url, path, project="proj-c", location="global")])
    with oai(gw) as client:
        answer = client.chat.completions.create(model="gemini-2.5-flash", messages=msg("user creds"))
    assert answer.choices[0].message.content == "Echo: user creds"
    (grant,) = _token_requests(fake)
    assert grant["body"]["grant_type"] == "refresh_token"
    assert grant["body"]["refresh_token"] == "rt-123"
    assert grant["body"]["client_id"] == "fake-client-id.apps.googleusercontent.com"
    (call,) = _vertex_requests(fake)
    assert call["status"] == 200 and call["token"] == grant["token"]
    assert call["headers"].get("x-goog-user-project") == "billing-proj"
    assert call["path"] == VERTEX_PATH.format(
        project="proj-c", location="global", model="gemini-2.5-flash", method="generateContent"
    )


def test_application_default_credentials_from_environment(make_gateway, fake, sa_file, monkeypatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(sa_file))
    gw = make_gateway(upstreams=[vertex("vx", fake.url, None)])  # no credentials_file: ADC
    with oai(gw) as client:
        answer = client.chat.completions.create(model="gemini-2.5-flash", messages=msg("adc"))
    assert answer.choices[0].message.content == "Echo: adc"
    assert len(_token_requests(fake)) == 1
    assert _token_requests(fake)[0]["body"]["claims"]["iss"] == "fake-gemini@proj-a.iam.gserviceaccount.com"


def test_application_default_credentials_authorized_user(fake, tmp_path, monkeypatch) -> None:
    path = write_authorized_user_file(tmp_path / "adc.json", fake.url + "/token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    auth = GoogleCredentialsAuth(load_google_credentials(None))
    headers = asyncio.run(auth.headers())
    assert headers["authorization"] == "Bearer " + _token_requests(fake)[-1]["token"]


def _zero_config_env(fake: Any, sa_file: Path) -> dict[str, str]:
    return {
        "GOOGLE_CLOUD_PROJECT": "zero-proj",
        "GOOGLE_CLOUD_LOCATION": "asia-northeast1",
        "GOOGLE_APPLICATION_CREDENTIALS": str(sa_file),
        "VERTEX_BASE_URL": fake.url,
    }


def test_zero_config_vertex_from_standard_variables(fake, sa_file) -> None:
    settings = load_settings(environ=_zero_config_env(fake, sa_file))
    assert not settings.demo
    (up,) = settings.upstreams
    assert (up.type, up.project, up.location, up.base_url, up.credentials_file) == (
        "vertex", "zero-proj", "asia-northeast1", fake.url, str(sa_file)
    )
    server = GatewayServer(settings)
    try:
        with oai(server) as client:
            answer = client.chat.completions.create(model="google/gemini-2.5-flash", messages=msg("zero"))
    finally:
        server.stop()
    assert answer.choices[0].message.content == "Echo: zero"
    assert answer.model == "google/gemini-2.5-flash"
    (call,) = _vertex_requests(fake)
    assert call["path"] == VERTEX_PATH.format(
        project="zero-proj", location="asia-northeast1", model="gemini-2.5-flash", method="generateContent"
    )


def test_zero_config_location_defaults_to_global_and_both_backends_can_coexist(fake, sa_file) -> None:
    env = {"GOOGLE_CLOUD_PROJECT": "p", "GOOGLE_APPLICATION_CREDENTIALS": str(sa_file), "GEMINI_API_KEY": "k1,k2"}
    settings = load_settings(environ=env)
    assert [(u.name, u.type) for u in settings.upstreams] == [("gemini", "gemini"), ("vertex", "vertex")]
    assert settings.upstreams[1].location == "global" and settings.upstreams[1].base_url is None
    assert [k.key.get_secret_value() for k in settings.upstreams[0].keys()] == ["k1", "k2"]
    vertex_first = load_settings(environ={**env, "GOOGLE_GENAI_USE_VERTEXAI": "true"})
    assert [u.name for u in vertex_first.upstreams] == ["vertex", "gemini"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_zero_config_vertex_through_the_real_cli(fake, sa_file, tmp_path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI", "GOOGLE", "VERTEX"))}
    env.update(_zero_config_env(fake, sa_file))
    env["HOME"] = str(tmp_path)  # no gcloud ADC file of the machine's user
    env["GEMINI_PROXY_STORAGE__DATABASE_URL"] = f"sqlite:///{tmp_path}/gemini-proxy.db"  # not in the repository
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=str(Path(__file__).resolve().parents[2]),
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(base + "/readyz", timeout=1)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert ready.json() == {"status": "ready", "demo": False, "upstreams": ["vertex"]}
        with openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=30) as client:
            answer = client.chat.completions.create(model="gemini-2.5-flash", messages=msg("from the cli"))
            streamed = client.chat.completions.create(model="gemini-2.5-flash", messages=msg("streamed"), stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    finally:
        proc.terminate()
        proc.wait(15)
    assert answer.choices[0].message.content == "Echo: from the cli"
    assert text == "Echo: streamed"
    calls = _vertex_requests(fake)
    assert [c["project"] for c in calls] == ["zero-proj", "zero-proj"]
    assert [c["location"] for c in calls] == ["asia-northeast1"] * 2
    assert len(_token_requests(fake)) == 1
    output = log_path.read_text()
    assert "PRIVATE KEY" not in output


def test_a_silent_token_endpoint_is_bounded(make_gateway, fake, tmp_path):
    """google-auth would wait 120 s for a token endpoint that never answers; the gateway bounds it."""
    import socket
    import time

    from app.testing.credentials import write_service_account_file

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never answers
        path = write_service_account_file(tmp_path / "sa.json", token_uri=f"http://127.0.0.1:{silent.getsockname()[1]}/token")
        gw = make_gateway(
            upstreams=[vertex("vx", fake.url, path)],
            timeouts={"connect": 0.5, "first_byte": 0.5},
            retry={"max_attempts": 1},
        )
        started = time.monotonic()
        with oai(gw) as client:
            with pytest.raises(openai.InternalServerError) as info:
                client.chat.completions.create(model="gemini-2.5-flash", messages=msg("hi"))
        elapsed = time.monotonic() - started
    assert info.value.status_code == 502
    assert elapsed < 10, elapsed
