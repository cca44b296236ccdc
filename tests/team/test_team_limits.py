"""Client limits and budgets in one gateway process (memory storage), driven with the openai SDK over real HTTP.

rpm / tpm / concurrency refusals (429 `rate_limit_exceeded`, Retry-After), budgets (429 `insufficient_quota`,
`x-should-retry: false`), team limits on top of key limits, tokens reserved from an estimate and settled with
Google's usage (non-streamed, streamed without `include_usage`, a client that leaves mid-stream), the
`x-ratelimit-*` headers on successes, errors and streams, the per-worker share, and the metric.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from app.gateway.ratelimit import Backend, Limiter, LocalWindows, RateLimitExceeded, go_duration, share
from app.pipeline.context import Limits
from gateway_harness import FakeGemini, GatewayServer, metric_value, new_database_url

from .conftest import limits
from .team_support import ADMIN_KEY, MODEL, admitted_once, limited_request, sdk

KEY = "sk-limited-0123456789"
FREE = "sk-free-0123456789"
RESET = re.compile(r"^(\d+ms|(\d+h)?(\d+m)?\d+(\.\d{1,3})?s)$")
RATE_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


def fake_line(**directive: Any) -> str:
    return f"hello\n#fake {json.dumps(directive)}"


def fresh_minute() -> None:
    """Start a test's token arithmetic well inside one minute (the memory windows are aligned to minutes)."""
    second = time.time() % 60
    if second > 45:
        time.sleep(60.5 - second)


@pytest.fixture
def limited(make_gateway: Callable[..., GatewayServer], fake: FakeGemini) -> Callable[..., GatewayServer]:
    def start(key_limits: dict[str, Any], **server: Any) -> GatewayServer:
        keys = [{"name": "limited", "id": "lim", "key": KEY, "limits": key_limits}, {"name": "free", "key": FREE}]
        return make_gateway(auth={"client_keys": keys}, **server)

    return start


def raw_chat(gateway: GatewayServer, key: str = KEY, text: str = "hello", **body: Any) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", timeout=30, headers={"authorization": f"Bearer {key}"},
                      json={"model": MODEL, "messages": [{"role": "user", "content": text}], **body})


def test_go_duration_and_shares():
    assert [go_duration(s) for s in (0.02, 1, 1.428, 360, 3600, 0)] == ["20ms", "1s", "1.428s", "6m0s", "1h0m0s", "0ms"]
    assert share(Limits(rpm=10, tpm=7, concurrency=1, usd_per_month=3.0), 4) == Limits(
        rpm=2, tpm=1, concurrency=1, usd_per_month=0.75)
    assert share(Limits(rpm=10), 1) == Limits(rpm=10)


def test_worker_slots_and_their_exact_shares(tmp_path):
    from app.gateway.ratelimit import claim_worker_slot

    for n in range(1, 6):
        for limit in range(12):
            shares = [share(Limits(rpm=limit, concurrency=limit), n, slot) for slot in range(n)]
            assert sum(s.rpm for s in shares) == limit and sum(s.concurrency for s in shares) == limit, (n, limit)
    assert [share(Limits(rpm=1), 2, slot).rpm for slot in (0, 1)] == [1, 0]  # a limit below the workers: one has it
    first, second = claim_worker_slot(str(tmp_path), 2), claim_worker_slot(str(tmp_path), 2)
    assert first is not None and second is not None and (first[0], second[0]) == (0, 1)
    assert claim_worker_slot(str(tmp_path), 2) is None  # every slot is held
    os.close(first[1])  # that worker is gone: the one started in its place takes its slot
    again = claim_worker_slot(str(tmp_path), 2)
    assert again is not None and again[0] == 0
    os.close(again[1])
    os.close(second[1])
    assert claim_worker_slot(str(tmp_path / "missing"), 2) is None


@pytest.mark.anyio
async def test_a_worker_that_finds_every_slot_held_takes_one_once_it_is_free(tmp_path, monkeypatch):
    """A restart starts the new workers before it stops the old ones: a worker that finds every slot held enforces
    at least 1 meanwhile and takes the first slot freed (its shares computed again); a share of 0 is a 429."""
    import asyncio
    import types

    from app import services as services_module
    from app.gateway.ratelimit import WORKER_SLOTS_ENV, RateLimitExceeded, claim_worker_slot

    monkeypatch.setattr(services_module, "SLOT_RETRY", 0.05)
    monkeypatch.setenv(WORKER_SLOTS_ENV, str(tmp_path))
    held = [claim_worker_slot(str(tmp_path), 2) for _ in range(2)]  # the old workers
    limiter = Limiter(local_share=2)
    worker = types.SimpleNamespace(limiter=limiter, _slot_file=None, _slot_task=None)
    for name in ("_claim_worker_slot", "_claim_later", "_took_slot"):
        setattr(worker, name, getattr(services_module.Services, name).__get__(worker))
    worker._claim_worker_slot(2)
    assert limiter.local_slot is None and worker._slot_task is not None

    def admitted() -> Any:
        return admitted_once(limiter, limited_request(Limits(rpm=1, tpm=1)), 0, 1, refused=RateLimitExceeded)

    assert await admitted()  # meanwhile: at least 1
    os.close(held[1][1])  # the old worker of slot 1 stops
    await asyncio.wait_for(worker._slot_task, 2)
    assert limiter.local_slot == 1 and worker._slot_file is not None
    assert not await admitted()  # slot 1's share of rpm 1 and tpm 1 is 0: a 429 (not a 500), every time
    os.close(worker._slot_file)
    os.close(held[0][1])


