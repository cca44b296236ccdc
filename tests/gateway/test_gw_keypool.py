"""The key pool end to end: 429 cool-downs per key or per project, daily quotas, 400s, all keys resting.

The fake answers per API key (`fail_api_keys`) and records which key every
attempt carried, so the order in which the gateway spends its keys is visible.
"""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from .gw_support import FAST_RETRY, directive, gemini, msg, oai

DAILY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"


def _keys(fake: Any) -> list[tuple[str, int]]:
    return [(r["api_key"], r["status"]) for r in fake.requests() if r.get("model")]


def _ask(client: openai.OpenAI, text: str) -> Any:
    return client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=msg(text))


def test_a_429_cools_that_key_and_the_next_request_uses_another_at_once(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key", "second-key")], retry=FAST_RETRY)
    limited = directive(fail_api_keys={"test-key": {"status": 429, "retry_delay": "30s"}})
    started = time.monotonic()
    with oai(gw) as client:
        first = _ask(client, "one\n" + limited)
        rest = [_ask(client, f"{i}") for i in range(4)]  # no directive: test-key would work, but it rests
    assert time.monotonic() - started < 2, "no waiting: another key was free"
    assert first.headers["x-gemini-proxy-attempts"] == "2"
    assert first.parse().choices[0].message.content == "Echo: one"
    assert all(r.headers["x-gemini-proxy-attempts"] == "1" for r in rest)
    assert _keys(fake) == [("test-key", 429)] + [("second-key", 200)] * 5


def test_keys_of_one_project_cool_down_together(make_gateway, fake) -> None:
    fake.config(api_keys=["p1-a", "p1-b", "solo"])
    gw = make_gateway(
        upstreams=[gemini("ai", fake.url, {"key": "p1-a", "project": "p1"}, {"key": "p1-b", "project": "p1"}, "solo")],
        retry=FAST_RETRY,
    )
    limited = directive(fail_api_keys={"p1-a": {"status": 429, "retry_delay": "30s"}})
    with oai(gw) as client:
        _ask(client, "x\n" + limited)
        for i in range(3):
            _ask(client, f"{i}")
    # p1-b shares p1's quota: it is skipped although Google never refused it.
    assert _keys(fake) == [("p1-a", 429), ("solo", 200), ("solo", 200), ("solo", 200), ("solo", 200)]


NOON_PACIFIC = 1796673600.0  # 2026-12-07 12:00 in Los Angeles: 12 hours before Google's daily reset


def test_a_daily_quota_parks_the_key_until_the_reset(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key", "second-key")], retry=FAST_RETRY)
    gw.state.upstreams[0].wall_clock = lambda: NOON_PACIFIC
    daily = directive(fail_api_keys={"test-key": {"status": 429, "quota_id": DAILY}})
    with oai(gw) as client:
        first = _ask(client, "x\n" + daily)
        _ask(client, "y")
    assert first.headers["x-gemini-proxy-attempts"] == "2"
    assert _keys(fake) == [("test-key", 429), ("second-key", 200), ("second-key", 200)]
    upstream = gw.state.upstreams[0]
    parked_for = upstream._cooling[("key:ai#1", "gemini-2.5-flash")] - upstream.clock()
    assert parked_for == pytest.approx(12 * 3600, abs=5), "until midnight Pacific, not a 10 s cool-down"


def test_every_key_on_daily_quota_is_a_429_the_sdk_will_not_retry(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key")], retry=FAST_RETRY)
    gw.state.upstreams[0].wall_clock = lambda: NOON_PACIFIC  # hours from the reset, whatever the time of the run
    daily = directive(error={"status": 429, "quota_id": DAILY})
    started = time.monotonic()
    with oai(gw) as client:
        with pytest.raises(openai.RateLimitError) as first:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("x\n" + daily))
        with pytest.raises(openai.RateLimitError) as second:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("y"))
    assert time.monotonic() - started < 2
    assert first.value.response.headers["x-should-retry"] == "false"
    retry_after = int(second.value.response.headers["retry-after"])
    assert retry_after >= 60 and second.value.response.headers["x-should-retry"] == "false"
    assert second.value.body["type"] == "rate_limit_error"
    assert len(_keys(fake)) == 1, "a parked key is not tried again"


def test_a_400_never_penalises_a_key(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key", "second-key")], retry=FAST_RETRY)
    with oai(gw) as client:
        for _ in range(2):
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(
                    model="gemini-2.5-flash", messages=msg("bad\n" + directive(error={"status": 400}))
                )
        for i in range(4):
            _ask(client, f"{i}")
    assert _keys(fake) == [("test-key", 400), ("second-key", 400)] + [("test-key", 200), ("second-key", 200)] * 2
    upstream = gw.state.upstreams[0]
    assert upstream.wait_time() == 0 and not upstream._cooling and not upstream._parked


def test_all_keys_resting_is_a_429_with_retry_after_without_calling_google(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key", "second-key")], retry=FAST_RETRY)
    limited = directive(error={"status": 429, "retry_delay": "40s"})
    with oai(gw) as client:
        with pytest.raises(openai.RateLimitError) as first:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("x\n" + limited))
        with pytest.raises(openai.RateLimitError) as second:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("y"), stream=True)
    assert _keys(fake) == [("test-key", 429), ("second-key", 429)]
    assert first.value.response.headers["retry-after"] == "40"
    assert 30 <= int(second.value.response.headers["retry-after"]) <= 40
    assert "x-should-retry" not in second.value.response.headers  # a short wait: the SDK may retry later
    assert second.value.body["code"] == "rate_limit_exceeded"
    assert second.value.response.headers["x-gemini-proxy-attempts"] == "0"


def test_a_short_rest_is_waited_out_rather_than_failing(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key")], retry=FAST_RETRY)
    prompt = "patience\n" + directive(fail_times=1, fail_key="short-rest", error={"status": 429, "retry_delay": "0.3s"})
    started = time.monotonic()
    with oai(gw) as client:
        raw = _ask(client, prompt)
    assert time.monotonic() - started >= 0.3
    assert raw.parse().choices[0].message.content == "Echo: patience"
    assert _keys(fake) == [("test-key", 429), ("test-key", 200)]


def test_a_refused_pool_key_is_parked_and_logged_by_label(make_gateway, fake, caplog) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "revoked-key-123", "test-key")], retry=FAST_RETRY)
    with oai(gw) as client:
        first = _ask(client, "a")
        second = _ask(client, "b")
        third = _ask(client, "c")
    assert first.headers["x-gemini-proxy-attempts"] == "2"
    assert [r.headers["x-gemini-proxy-attempts"] for r in (second, third)] == ["1", "1"]
    statuses = [r["status"] for r in fake.requests()]
    assert statuses == [400, 200, 200, 200], "the revoked key is not tried again"
    refused = [r.getMessage() for r in caplog.records if "refused the credentials" in r.getMessage()]
    assert refused and "ai#1" in refused[0]
    assert all("revoked-key-123" not in r.getMessage() for r in caplog.records)


