"""Usage records of the real gateway (real HTTP, the openai SDK, a real SQLite file): one record per request
of a client key, on every endpoint, with exactly the tokens the fake Gemini reported, the cost from the price
table (or the config's `pricing:`), and `GET /admin/usage` (shapes, 400s naming the parameter)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from gateway_harness import metric_value

from .team_support import ADMIN_KEY, MODEL, sdk
from .usage_support import by_group, records, usage, wait_for_requests

EMBEDDING = "gemini-embedding-001"


@pytest.fixture
def usage_gateway(make_gateway, database_url, fake):
    return make_gateway(storage={"database_url": database_url, "usage_flush_seconds": 0.1}, auth={"admin_keys": [ADMIN_KEY]})


@pytest.fixture
def admin_of(request):
    clients: list[httpx.Client] = []

    def make(gateway: Any) -> httpx.Client:
        client = httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _key(admin: httpx.Client, name: str, team: str | None) -> dict[str, Any]:
    created = admin.post("/admin/keys", json={"name": name, "team": team})
    assert created.status_code == 201, created.text
    return dict(created.json())


def _micro(prompt: int, completion: int, cached: int, rates: tuple[float, float, float]) -> int:
    """Micro-USD at (input, output, cached) USD per 1M tokens: the same sum the gateway does, by hand."""
    return round((prompt - cached) * rates[0] + cached * rates[2] + completion * rates[1])


FLASH = (0.30, 2.50, 0.03)  # gemini-2.5-flash list prices (app/team/prices.py)


def test_totals_per_key_are_exactly_what_gemini_reported(usage_gateway, admin_of, database_url, fake):
    """Streamed, non-streamed, failed and client-disconnected requests on chat, embeddings, responses and native."""
    admin = admin_of(usage_gateway)
    red, blue = _key(admin, "red-app", "red"), _key(admin, "blue-app", "blue")
    expected: dict[str, list[int]] = {red["id"]: [0] * 6, blue["id"]: [0] * 6}  # requests, errors, p, c, r, cached
    costs: dict[str, int] = {red["id"]: 0, blue["id"]: 0}

    def expect(key: dict[str, Any], prompt: int = 0, completion: int = 0, reasoning: int = 0, cached: int = 0,
               error: bool = False, rates: tuple[float, float, float] | None = FLASH) -> None:
        sums = expected[key["id"]]
        for i, n in enumerate((1, int(error), prompt, completion, reasoning, cached)):
            sums[i] += n
        if rates is not None:
            costs[key["id"]] += _micro(prompt, completion, cached, rates)

    with sdk(usage_gateway.url, red["key"]) as client:
        # chat, whole answer: thinking and cached tokens
        fake.script({"usage": {"promptTokenCount": 1000, "candidatesTokenCount": 200, "thoughtsTokenCount": 50,
                               "cachedContentTokenCount": 300}})
        answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert answer.usage is not None and answer.usage.completion_tokens == 250
        expect(red, 1000, 250, 50, 300)
        # chat, streamed
        fake.script({"usage": {"promptTokenCount": 77, "candidatesTokenCount": 33}})
        chunks = list(client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
        ))
        streamed = chunks[-1].usage
        assert streamed is not None and streamed.prompt_tokens == 77
        assert streamed.completion_tokens_details is not None  # the model thought by default: reasoning counts too
        reasoning = streamed.completion_tokens_details.reasoning_tokens or 0
        assert streamed.completion_tokens == 33 + reasoning
        expect(red, 77, 33 + reasoning, reasoning)
        # chat, refused by Google
        fake.script({"error": {"status": 400}})
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        expect(red, error=True)
        # chat, streamed, the client leaves after the first chunk: the prompt Google reported so far counts
        fake.script({"reply": "one two three four five six", "chunks": 3, "stall_after_chunks": 1,
                     "usage": {"promptTokenCount": 40, "candidatesTokenCount": 9}})
        with httpx.Client(base_url=usage_gateway.url, timeout=10) as http, http.stream(
            "POST", "/v1/chat/completions", headers={"authorization": f"Bearer {red['key']}"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "go on"}], "stream": True},
        ) as response:
            assert next(response.iter_raw()).startswith(b"data: {")
        expect(red, 40, 0, error=True)  # middle chunks carry only the prompt's count
    fake.wait_for(lambda s: s["active_requests"] == 0)

    with sdk(usage_gateway.url, blue["key"]) as client:
        embedded = client.embeddings.create(model=EMBEDDING, input=["one two three", "four"])
        expect(blue, embedded.usage.prompt_tokens, rates=(0.15, 0, 0.15))
        fake.script({"usage": {"promptTokenCount": 12, "candidatesTokenCount": 7}})
        response = client.responses.create(model=MODEL, input="hello")
        assert response.usage is not None and response.usage.input_tokens == 12
        reasoning = response.usage.output_tokens_details.reasoning_tokens
        assert response.usage.output_tokens == 7 + reasoning
        expect(blue, 12, 7 + reasoning, reasoning)
        fake.script({"usage": {"promptTokenCount": 21, "candidatesTokenCount": 4, "thoughtsTokenCount": 2}})
        native = httpx.post(
            f"{usage_gateway.url}/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": blue["key"]},
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, timeout=30,
        )
        assert native.status_code == 200, native.text
        assert native.json()["usageMetadata"]["thoughtsTokenCount"] == 2
        expect(blue, 21, 6, 2)
    # A refused key makes no record (no principal); a wrong model is a 403 of the key: recorded, as an error.
    assert httpx.post(f"{usage_gateway.url}/v1/chat/completions", headers={"authorization": "Bearer wrong"},
                      json={"model": MODEL, "messages": []}).status_code == 401

    data = wait_for_requests(admin, 7)
    rows = by_group(data)
    assert set(rows) == {red["id"], blue["id"]}
    for key_id, sums in expected.items():
        row = rows[key_id]
        got = [row[n] for n in ("requests", "errors", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")]
        assert got == sums, (key_id, got, sums)
        assert round(row["cost_usd"] * 1_000_000) == costs[key_id]
    assert {r["group"]: r["requests"] for r in usage(admin, "team")["rows"]} == {"red": 4, "blue": 3}

    rows_in_db = records(database_url)
    assert len(rows_in_db) == 7
    by_request = {(r["endpoint"], bool(r["stream"]), bool(r["client_disconnected"]), r["status"]) for r in rows_in_db}
    assert ("chat", True, True, 200) in by_request  # the one that left mid-stream
    assert ("chat", True, False, 200) in by_request and ("chat", False, False, 400) in by_request
    assert {r["endpoint"] for r in rows_in_db} == {"chat", "embeddings", "responses", "native.generateContent"}
    for row in rows_in_db:
        assert row["key_name"] in ("red-app", "blue-app") and row["team"] in ("red", "blue")
        assert row["latency_ms"] >= 0 and row["attempts"] >= 1 and row["request_id"]
        assert row["served_model"] and row["upstream"] == "fake"  # a request Google refused too: who answered it
        if row["stream"]:
            assert row["ttft_ms"] is not None
    failed = next(r for r in rows_in_db if r["status"] == 400)
    assert failed["error_code"] and failed["prompt_tokens"] == 0 and failed["cost_micro_usd"] == 0
    # the spend counter, by team and public model
    spent = metric_value(usage_gateway, "gemini_proxy_spend_usd_total", team="red", model=MODEL)
    assert spent == pytest.approx(costs[red["id"]] / 1_000_000)
    assert metric_value(usage_gateway, "gemini_proxy_usage_records_pending") == 0


def test_cost_from_a_config_override(make_gateway, admin_of, database_url, fake):
    gateway = make_gateway(
        storage={"database_url": database_url, "usage_flush_seconds": 0.1}, auth={"admin_keys": [ADMIN_KEY]},
        pricing={MODEL: {"input": 1.0, "output": 2.0, "cached": 0.5}, "gemini-embedding-*": {"input": 0, "output": 0}},
    )
    admin = admin_of(gateway)
    key = _key(admin, "priced", None)
    with sdk(gateway.url, key["key"]) as client:
        fake.script({"usage": {"promptTokenCount": 1000, "candidatesTokenCount": 200, "thoughtsTokenCount": 50,
                               "cachedContentTokenCount": 300}})
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        client.embeddings.create(model=EMBEDDING, input="free by the override's glob")
    data = wait_for_requests(admin, 2)
    assert round(data["rows"][0]["cost_usd"] * 1_000_000) == (1000 - 300) * 1 + 300 * 0.5 + 250 * 2
    assert by_group(usage(admin, "team"))[None]["requests"] == 2  # no team: group null
    models = by_group(usage(admin, "model"))
    assert models[EMBEDDING]["cost_usd"] == 0 and models[EMBEDDING]["prompt_tokens"] > 0


def test_admin_usage_shapes_and_bad_parameters(usage_gateway, admin_of, fake):
    admin = admin_of(usage_gateway)
    key = _key(admin, "shape", "t")
    with sdk(usage_gateway.url, key["key"]) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    wait_for_requests(admin, 1)
    fields = {"group", "requests", "errors", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "cost_usd"}
    for by in ("key", "team", "model", "day"):
        data = usage(admin, by, since="24h")
        assert set(data) == {"by", "since", "until", "rows"} and data["by"] == by
        assert data["since"].endswith("Z") and data["until"].endswith("Z")
        assert len(data["rows"]) == 1 and set(data["rows"][0]) == fields
    assert usage(admin, "day")["rows"][0]["group"] == usage(admin, "day")["until"][:10]
    assert usage(admin, "model")["rows"][0]["group"].startswith("gemini-2.5-flash")
    assert usage(admin, since="2020-01-01", until="2020-02-01T00:00:00Z")["rows"] == []
    assert usage(admin, since="2020-01-01")["since"] == "2020-01-01T00:00:00Z"
    for params, param in (({"by": "user"}, "by"), ({"since": "yesterday"}, "since"), ({"until": "soon"}, "until"),
                          ({"since": "1h", "until": "2h"}, "since"), ({"since": "99999999999d"}, "since")):
        refused = admin.get("/admin/usage", params=params)
        assert refused.status_code == 400, (params, refused.text)
        error = refused.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert httpx.get(usage_gateway.url + "/admin/usage").status_code == 401
    assert httpx.get(usage_gateway.url + "/admin/usage", headers={"authorization": f"Bearer {key['key']}"}).status_code == 401
    schema = httpx.get(usage_gateway.url + "/openapi.json").json()
    assert set(schema["components"]["schemas"]["UsageReport"]["properties"]) == {"by", "since", "until", "rows"}
    assert set(schema["components"]["schemas"]["UsageRow"]["properties"]) == fields



def test_records_can_be_turned_off(make_gateway, admin_of, database_url, fake):
    gateway = make_gateway(storage={"database_url": database_url, "usage_records": False}, auth={"admin_keys": [ADMIN_KEY]})
    admin = admin_of(gateway)
    key = _key(admin, "quiet", None)
    with sdk(gateway.url, key["key"]) as client:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert gateway.state.usage_writer is None
    assert usage(admin)["rows"] == [] and records(database_url) == []


def test_callers_without_a_key_id_make_no_record(make_gateway, database_url, fake):
    """Client auth off (anonymous callers) and bring-your-own-key callers: no key to bill, no record."""
    for auth in ({}, {"byok": True}):
        gateway = make_gateway(storage={"database_url": database_url, "usage_flush_seconds": 0.05}, auth=auth)
        with sdk(gateway.url, "test-key") as client:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert gateway.state.usage_writer is not None and gateway.state.usage_writer.pending == 0
        gateway.stop()
    assert records(database_url) == []


def _wait_rows(database_url: str, count: int) -> list[dict[str, Any]]:
    import time

    for _ in range(100):
        rows = records(database_url)
        if len(rows) >= count:
            return rows
        time.sleep(0.05)
    return records(database_url)


def test_a_failed_multi_call_request_records_what_google_billed(usage_gateway, admin_of, database_url, fake):
    """n=4 images where one call fails, 150 inputs (two batches) where one batch fails: the calls that were answered
    are in the record (Google billed them), not 0."""
    admin = admin_of(usage_gateway)
    key = _key(admin, "multi", None)
    late_error = {"error": {"status": 400, "message": "refused"}, "first_byte_delay_ms": 400}
    with sdk(usage_gateway.url, key["key"]) as client:
        fake.script(*[{"usage": {"promptTokenCount": 11, "candidatesTokenCount": 1300}}] * 3, late_error)
        with pytest.raises(openai.BadRequestError):
            client.images.generate(model="gemini-3-pro-image-preview", prompt="four cats", n=4)
        fake.script({"usage": {"promptTokenCount": 11, "candidatesTokenCount": 1300}}, late_error)
        with pytest.raises(openai.BadRequestError):
            client.embeddings.create(model=EMBEDDING, input=[f"text number {i}" for i in range(150)])
    rows = {r["endpoint"]: r for r in _wait_rows(database_url, 2)}
    images, embeddings = rows["images"], rows["embeddings"]
    assert images["status"] == 400 and images["prompt_tokens"] == 33 and images["completion_tokens"] >= 3900
    assert images["cost_micro_usd"] > 0
    assert embeddings["status"] == 400 and embeddings["prompt_tokens"] > 0 and embeddings["cost_micro_usd"] > 0


def test_imagen_answers_without_usage_cost_null_not_zero(usage_gateway, admin_of, database_url, fake):
    admin = admin_of(usage_gateway)
    key = _key(admin, "imagen", None)
    with sdk(usage_gateway.url, key["key"]) as client:
        result = client.images.generate(model="imagen-4.0-generate-001", prompt="mountains", n=2)
        assert len(result.data) == 2
    (row,) = _wait_rows(database_url, 1)
    assert row["status"] == 200 and row["cost_micro_usd"] is None