def test_rpm_exactly_n_pass_then_openai_429(limited):
    gateway = limited({"rpm": 3})
    client = sdk(gateway.url, KEY)
    remaining = []
    for _ in range(3):
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert RESET.match(raw.headers["x-ratelimit-reset-requests"]), raw.headers["x-ratelimit-reset-requests"]
        remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
        assert "x-ratelimit-limit-tokens" not in raw.headers  # no tpm: only the pair that exists
    assert remaining == [2, 1, 0]
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    error = caught.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded" and error.type == "requests"
    assert "requests per min (RPM): Limit 3" in error.message and error.param is None
    headers = error.response.headers
    retry_after = int(headers["retry-after"])
    assert 1 <= retry_after <= 60 + 60 // 3 + 1  # at most: the rest of this minute, then a third of the next
    assert 0 < int(headers["retry-after-ms"]) <= retry_after * 1000
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-should-retry" not in headers  # a retry after Retry-After can succeed
    # another key is not affected, and the metric counts the refusal (no team)
    assert raw_chat(gateway, FREE).status_code == 200
    assert "x-ratelimit-limit-requests" not in raw_chat(gateway, FREE).headers
    assert metric_value(gateway, "gemini_proxy_rate_limited_total", team="", kind="rpm") == 1


def test_tpm_reserves_the_estimate_and_settles_with_googles_usage(limited, fake):
    fresh_minute()
    gateway = limited({"tpm": 100_000})
    text = fake_line(usage={"promptTokenCount": 1000, "candidatesTokenCount": 234})

    def probe() -> tuple[int, int]:
        response = raw_chat(gateway, text="probe", max_tokens=50)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-tokens"] == "100000"
        assert RESET.match(response.headers["x-ratelimit-reset-tokens"])
        usage = response.json()["usage"]
        return int(response.headers["x-ratelimit-remaining-tokens"]), usage["total_tokens"]

    before, probe_tokens = probe()
    # non-streamed: the 1234 tokens Google reported replace the reservation
    response = raw_chat(gateway, text=text, max_tokens=4000)
    assert response.status_code == 200
    usage = response.json()["usage"]
    total = usage["total_tokens"]  # 1000 + 234 + the model's thoughts
    assert usage["prompt_tokens"] == 1000 and total > 1234
    # remaining = limit - settled so far - this request's reservation; the probe's own reservation cancels out
    reserved_more_than_probe = before - int(response.headers["x-ratelimit-remaining-tokens"]) - probe_tokens
    assert 3950 < reserved_more_than_probe < 4050  # the estimate: the body's bytes / 4 plus max_tokens
    after, _ = probe()
    assert before - after == probe_tokens + total
    # streamed, the client did not ask for include_usage: settled all the same
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": text}]},
                      timeout=30) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["x-ratelimit-limit-tokens"] == "100000"
        body = streamed.read().decode()
    assert '"usage"' not in body.replace('"usage":null', "")
    again, _ = probe()
    assert after - again == probe_tokens + total  # the same deterministic answer as above


def test_a_client_that_leaves_mid_stream_is_charged_what_google_reported(limited, fake):
    fresh_minute()
    gateway = limited({"tpm": 100_000})
    text = fake_line(usage={"promptTokenCount": 700, "candidatesTokenCount": 300}, chunks=8, chunk_delay_ms=300)

    def probe() -> tuple[int, int]:
        response = raw_chat(gateway, text="probe", max_tokens=50)
        return int(response.headers["x-ratelimit-remaining-tokens"]), response.json()["usage"]["total_tokens"]

    before, probe_tokens = probe()
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": MODEL, "stream": True, "max_tokens": 5000,
                            "messages": [{"role": "user", "content": text}]}, timeout=30) as streamed:
        lines = streamed.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
    fake.wait_for(lambda s: s["active_requests"] == 0, timeout=10)
    time.sleep(0.3)
    after, _ = probe()
    charged = before - after - probe_tokens
    # Google's middle chunks report the prompt so far (not the output): that is what the client is charged
    assert charged == 700


