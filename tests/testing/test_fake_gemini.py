"""The fake Gemini server: endpoints, keys, models, framing, admin endpoints."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

import httpx
import orjson
import pytest

from app.testing.fake_gemini import add_cli_arguments
from app.testing.fake_gemini.catalogue import MODELS
from fake_harness import Harness, parse_sse, user, validate

UNREGISTERED = "Method doesn't allow unregistered callers"


def test_default_reply_echoes_latest_user_text(fake: Harness) -> None:
    contents = [user("first question"), {"role": "model", "parts": [{"text": "an answer"}]}, user("second one")]
    data = fake.generate("gemini-2.0-flash", contents)
    candidate = data["candidates"][0]
    assert candidate["content"] == {"role": "model", "parts": [{"text": "Echo: second one"}]}
    assert candidate["finishReason"] == "STOP"
    assert "index" not in candidate  # proto3 omits 0
    assert data["modelVersion"] == "gemini-2.0-flash"
    assert data["responseId"]
    usage = data["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]


def test_empty_prompt_and_v1_path(fake: Harness) -> None:
    data = fake.generate("gemini-2.0-flash", [user("")], version="v1")
    assert data["candidates"][0]["content"]["parts"][0]["text"] == "Hello from fake Gemini"


def test_key_missing_is_403(fake: Harness) -> None:
    response = fake.post("gemini-2.0-flash", "hi", key=None)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["status"] == "PERMISSION_DENIED" and error["message"].startswith(UNREGISTERED)


def test_wrong_key_is_400_api_key_invalid(fake: Harness) -> None:
    response = fake.post("gemini-2.0-flash", "hi", key="nope")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == "API key not valid. Please pass a valid API key."
    info = next(d for d in error["details"] if d["@type"].endswith("ErrorInfo"))
    assert info["reason"] == "API_KEY_INVALID" and info["domain"] == "googleapis.com"


def test_key_in_query_and_second_key(fake: Harness) -> None:
    ok = fake.http.post("/v1beta/models/gemini-2.0-flash:generateContent?key=second-key", json=fake.body("hi"))
    assert ok.status_code == 200
    assert fake.requests()[-1]["api_key"] == "second-key"


def test_any_key_accepted_without_configured_keys(fake: Harness) -> None:
    fake.config(api_keys=[])
    assert fake.post("gemini-2.0-flash", "hi", key="whatever").status_code == 200
    assert fake.post("gemini-2.0-flash", "hi", key=None).status_code == 403


def test_list_models_paging(fake: Harness) -> None:
    headers = {"x-goog-api-key": "test-key"}
    names, token = [], None
    while True:
        query = {"pageSize": 3, **({"pageToken": token} if token else {})}
        page = fake.http.get("/v1beta/models", params=query, headers=headers).json()
        assert len(page["models"]) <= 3
        names += [m["name"] for m in page["models"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert names == [f"models/{m}" for m, spec in MODELS.items() if "gemini" in spec.backends]
    everything = fake.http.get("/v1beta/models", headers=headers).json()
    assert "nextPageToken" not in everything and len(everything["models"]) == len(names)
    assert fake.http.get("/v1beta/models").status_code == 403


def test_get_model_resource(fake: Harness) -> None:
    headers = {"x-goog-api-key": "test-key"}
    model = fake.http.get("/v1beta/models/gemini-2.5-flash", headers=headers).json()
    assert model["name"] == "models/gemini-2.5-flash" and model["thinking"] is True
    assert model["inputTokenLimit"] > 0 and model["outputTokenLimit"] > 0
    assert "generateContent" in model["supportedGenerationMethods"]
    embed = fake.http.get("/v1/models/gemini-embedding-001", headers=headers).json()
    assert "generateContent" not in embed["supportedGenerationMethods"]
    missing = fake.http.get("/v1beta/models/gemini-9", headers=headers)
    assert missing.status_code == 404


def test_unknown_model_and_embedding_model_are_404(fake: Harness) -> None:
    response = fake.post("gemini-9-ultra", "hi")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == (
        "models/gemini-9-ultra is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their supported methods."
    )
    assert fake.post("gemini-embedding-001", "hi").status_code == 404


def test_invalid_json_is_400(fake: Harness) -> None:
    response = fake.http.post(
        "/v1beta/models/gemini-2.0-flash:generateContent",
        content=b"{not json",
        headers={"x-goog-api-key": "test-key", "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Invalid JSON payload received.")


def test_sse_framing(fake: Harness) -> None:
    chunks = fake.stream("gemini-2.0-flash", "one two three four five six seven")
    assert len(chunks) == 3  # about one chunk per 3 words
    text = "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert text == "Echo: one two three four five six seven"
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    ids = {c["responseId"] for c in chunks}
    assert len(ids) == 1 and all(c["modelVersion"] == "gemini-2.0-flash" for c in chunks)
    for middle in chunks[:-1]:
        assert set(middle["usageMetadata"]) == {"promptTokenCount", "totalTokenCount"}
    assert "candidatesTokenCount" in chunks[-1]["usageMetadata"]
    assert fake.stats()["streams_completed"] == 1


def test_json_array_stream_form(fake: Harness) -> None:
    response = fake.post("gemini-2.0-flash", "alpha beta gamma delta", method="streamGenerateContent")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.content.startswith(b"[") and b"\n,\r\n" in response.content
    chunks = orjson.loads(response.content)
    assert isinstance(chunks, list) and len(chunks) == 2
    for chunk in chunks:
        validate(chunk)
    error = fake.post("gemini-9", "x", method="streamGenerateContent")
    assert error.status_code == 404 and error.json()[0]["error"]["code"] == 404


def test_stream_matches_whole_answer(fake: Harness) -> None:
    prompt = "#fake {\"grounding\": true}\nwhere to drink coffee in Paris"
    whole = fake.generate("gemini-2.5-flash", prompt)["candidates"][0]["content"]["parts"]
    chunks = fake.stream("gemini-2.5-flash", prompt)
    streamed = "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"])
    assert streamed == "".join(p["text"] for p in whole)


def test_vertex_generate_and_stream(fake: Harness) -> None:
    token = fake.token()
    response = fake.vertex_post("gemini-2.5-pro", "hello vertex", token)
    assert response.status_code == 200, response.text
    data = response.json()
    validate(data)
    assert data["candidates"][0]["content"]["parts"][-1]["text"] == "Echo: hello vertex"
    assert data["usageMetadata"]["trafficType"] == "ON_DEMAND" and data["createTime"]
    stream = fake.vertex_post("gemini-2.5-pro", "a b c d", token, method="streamGenerateContent", query="?alt=sse")
    assert [validate(c) for c in parse_sse(stream.content)]
    v1 = fake.vertex_post("gemini-2.0-flash", "x", token, version="v1", location="global")
    assert v1.status_code == 200
    missing = fake.vertex_post("gemini-9", "x", token)
    assert missing.status_code == 404 and "Publisher Model" in missing.json()["error"]["message"]


def test_vertex_rejects_missing_and_unknown_tokens(fake: Harness) -> None:
    for token, reason in ((None, "CREDENTIALS_MISSING"), ("ya29.made-up", "ACCESS_TOKEN_TYPE_UNSUPPORTED")):
        response = fake.vertex_post("gemini-2.5-flash", "hi", token)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["status"] == "UNAUTHENTICATED"
        assert error["message"].startswith("Request had invalid authentication credentials.")
        assert error["details"][0]["reason"] == reason


def test_count_tokens(fake: Harness) -> None:
    response = fake.post("gemini-2.5-flash", "x" * 40, method="countTokens")
    assert response.status_code == 200 and response.json()["totalTokens"] == 10


def test_requests_are_recorded(fake: Harness) -> None:
    fake.post("gemini-2.5-flash", "recorded #1", generationConfig={"temperature": 0.5})
    fake.vertex_post("gemini-2.5-flash", "recorded #2", fake.token(), project="proj-a")
    gemini, token_call, vertex = fake.requests()
    assert gemini["backend"] == "gemini" and gemini["model"] == "gemini-2.5-flash"
    assert gemini["api_key"] == "test-key" and gemini["status"] == 200 and gemini["outcome"] == "ok"
    assert gemini["body"]["generationConfig"] == {"temperature": 0.5}
    assert gemini["headers"]["content-type"] == "application/json"
    assert token_call["backend"] == "oauth" and token_call["status"] == 200
    assert vertex["backend"] == "vertex" and vertex["project"] == "proj-a"
    assert vertex["token"] == token_call["token"]
    since = fake.http.get("/_fake/requests", params={"since": vertex["seq"] - 1}).json()["requests"]
    assert [r["seq"] for r in since] == [vertex["seq"]]


def test_reset_clears_records_counters_and_scripts(fake: Harness) -> None:
    fake.script({"reply": "never used"})
    fake.post("gemini-2.0-flash", "bad", key="nope")
    assert fake.stats()["requests"] == 1 and fake.stats()["scripts_queued"] == 1
    fake.http.post("/_fake/reset")
    stats = fake.stats()
    assert stats["requests"] == 0 and stats["scripts_queued"] == 0 and fake.requests() == []


def test_config_endpoint(fake: Harness) -> None:
    current = fake.http.get("/_fake/config").json()
    assert current["token_lifetime"] == 3600
    assert fake.config(latency_ms=5)["latency_ms"] == 5
    bad = fake.http.post("/_fake/config", json={"nope": 1})
    assert bad.status_code == 400 and "nope" in bad.json()["error"]["message"]
    assert fake.http.post("/_fake/config", json={"latency_ms": -1}).status_code == 400


def test_latency_applies_to_api_calls(fake: Harness) -> None:
    fake.config(latency_ms=150)
    response = fake.post("gemini-2.0-flash", "slow")
    assert response.status_code == 200 and response.elapsed.total_seconds() >= 0.14


def test_unknown_paths_are_google_shaped_404(fake: Harness) -> None:
    response = fake.http.get("/v1beta/nothing-here")
    assert response.status_code == 404 and response.json()["error"]["status"] == "NOT_FOUND"
    wrong_method = fake.post("gemini-2.0-flash", "x", method="embedContent")
    assert wrong_method.status_code == 404


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    args = parser.parse_args(["--port", "0", "--api-key", "a", "--api-key", "b", "--token-lifetime", "60"])
    assert args.api_keys == ["a", "b"] and args.token_lifetime == 60 and args.latency_ms == 0
    assert parser.parse_args([]).port == 8089


def test_run_from_args_serves_until_sigterm(tmp_path) -> None:
    code = (
        "import argparse, sys\n"
        "from app.testing.fake_gemini import add_cli_arguments, run_from_args\n"
        "p = argparse.ArgumentParser(); add_cli_arguments(p)\n"
        "sys.exit(run_from_args(p.parse_args(sys.argv[1:])))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", "0", "--api-key", "cli-key"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("fake-gemini listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        response = httpx.post(
            f"{url}/v1beta/models/gemini-2.5-flash:generateContent",
            json={"contents": [user("from the cli")]},
            headers={"x-goog-api-key": "cli-key"},
        )
        assert response.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("model", [m for m, s in MODELS.items() if s.generates])
def test_every_model_answers(fake: Harness, model: str) -> None:
    fake.generate(model, "hello")
    fake.stream(model, "hello there")


def test_in_process_start_and_close_during_a_stall() -> None:
    """`start_fake` on the caller's loop; `close()` ends a stalled stream promptly."""
    import asyncio
    import time

    import aiohttp

    from app.testing.fake_gemini import FakeOptions, start_fake

    async def scenario() -> float:
        fake = await start_fake(FakeOptions(seed=1))
        body = {"contents": [user('#fake {"stall_after_chunks": 1}\nhello there friend')]}
        url = f"{fake.url}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        async with aiohttp.ClientSession(headers={"x-goog-api-key": "any"}) as session:
            async with session.post(url, json=body) as response:
                assert (await response.content.readline()).startswith(b"data: ")
                assert fake.state.counters["stalls"] == 1
                started = time.monotonic()
                await fake.close()
                return time.monotonic() - started

    assert asyncio.run(scenario()) < 2.5
