"""No lock-out: a refused or rate-limited credential never stops the gateway from calling Google.

End to end (real gateway over HTTP, the fake Gemini, the openai SDK):

* a key Google refused (401, 400 API_KEY_INVALID) is probed by the very next
  request, which succeeds as soon as the key works again, without waiting out
  its backoff; the same with two upstreams that both refused;
* the credentials gauge shows the refusal and the restoration;
* a 403 about a resource is the client's error and penalises nothing;
* a daily 429 on one model leaves the other models of the key alone;
* a stream whose targets all answer 429 / 503 gets an HTTP error with
  `Retry-After` before the keep-alive interval ends;
* `retry.max_total_wait` bounds the retries of a non-streamed request.
"""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from gateway_harness import metric_value

from .gw_support import FAST_RETRY, directive, gemini, msg, oai

DAILY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"


def _calls(fake: Any) -> list[tuple[str, str, int]]:
    """(api key, model, status) of every generate request the fake saw (no key recorded when it refused it)."""
    return [(r.get("api_key"), r["model"], r["status"]) for r in fake.requests() if r.get("model")]


def _ask(client: openai.OpenAI, text: str, model: str = "gemini-2.5-flash") -> Any:
    return client.chat.completions.with_raw_response.create(model=model, messages=msg(text))


def _credentials_gauge(gw: Any, upstream: str) -> float:
    return metric_value(gw, "gemini_proxy_credentials_available", upstream=upstream)


# -- a refused key is tried again at once ----------------------------------------------------------------


def test_a_key_refused_with_401_is_called_again_by_the_next_request(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key")], retry=FAST_RETRY)
    refused = directive(fail_api_keys={"test-key": {"status": 401}})
    with oai(gw) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("one\n" + refused))
        assert info.value.status_code == 502 and info.value.body["code"] == "upstream_auth_failed"
        assert _calls(fake) == [("test-key", "gemini-2.5-flash", 401)]
        started = time.monotonic()
        second = _ask(client, "two")  # the key works again (no directive)
        elapsed = time.monotonic() - started
    assert second.parse().choices[0].message.content == "Echo: two"
    assert second.headers["x-gemini-proxy-attempts"] == "1"
    assert _calls(fake) == [("test-key", "gemini-2.5-flash", 401), ("test-key", "gemini-2.5-flash", 200)]
    assert elapsed < 0.9, f"probed at once, not after the 1 s backoff ({elapsed:.2f} s)"


def test_a_key_refused_as_invalid_is_probed_by_every_request_and_works_once_restored(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key")], retry=FAST_RETRY)
    fake.config(api_keys=["someone-elses-key"])  # Google: 400 API_KEY_INVALID for test-key
    with oai(gw) as client:
        for i in range(2):  # the second one is still refused, but Google is asked
            with pytest.raises(openai.InternalServerError) as info:
                client.chat.completions.create(model="gemini-2.5-flash", messages=msg(f"refused {i}"))
            assert info.value.status_code == 502 and info.value.body["code"] == "upstream_auth_failed"
            assert "test-key" not in info.value.response.text
            assert len(_calls(fake)) == i + 1, "no 502 without calling Google"
        fake.config(api_keys=["test-key"])  # the operator fixed the key
        started = time.monotonic()
        ok = _ask(client, "works again")
        elapsed = time.monotonic() - started
    assert ok.parse().choices[0].message.content == "Echo: works again"
    assert [c[2] for c in _calls(fake)] == [400, 400, 200]
    assert elapsed < 1.5, f"the key's 2 s backoff was not waited out ({elapsed:.2f} s)"


def test_two_upstreams_both_refusing_still_call_google_on_later_requests(make_gateway, fake) -> None:
    # max_retry_delay below the 1 s backoff of a refused key: waiting for one is not an option
    gw = make_gateway(
        upstreams=[gemini("a", fake.url, "bad-a"), gemini("b", fake.url, "bad-b")],
        retry={**FAST_RETRY, "max_retry_delay": 0.5},
    )
    with oai(gw) as client:
        with pytest.raises(openai.InternalServerError) as first:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("one"))
        assert first.value.status_code == 502
        assert [c[2] for c in _calls(fake)] == [400, 400], "both upstreams were tried"
        with pytest.raises(openai.InternalServerError) as second:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("two"))
        assert second.value.status_code == 502
        after_second = len(_calls(fake))
        assert after_second > 2, "every credential refused: the gateway still asks Google"
        fake.config(api_keys=[])  # any key works now
        started = time.monotonic()
        ok = _ask(client, "three")
        elapsed = time.monotonic() - started
    assert ok.parse().choices[0].message.content == "Echo: three"
    assert ok.headers["x-gemini-proxy-attempts"] == "1"
    assert len(_calls(fake)) == after_second + 1 and _calls(fake)[-1][2] == 200
    assert elapsed < 1.5, f"probed at once, both keys' backoffs not waited out ({elapsed:.2f} s)"