def test_concurrency_leases_are_released(limited, fake):
    gateway = limited({"concurrency": 2})
    results: list[int] = []

    def slow() -> None:
        results.append(raw_chat(gateway, text=fake_line(first_byte_delay_ms=1500)).status_code)

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for t in threads:
        t.start()
    fake.wait_for(lambda s: s["active_requests"] == 2, timeout=10)
    third = raw_chat(gateway)
    assert third.status_code == 429
    assert third.json()["error"]["code"] == "rate_limit_exceeded" and third.json()["error"]["type"] == "requests"
    assert "concurrent requests" in third.json()["error"]["message"] and third.headers["retry-after"] == "1"
    assert not any(h in third.headers for h in RATE_HEADERS)  # no rpm window is set: no requests headers to state
    for t in threads:
        t.join()
    assert results == [200, 200]
    # released in the finally: streams and errors alike
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]}) as s:
        s.read()
    assert raw_chat(gateway, text=fake_line(error={"status": 400})).status_code == 400
    statuses = []
    threads = [threading.Thread(target=lambda: statuses.append(raw_chat(gateway, text=fake_line(first_byte_delay_ms=300)).status_code))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200, 200]
    assert metric_value(gateway, "gemini_proxy_rate_limited_total", kind="concurrency") == 1


def test_token_budget_is_insufficient_quota(limited, fake):
    gateway = limited({"tokens_per_day": 1900, "tokens_per_month": 10**6})
    client = sdk(gateway.url, KEY)
    text = fake_line(usage={"promptTokenCount": 1500, "candidatesTokenCount": 400})
    # admitted (the estimate fits), then settled with the real 1900 + thoughts: the day's budget is spent
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}]).usage.total_tokens > 1900
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])
    error = caught.value
    assert error.code == "insufficient_quota" and error.type == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers
    assert "tokens_per_day" in error.message
    assert metric_value(gateway, "gemini_proxy_rate_limited_total", team="", kind="tokens_per_day") == 1
    # the SDK's own retries stop at once on x-should-retry: false
    retrying = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=2, timeout=30)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError):
        retrying.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert time.monotonic() - started < 0.35  # no backoff sleep (the first is at least 0.375 s)


def test_usd_budget_seeded_from_the_budget_source(limited, fake):
    gateway = limited({"usd_per_month": 5})

    class Spent:
        def __init__(self) -> None:
            self.asked: list[tuple[str, float]] = []

        async def spent(self, subject: str, since: float) -> tuple[int, float]:
            self.asked.append((subject, since))
            return 10, 5.0

    source = Spent()
    gateway.state.limiter.budget_source = source
    response = raw_chat(gateway)
    assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota"
    assert response.headers["x-should-retry"] == "false"
    assert "usd_per_month" in response.json()["error"]["message"]
    assert raw_chat(gateway).status_code == 429
    assert [subject for subject, _ in source.asked] == ["key:lim"]  # seeded once per period, then counted here
    since = source.asked[0][1]
    assert time.gmtime(since).tm_mday == 1 and time.gmtime(since).tm_hour == 0


@pytest.mark.parametrize("budget", [{"tokens_per_day": 1000}, {"usd_per_month": 0.001}], ids=["tokens", "usd"])
def test_budgets_survive_a_restart_through_the_usage_records(limited, fake, budget):
    """What a key spent before a restart counts: the new process seeds its budget counter from the usage table."""
    database = new_database_url()
    spend = fake_line(usage={"promptTokenCount": 1500, "candidatesTokenCount": 400})  # 1900 tokens, $0.00145 on flash
    first = limited(budget, storage={"database_url": database})
    assert raw_chat(first, text=spend).status_code == 200  # nothing spent yet: admitted, then settled over budget
    first.stop()  # flushes the usage records
    again = limited(budget, storage={"database_url": database})
    refused = raw_chat(again)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert next(iter(budget)) in refused.json()["error"]["message"]
    fresh = limited(budget)  # another database: nothing spent, the same request passes
    assert raw_chat(fresh).status_code == 200


def test_tpm_request_too_large_is_not_retried(limited):
    gateway = limited({"tpm": 100})
    response = raw_chat(gateway, max_tokens=500)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "tokens" and "Request too large" in response.json()["error"]["message"]
    assert response.headers["x-should-retry"] == "false"