def test_a_rate_limited_vertex_project_rests_while_another_project_serves(make_gateway, fake, sa_file) -> None:
    from .gw_support import vertex

    gw = make_gateway(
        upstreams=[vertex("va", fake.url, sa_file, project="proj-a"), vertex("vb", fake.url, sa_file, project="proj-b")],
        models=[{"name": "m", "targets": [{"upstream": "va", "model": "gemini-2.5-flash", "priority": 0},
                                           {"upstream": "vb", "model": "gemini-2.5-flash", "priority": 1}]}],
        retry=FAST_RETRY,
    )
    limited = directive(fail_projects={"proj-a": {"status": 429, "retry_delay": "30s"}})
    started = time.monotonic()
    with oai(gw) as client:
        first = client.chat.completions.with_raw_response.create(model="m", messages=msg("one\n" + limited))
        second = client.chat.completions.with_raw_response.create(model="m", messages=msg("two"))
    assert time.monotonic() - started < 2
    assert [r.headers["x-gemini-proxy-target"] for r in (first, second)] == ["vb/gemini-2.5-flash"] * 2
    assert [r.headers["x-gemini-proxy-attempts"] for r in (first, second)] == ["2", "1"]
    calls = [(r["project"], r["status"]) for r in fake.requests() if r["backend"] == "vertex"]
    assert calls == [("proj-a", 429), ("proj-b", 200), ("proj-b", 200)], "proj-a rests for Google's 30 s"