def test_the_credentials_gauge_shows_the_refusal_and_the_restoration(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key")], retry=FAST_RETRY)
    assert _credentials_gauge(gw, "ai") == 1
    refused = directive(fail_api_keys={"test-key": {"status": 401}})
    with oai(gw) as client:
        for text in ("x", "y"):  # refused twice in a row: a 2 s backoff
            with pytest.raises(openai.InternalServerError):
                client.chat.completions.create(model="gemini-2.5-flash", messages=msg(text + "\n" + refused))
        refused_at = time.monotonic()
        assert _credentials_gauge(gw, "ai") == 0
        _ask(client, "good")
        assert _credentials_gauge(gw, "ai") == 1
    assert time.monotonic() - refused_at < 1.8, "restored by the success, not by the end of the backoff"
    assert [c[2] for c in _calls(fake)] == [401, 401, 200]


# -- client errors penalise nothing --------------------------------------------------------------------


@pytest.mark.parametrize("reason", [None, "IAM_PERMISSION_DENIED"], ids=["no-reason", "resource-reason"])
def test_a_403_about_a_resource_is_the_clients_and_leaves_the_key_alone(make_gateway, fake, reason) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key")], retry=FAST_RETRY)
    error: dict[str, Any] = {
        "status": 403,
        "message": "You do not have permission to access the CachedContent cachedContents/abc123 (or it may not exist).",
    }
    if reason:
        error["reason"] = reason
    with oai(gw) as client:
        with pytest.raises(openai.PermissionDeniedError) as info:
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("cached\n" + directive(error=error)))
        assert info.value.status_code == 403 and "CachedContent" in info.value.message
        assert info.value.response.headers["x-gemini-proxy-attempts"] == "1", "not retried"
        assert _credentials_gauge(gw, "ai") == 1
        ok = _ask(client, "next")
    assert ok.parse().choices[0].message.content == "Echo: next"
    assert ok.headers["x-gemini-proxy-attempts"] == "1"
    assert _calls(fake) == [("test-key", "gemini-2.5-flash", 403), ("test-key", "gemini-2.5-flash", 200)]
    upstream = gw.state.upstreams[0]
    assert not upstream._parked and not upstream._cooling


def test_a_daily_429_on_one_model_does_not_stop_another_model(make_gateway, fake) -> None:
    gw = make_gateway(upstreams=[gemini("ai", fake.url, "test-key")], retry=FAST_RETRY)
    gw.state.upstreams[0].wall_clock = lambda: 1796673600.0  # noon in Los Angeles: hours from the daily reset
    daily = directive(error={"status": 429, "quota_id": DAILY})
    with oai(gw) as client:
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("x\n" + daily))
        other = _ask(client, "other model", model="gemini-2.0-flash")
        with pytest.raises(openai.RateLimitError) as again:  # the exhausted model still rests
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("y"))
    assert other.parse().choices[0].message.content == "Echo: other model"
    assert other.headers["x-gemini-proxy-attempts"] == "1"
    assert again.value.response.headers["x-gemini-proxy-attempts"] == "0"
    assert _calls(fake) == [("test-key", "gemini-2.5-flash", 429), ("test-key", "gemini-2.0-flash", 200)]


# -- bounded waiting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "cls"),
    [
        ({"status": 429, "retry_delay": "1.5s"}, 429, openai.RateLimitError),
        ({"status": 503, "retry_delay": "1.5s"}, 503, openai.InternalServerError),
    ],
    ids=["429", "503"],
)
def test_a_stream_whose_targets_all_fail_gets_an_http_error_before_the_keepalive(make_gateway, fake, error, status, cls) -> None:
    # Stream budget: 0.8 x keep-alive = 2.4 s. 429 (1.5 s rest): a -> b at once (fall-back first) -> b
    # again after 1.5 s -> give up (another 1.5 s would pass 2.4 s). 503 (RetryInfo 1.5 s): a, a after 1.5 s,
    # then b at once -> give up. About 1.5 s either way, where `retry.max_total_wait` (10 s) allows more.
    keepalive = 3.0
    gw = make_gateway(
        upstreams=[gemini("a", fake.url, "test-key"), gemini("b", fake.url, "second-key")],
        server={"keepalive_seconds": keepalive},
    )
    with oai(gw) as client:
        started = time.monotonic()
        with pytest.raises(cls) as info:
            stream = client.chat.completions.create(
                model="gemini-2.5-flash", messages=msg("x\n" + directive(error=error)), stream=True
            )
            list(stream)
        elapsed = time.monotonic() - started
    exc = info.value
    assert exc.status_code == status
    assert int(exc.response.headers["retry-after"]) >= 1
    assert not exc.response.headers["content-type"].startswith("text/event-stream")
    assert elapsed < keepalive, f"answered after {elapsed:.2f} s, not within one keep-alive interval"
    keys = {c[0] for c in _calls(fake)}
    assert keys == {"test-key", "second-key"}, "both targets were tried"


def test_max_total_wait_bounds_the_retries_of_a_non_streamed_request(make_gateway, fake) -> None:
    gw = make_gateway(
        upstreams=[gemini("ai", fake.url, "test-key")],
        retry={"max_attempts": 10, "max_total_wait": 1, "backoff_initial": 0.01, "backoff_max": 0.05},
    )
    with oai(gw) as client:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(
                model="gemini-2.5-flash", messages=msg("x\n" + directive(error={"status": 503, "retry_delay": "0.6s"}))
            )
        elapsed = time.monotonic() - started
    assert info.value.status_code == 503
    assert int(info.value.response.headers["retry-after"]) >= 1
    # 0 s: 503, 0.6 s fits the 1 s budget -> retry; 0.6 s: 503, 1.2 s does not -> give up
    assert info.value.response.headers["x-gemini-proxy-attempts"] == "2"
    assert len(_calls(fake)) == 2, "far fewer than max_attempts (10)"
    assert 0.55 <= elapsed < 1.5