def test_headers_on_errors_and_streams(limited, fake):
    gateway = limited({"rpm": 100, "tpm": 100_000})
    failed = raw_chat(gateway, text=fake_line(error={"status": 400, "message": "bad thing"}))
    assert failed.status_code == 400
    assert all(h in failed.headers for h in RATE_HEADERS)
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]}) as s:
        assert s.status_code == 200 and all(h in s.headers for h in RATE_HEADERS)
        s.read()
    ok = raw_chat(gateway)
    assert all(h in ok.headers for h in RATE_HEADERS)
    assert int(ok.headers["x-ratelimit-remaining-requests"]) == 97
    # embeddings and the native API are admitted too
    emb = httpx.post(gateway.url + "/v1/embeddings", headers={"authorization": f"Bearer {KEY}"},
                     json={"model": "gemini-embedding-001", "input": "x"}, timeout=30)
    assert emb.status_code == 200 and emb.headers["x-ratelimit-remaining-requests"] == "96"
    native = httpx.post(gateway.url + f"/v1beta/models/{MODEL}:generateContent", headers={"x-goog-api-key": KEY},
                        json={"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": 10}})
    assert native.status_code == 200 and native.headers["x-ratelimit-remaining-requests"] == "95"
    responses = httpx.post(gateway.url + "/v1/responses", headers={"authorization": f"Bearer {KEY}"},
                           json={"model": MODEL, "input": "x", "max_output_tokens": 100}, timeout=30)
    assert responses.status_code == 200 and responses.headers["x-ratelimit-remaining-requests"] == "94"
    # a native metadata read is not admitted: no request slot, no tokens reserved; its headers say what is left
    tokens = int(responses.headers["x-ratelimit-remaining-tokens"])
    meta = httpx.get(gateway.url + f"/v1beta/models/{MODEL}", headers={"x-goog-api-key": KEY}, timeout=30)
    assert meta.status_code == 200 and meta.json()["name"] == f"models/{MODEL}"
    assert meta.headers.get("x-ratelimit-remaining-requests") == "94"
    after = raw_chat(gateway, text="x")
    assert after.headers["x-ratelimit-remaining-requests"] == "93"
    assert int(after.headers["x-ratelimit-remaining-tokens"]) > tokens - 4096 - 100


def test_every_answer_to_a_limited_key_carries_its_windows_headers(make_gateway, fake):
    """Refusals and errors that took nothing (a concurrency 429, a 403, a 400 before the call, a window's 429) and the
    model list carry the headers as well, saying what is left now; a refusing window's pair is its own."""
    fresh_minute()
    keys = [{"name": "limited", "id": "lim", "key": KEY, "models": [MODEL],
             "limits": {"rpm": 3, "tpm": 100_000, "concurrency": 1}}]
    gateway = make_gateway(auth={"client_keys": keys})

    def check(response: httpx.Response, status: int, requests_left: str) -> None:
        assert response.status_code == status, response.text
        assert all(h in response.headers for h in RATE_HEADERS), (status, dict(response.headers))
        assert response.headers["x-ratelimit-remaining-requests"] == requests_left
        assert response.headers["x-ratelimit-limit-tokens"] == "100000"
        assert RESET.match(response.headers["x-ratelimit-reset-tokens"])

    check(raw_chat(gateway), 200, "2")
    check(httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                     json={"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}]}), 403, "2")
    check(httpx.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                     json={"model": MODEL, "messages": "not a list"}), 400, "2")
    check(httpx.get(gateway.url + "/v1/models", headers={"authorization": f"Bearer {KEY}"}), 200, "2")
    slow = threading.Thread(target=lambda: raw_chat(gateway, text=fake_line(first_byte_delay_ms=1500)))
    slow.start()
    fake.wait_for(lambda stats: stats["active_requests"] == 1, timeout=10)
    busy = raw_chat(gateway)
    check(busy, 429, "1")  # the slow one holds the key's one slot; this one took nothing
    assert "concurrent" in busy.json()["error"]["message"]
    slow.join()
    check(raw_chat(gateway), 200, "0")
    refused = raw_chat(gateway)
    check(refused, 429, "0")
    assert refused.json()["error"]["type"] == "requests"
    # Retry-After: when one more fits (this minute's 3 requests weigh until a third of the next one has passed);
    # reset: when the window is back to full, never sooner
    wait = int(refused.headers["retry-after-ms"]) / 1000
    assert 20 < wait <= 80 and int(refused.headers["retry-after"]) == math.ceil(wait)
    minutes, seconds = re.fullmatch(r"(?:(\d+)m)?([\d.]+)s", refused.headers["x-ratelimit-reset-requests"]).groups()
    assert int(minutes or 0) * 60 + float(seconds) >= wait - 0.002
    assert int(refused.headers["x-ratelimit-remaining-tokens"]) > 80_000  # the other window: what it has left


@pytest.fixture
def team_keys(make_gateway: Callable[..., GatewayServer], database_url: str, fake: FakeGemini) -> Iterator[tuple[GatewayServer, str, str]]:
    gateway = make_gateway(storage={"database_url": database_url}, auth={"admin_keys": [ADMIN_KEY]})
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        assert admin.post("/admin/teams", json={"name": "data", "limits": limits(rpm=3)}).status_code == 201
        one = admin.post("/admin/keys", json={"name": "one", "team": "data", "limits": limits(rpm=100)}).json()["key"]
        two = admin.post("/admin/keys", json={"name": "two", "team": "data"}).json()["key"]
    yield gateway, one, two


def test_team_limits_apply_across_its_keys(team_keys):
    gateway, one, two = team_keys
    deadline = time.monotonic() + 10  # the key cache re-reads the database every 2 s
    while raw_chat(gateway, one).status_code == 401:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    first = raw_chat(gateway, two)
    assert first.status_code == 200
    # the binding window is the team's (1 left), not key one's (98 left)
    assert first.headers["x-ratelimit-limit-requests"] == "3" and first.headers["x-ratelimit-remaining-requests"] == "1"
    assert raw_chat(gateway, one).status_code == 200
    refused = raw_chat(gateway, one)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert raw_chat(gateway, two).status_code == 429
    assert metric_value(gateway, "gemini_proxy_rate_limited_total", team="data", kind="rpm") == 2


def test_a_key_without_limits_gets_no_headers(limited):
    gateway = limited({"rpm": 1})
    response = raw_chat(gateway, FREE)
    assert response.status_code == 200 and not any(h in response.headers for h in RATE_HEADERS)


def test_local_windows_slide_refund_and_force():
    now = [600.0]  # the start of a minute
    windows = LocalWindows(clock=lambda: now[0])
    assert [windows.hit(3, "k", 1) for _ in range(4)] == [True, True, True, False]  # a refusal records nothing
    assert windows.stats(3, "k")[0] == 0
    windows.force("k", -1)  # a refund frees one unit
    assert windows.hit(3, "k", 1) and not windows.hit(3, "k", 1)
    assert not windows.hit(10, "t", 11)  # more than the whole limit never fits, and takes nothing
    windows.force("t", 25)  # settling real usage goes over the limit: the next requests wait
    assert windows.stats(10, "t")[0] == 0 and not windows.hit(10, "t", 1)
    now[0] = 600 + 60 + 45  # next minute, three quarters in: the previous 3 weigh 3 * 0.25, unrounded (`limits`')
    assert windows.stats(3, "k")[0] == 2 and not windows.hit(3, "k", 3)
    assert windows.hit(3, "k", 2) and not windows.hit(3, "k", 1)
    now[0] = 600 + 60 + 59.9  # the end of the minute: the previous minute's weight is nearly gone, not yet
    assert not windows.hit(3, "k", 1)  # 2 + 3 * 0.0017 + 1 > 3: never a fourth request within 60 s
    remaining, frees = windows.stats(3, "k")
    assert remaining == 0 and 0 < frees <= 60
    # when one more fits, exactly: once the previous minute's 3 weigh nothing, at this minute's end (0.1 s)
    assert windows.wait(3, "k", 1, now[0]) == pytest.approx(0.1, abs=0.001)
    now[0] = 600 + 120 + 0.05  # the next minute: this one's 2 weigh 2 * (1 - t/60), so one more fits now
    assert windows.wait(3, "k", 1, now[0]) == 0.0 and windows.hit(3, "k", 1)
    assert not windows.hit(3, "k", 1)  # 2 * 0.999 + 1 + 1 > 3: one more fits once 2 * (1 - t/60) <= 1, at t = 30 s
    assert windows.wait(3, "k", 1, now[0]) == pytest.approx(30 - 0.05, abs=0.001)
    now[0] = 600 + 120 + 29.9
    assert not windows.hit(3, "k", 1)
    now[0] = 600 + 120 + 30.1
    assert windows.hit(3, "k", 1)
    now[0] = 600 + 240  # two minutes later: all free
    assert windows.stats(3, "k") == (3, 0.0)


@pytest.mark.anyio
async def test_local_share_when_redis_is_down_uses_the_processes_last_seen():
    from app.pipeline.context import Principal, RequestContext

    up = [False]
    limiter = Limiter(local_share=1, shared=Backend(), shared_up=lambda: up[0], replicas=lambda: 3)
    principal = Principal.of_key("k", "k", limits=Limits(rpm=7))
    passed = 0
    for _ in range(5):
        ctx = RequestContext("r", "POST", "/v1/chat/completions", principal=principal)
        try:
            await limiter.admit(ctx, 10, 10)
            passed += 1
            assert ctx.admission.headers["x-ratelimit-limit-requests"] == "2"  # 7 // 3 processes
        except RateLimitExceeded:
            pass
        await limiter.settle(ctx)
    assert passed == 2


@pytest.mark.anyio
async def test_admissions_follow_the_principal_and_share_they_are_given():
    """What every admission of a principal takes alike is built once per principal and share: a key given new
    limits (a new principal) and a share that changes (Redis down, replicas seen) apply at once; the headers show
    the binding window, key or team, per kind."""
    from app.pipeline.context import Principal, RequestContext

    up, replicas = [True], [3]
    limiter = Limiter(shared=Backend(), shared_up=lambda: up[0], replicas=lambda: replicas[0])

    async def headers(principal: Principal) -> dict[str, str]:
        ctx = RequestContext("r", "POST", "/v1/chat/completions", principal=principal)
        await limiter.admit(ctx, 10, 10)
        found = ctx.admission.headers
        await limiter.settle(ctx)
        return found

    old = Principal.of_key("k", "k", limits=Limits(rpm=70))
    assert (await headers(old))["x-ratelimit-limit-requests"] == "70"
    new = Principal.of_key("k", "k", limits=Limits(rpm=90))
    assert (await headers(new))["x-ratelimit-limit-requests"] == "90"
    up[0] = False
    assert (await headers(new))["x-ratelimit-limit-requests"] == "30"  # 90 // 3 processes
    replicas[0] = 2
    assert (await headers(new))["x-ratelimit-limit-requests"] == "45"
    up[0] = True
    assert (await headers(old))["x-ratelimit-limit-requests"] == "70"

    teamed = Principal.of_key("t1", "t1", "data", limits=Limits(rpm=10, tpm=1000), team_limits=Limits(rpm=3))
    assert await headers(teamed) == {  # requests: the team's window binds (2 left of 3); tokens: the key's only
        "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "2", "x-ratelimit-reset-requests": "20s",
        "x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "980", "x-ratelimit-reset-tokens": "1.2s",
    }


def test_the_sdk_retry_waits_for_retry_after(limited, fake):
    """A default client (2 retries) sleeps what Retry-After / retry-after-ms say, then gets in."""
    gateway = limited({"concurrency": 1})
    slow = threading.Thread(target=lambda: raw_chat(gateway, text=fake_line(first_byte_delay_ms=1500)))
    slow.start()
    fake.wait_for(lambda s: s["active_requests"] == 1, timeout=10)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=2, timeout=30)
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    elapsed = time.monotonic() - started
    slow.join()
    assert raw.http_response.status_code == 200
    retries = int(raw.http_request.headers["x-stainless-retry-count"])
    assert retries >= 1 and elapsed >= 0.95 * retries  # each retry waited the 1 s it was told (not 0.5 s backoff)


def test_workers_without_redis_enforce_their_share(tmp_path, fake_gemini, fake):
    """`--workers 2` without Redis: each worker its exact share (its slot's), so never looser than configured, even
    for a limit below the number of workers (rpm 1, concurrency 1: one worker has it, the other none)."""
    from .team_support import GatewayProcess, clean_env

    keys = [{"name": "w", "key": KEY, "limits": {"rpm": 4}}, {"name": "one", "key": "sk-one-rpm", "limits": {"rpm": 1}},
            {"name": "solo", "key": "sk-one-slot", "limits": {"concurrency": 1}}]
    env = clean_env(GEMINI_API_KEY="test-key", GEMINI_BASE_URL=fake_gemini.url,
                    GEMINI_PROXY_STORAGE__DATABASE_URL=f"sqlite:///{tmp_path}/w.db",
                    GEMINI_PROXY_AUTH__CLIENT_KEYS=json.dumps(keys))
    gateway = GatewayProcess(env, tmp_path / "workers.log", "--workers", "2")

    def post(key: str, text: str = "x") -> int:
        with httpx.Client() as fresh:  # a new connection each time: requests spread over both workers
            return fresh.post(gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                              json={"model": MODEL, "messages": [{"role": "user", "content": text}]}, timeout=30).status_code

    try:
        fresh_minute()
        statuses = [post(KEY) for _ in range(10)]
        assert 2 <= statuses.count(200) <= 4 and statuses.count(429) >= 6, statuses  # 4 // 2 per worker, never more
        statuses = [post("sk-one-rpm") for _ in range(10)]
        assert statuses.count(200) <= 1 and statuses.count(429) >= 9, statuses
        slow: list[int] = []
        threads = [threading.Thread(target=lambda: slow.append(post("sk-one-slot", fake_line(first_byte_delay_ms=800))))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert slow.count(200) <= 1 and slow.count(429) >= 3, slow
        output = gateway.output()
        assert "each of the 2 workers enforces its share" in output and "never looser than configured" in output
        assert "This is worker 1." in output and "This is worker 2." in output
    finally:
        gateway.stop()


def test_rate_limited_metric_kinds_are_fixed():
    from app.observe.metrics import GatewayMetrics

    metrics = GatewayMetrics()
    metrics.rate_limited("data", "tpm")
    metrics.rate_limited("data", "tpm")
    metrics.rate_limited("", "usd_per_month")
    with pytest.raises(ValueError):
        metrics.rate_limited("data", "per_fortnight")
    text = metrics.render()[0].decode()
    assert 'gemini_proxy_rate_limited_total{kind="tpm",team="data"} 2.0' in text
    assert 'gemini_proxy_rate_limited_total{kind="usd_per_month",team=""} 1.0' in text


def test_images_are_admitted_with_an_estimate_per_image_not_the_uploads_bytes(limited, fake):
    from app.gateway.ratelimit import IMAGE_OUTPUT_TOKENS, MEDIA_TOKENS
    from app.testing.fake_gemini import extras

    fresh_minute()
    gateway = limited({"rpm": 3, "tpm": 10_000})
    client = sdk(gateway.url, KEY)
    raw = client.images.with_raw_response.generate(model="gemini-2.5-flash-image", prompt="a fox", n=2)
    assert raw.headers["x-ratelimit-limit-requests"] == "3" and raw.headers["x-ratelimit-remaining-requests"] == "2"
    # reserved: the prompt's 5 characters / 4 and 1290 output tokens per image asked
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) == 10_000 - (5 // 4 + 2 * IMAGE_OUTPUT_TOKENS)
    # an edit uploading ~400 KB: counted as one image, not 100k tokens (which a tpm of 10000 would refuse as too large)
    big = extras._png(3, 2, (255, 0, 0)) + bytes(400_000)
    edit = client.images.with_raw_response.edit(model="gemini-2.5-flash-image", image=("in.png", big, "image/png"),
                                                prompt="make it blue")
    assert edit.headers["x-ratelimit-remaining-requests"] == "1"
    assert int(edit.headers["x-ratelimit-remaining-tokens"]) > 10_000 - 2 * (MEDIA_TOKENS + 3 * IMAGE_OUTPUT_TOKENS)
    # more images than the tpm can take: too large, before Google
    calls = len(fake.requests())
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model="gemini-2.5-flash-image", prompt="many foxes", n=8)
    assert "Request too large" in caught.value.message and caught.value.response.headers["x-should-retry"] == "false"
    assert len(fake.requests()) == calls
    client.images.generate(model="gemini-2.5-flash-image", prompt="one more")  # the third request of the minute
    with pytest.raises(openai.RateLimitError) as refused:
        client.images.generate(model="gemini-2.5-flash-image", prompt="one too many")
    assert refused.value.code == "rate_limit_exceeded" and refused.value.type == "requests"


class Spent:
    """A BudgetSource that says what was spent, and counts its queries."""

    def __init__(self, tokens: int = 0, usd: float = 0.0) -> None:
        self.tokens, self.usd = tokens, usd
        self.asked: list[tuple[str, float]] = []

    async def spent(self, subject: str, since: float) -> tuple[int, float]:
        self.asked.append((subject, since))
        return self.tokens, self.usd


@pytest.mark.parametrize(("budget", "spent"), [({"tokens_per_day": 1500}, Spent(tokens=1000)),
                                               ({"usd_per_month": 1.0}, Spent(usd=0.6))], ids=["tokens", "usd"])
def test_a_workers_share_of_a_budget_is_seeded_with_its_share_of_the_spending(limited, fake, budget, spent):
    """Two workers: each enforces half the budget and counts half of what was spent (not all of it against half)."""
    gateway = limited(budget, server={"workers": 2})
    gateway.state.limiter.budget_source = spent
    response = raw_chat(gateway, max_tokens=50)  # 1000 // 2 + ~60 <= 750; $0.3 < $0.5
    assert response.status_code == 200, response.text
    assert [subject for subject, _ in spent.asked] == ["key:lim"]


@pytest.mark.anyio
async def test_a_local_fallback_seeds_its_budgets_again():
    from app.pipeline.context import Principal, RequestContext

    up = [False]
    source = Spent(tokens=0)
    limiter = Limiter(local_share=1, shared=Backend(), shared_up=lambda: up[0], replicas=lambda: 1, budget_source=source)
    principal = Principal.of_key("k", "k", limits=Limits(tokens_per_day=1000))

    def admit() -> Any:
        return admitted_once(limiter, RequestContext("r", "POST", "/v1/chat/completions", principal=principal), 10, 10)

    assert await admit()  # Redis down at start: local counters, seeded with 0
    up[0] = True
    assert await admit()  # Redis back: the shared counter
    source.tokens = 5000  # spent meanwhile (other replicas, recorded in the usage table)
    up[0] = False
    assert not await admit()  # a new fallback re-reads the usage records: the local counter is seeded again
    assert len(source.asked) == 3


@pytest.mark.anyio
async def test_concurrent_requests_never_overspend_a_budget_together():
    from app.team.prices import PriceTable

    from .team_support import check_budget_reservations

    await check_budget_reservations(Limiter(price_of=PriceTable().lookup))


class Failing:
    """A BudgetSource whose database is down (or hangs, with `delay`)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.asked = 0

    async def spent(self, subject: str, since: float) -> tuple[int, float]:
        import asyncio

        self.asked += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        raise RuntimeError("database is down")


def test_a_budget_source_that_fails_serves_the_request_and_is_retried_later(limited, fake, caplog):
    gateway = limited({"tokens_per_day": 10**6, "usd_per_month": 100})
    source = Failing()
    gateway.state.limiter.budget_source = source
    with caplog.at_level("WARNING", logger="gemini_proxy.limits"):
        statuses = [raw_chat(gateway, max_tokens=50).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]  # never a 500 because of the database
    assert source.asked == 2  # the day's and the month's query, once: retried after SEED_RETRY, not per request
    said = [r.getMessage() for r in caplog.records if "usage records failed" in r.getMessage()]
    assert len(said) == 1 and "RuntimeError" in said[0]


def test_a_hung_budget_source_costs_at_most_the_seed_timeout(limited, fake):
    from app.gateway.ratelimit import SEED_TIMEOUT

    gateway = limited({"tokens_per_day": 10**6})
    gateway.state.limiter.budget_source = Failing(delay=30)
    started = time.monotonic()
    assert raw_chat(gateway, max_tokens=50).status_code == 200
    assert SEED_TIMEOUT * 0.9 < time.monotonic() - started < SEED_TIMEOUT + 2


@pytest.mark.anyio
async def test_concurrent_seeds_are_one_query_per_subject_and_period():
    import asyncio

    from app.pipeline.context import Principal, RequestContext

    class Slow(Spent):
        async def spent(self, subject: str, since: float) -> tuple[int, float]:
            await asyncio.sleep(0.2)
            return await super().spent(subject, since)

    source = Slow(tokens=10, usd=0.01)
    limiter = Limiter(budget_source=source)
    principal = Principal.of_key("k", "k", limits=Limits(tokens_per_month=10**6, usd_per_month=10.0))
    contexts = [RequestContext(f"r{i}", "POST", "/v1/chat/completions", principal=principal) for i in range(5)]
    await asyncio.gather(*(limiter.admit(ctx, 10, 10) for ctx in contexts))
    assert len(source.asked) == 1  # five requests, the month's tokens and USD: one query


def test_estimate_prompt_tokens_counts_text_not_media():
    from app.gateway.ratelimit import MEDIA_TOKENS, estimate_prompt_tokens

    small = b'{"messages": [{"content": "hello"}]}'
    assert estimate_prompt_tokens(small) == len(small) // 4
    payload = b"A" * 400_000
    chat = b'{"messages":[{"content":[{"type":"text","text":"what is it?"},{"type":"image_url","image_url":' \
           b'{"url":"data:image/png;base64,' + payload + b'"}}]}]}'
    assert estimate_prompt_tokens(chat) == (len(chat) - len(payload)) // 4 + MEDIA_TOKENS
    native = b'{"contents":[{"parts":[{"text":"x"},{"inlineData":{"mimeType":"image/png","data": "' + payload + \
             b'"}},{"inline_data":{"data":"' + payload + b'"}}]}]}'
    assert estimate_prompt_tokens(native) == (len(native) - 2 * len(payload)) // 4 + 2 * MEDIA_TOKENS
    text = b'{"input": "' + b"word " * 20_000 + b'"}'  # large text is text
    assert estimate_prompt_tokens(text) == len(text) // 4


def test_an_attached_image_is_not_counted_as_tokens(limited, fake):
    """A 400 KB data: URL image against a tpm of 100000: admitted, reserving a fixed count for the image."""
    import base64

    from app.testing.fake_gemini import extras

    fresh_minute()
    gateway = limited({"tpm": 100_000, "tokens_per_day": 50_000})
    image = base64.b64encode(extras._png(3, 2, (255, 0, 0)) + bytes(300_000)).decode()
    response = httpx.post(gateway.url + "/v1/chat/completions", timeout=30, headers={"authorization": f"Bearer {KEY}"},
                          json={"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": [
                              {"type": "text", "text": "what is it?"},
                              {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}}]}]})
    assert response.status_code == 200, response.text
    assert 100_000 - int(response.headers["x-ratelimit-remaining-tokens"]) < 1000
