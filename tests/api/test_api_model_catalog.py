"""`ModelCatalog`: per-upstream last good lists, refresh, failure back-off, time bound.

Unit tests drive the catalog with a fake clock and a scripted client (no
sleeping); end-to-end tests make the fake Gemini refuse or delay a listing
(a key it does not accept, `latency_ms`) and check `GET /v1/models`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from app.api.models import ModelCatalog
from app.errors import UpstreamCredentialsFailed, UpstreamUnavailable
from app.gateway.upstreams import Credential, Upstream
from app.upstream.auth import ApiKeyAuth
from app.upstream.client import Endpoint
from app.upstream.errors import error_from_google
from gateway_harness import TEST_KEYS

pytestmark = pytest.mark.anyio


class Clock:
    """Starts where a freshly booted machine's monotonic clock is: near zero."""

    def __init__(self, now: float = 3.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def page(*ids: str, next_token: str = "") -> dict[str, Any]:
    models = [{"name": f"models/{i}", "supportedGenerationMethods": ["generateContent"]} for i in ids]
    body: dict[str, Any] = {"models": models}
    if next_token:
        body["nextPageToken"] = next_token
    return body


Answer = Callable[[str, str], Any]  # (upstream host, page token) -> page | exception | awaitable


class ScriptedClient:
    """Stands in for `UpstreamClient.get_json`; records (host, page token, headers) of every call."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, dict[str, str]]] = []

    async def get_json(self, url: str, headers: dict[str, str]) -> dict[str, Any]:
        host = httpx.URL(url).host
        token = dict(parse_qsl(httpx.URL(url).query.decode())).get("pageToken", "")
        self.calls.append((host, token, headers))
        result = self.answer(host, token)
        if asyncio.iscoroutine(result):
            result = await result
        if isinstance(result, BaseException):
            raise result
        return result

    def hosts(self) -> list[str]:
        return [host for host, token, _ in self.calls if not token]  # one entry per listing


def upstream(name: str, clock: Clock, *keys: str) -> Upstream:
    creds = [Credential(ApiKeyAuth(k), f"{name}#{i}", f"key:{name}#{i}") for i, k in enumerate(keys, start=1)]
    return Upstream(name, "gemini", Endpoint.gemini(f"http://{name}.test"), creds, clock=clock)


def gateway(client: ScriptedClient, *upstreams: Upstream) -> Any:
    return SimpleNamespace(client=client, upstreams=list(upstreams))


UNAVAILABLE = UpstreamUnavailable("Could not reach the upstream (ClientConnectorError).")


async def test_first_listing_is_made_at_once_on_a_freshly_booted_machine() -> None:
    clock = Clock(0.5)
    client = ScriptedClient(lambda host, token: page("gemini-a"))
    catalog = ModelCatalog(clock)
    assert await catalog.upstream_ids(gateway(client, upstream("a", clock, "key-a"))) == ["gemini-a"]
    assert client.calls[0][2] == {"x-goog-api-key": "key-a"}


async def test_failed_first_listing_is_retried_after_the_backoff_then_refreshed_after_ten_minutes() -> None:
    clock = Clock()
    answers: list[Any] = [UNAVAILABLE, page("gemini-a", "gemini-b"), page("gemini-c")]
    client = ScriptedClient(lambda host, token: answers.pop(0))
    catalog = ModelCatalog(clock)
    state = gateway(client, upstream("a", clock, "key-a"))

    assert await catalog.upstream_ids(state) == []  # failed: nothing cached as the truth
    clock.now += 1.9
    assert await catalog.upstream_ids(state) == []  # still backing off: no new call
    assert len(client.calls) == 1
    clock.now += 0.1
    assert await catalog.upstream_ids(state) == ["gemini-a", "gemini-b"]  # complete after the back-off
    clock.now += 599
    assert await catalog.upstream_ids(state) == ["gemini-a", "gemini-b"]
    assert len(client.calls) == 2
    clock.now += 1
    assert await catalog.upstream_ids(state) == ["gemini-c"]  # refreshed after ten minutes
    assert len(client.calls) == 3


async def test_backoff_doubles_up_to_a_minute_and_resets_after_a_good_listing() -> None:
    clock = Clock()
    failing = True
    client = ScriptedClient(lambda host, token: UNAVAILABLE if failing else page("gemini-a"))
    catalog = ModelCatalog(clock)
    state = gateway(client, upstream("a", clock, "key-a"))
    waits = []
    for _ in range(8):
        await catalog.upstream_ids(state)
        wait = catalog.listings["a"].retry_at - clock.now
        waits.append(wait)
        clock.now += wait
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60]
    assert len(client.calls) == 8
    failing = False
    assert await catalog.upstream_ids(state) == ["gemini-a"]
    clock.now += 600
    failing = True
    assert await catalog.upstream_ids(state) == ["gemini-a"]  # the last good list stays in use
    assert catalog.listings["a"].retry_at - clock.now == 2  # counting starts over


async def test_a_failing_refresh_keeps_the_last_good_list() -> None:
    clock = Clock()
    answers: list[Any] = [page("gemini-a"), error_from_google(500, b'{"error": {"code": 500, "message": "boom"}}')]
    client = ScriptedClient(lambda host, token: answers.pop(0))
    catalog = ModelCatalog(clock)
    state = gateway(client, upstream("a", clock, "key-a"))
    assert await catalog.upstream_ids(state) == ["gemini-a"]
    clock.now += 600
    assert await catalog.upstream_ids(state) == ["gemini-a"]
    assert catalog.listings["a"].failures == 1


async def test_a_listing_whose_second_page_fails_is_not_taken_for_the_truth() -> None:
    clock = Clock()
    second_page_fails = True

    def answer(host: str, token: str) -> Any:
        if not token:
            return page("gemini-a", next_token="p2")
        return UNAVAILABLE if second_page_fails else page("gemini-b")

    client = ScriptedClient(answer)
    catalog = ModelCatalog(clock)
    state = gateway(client, upstream("a", clock, "key-a"))
    assert await catalog.upstream_ids(state) == []  # page 1 alone is not the list
    assert catalog.listings["a"].ids is None
    clock.now += 2
    second_page_fails = False
    assert await catalog.upstream_ids(state) == ["gemini-a", "gemini-b"]
    clock.now += 600
    second_page_fails = True
    assert await catalog.upstream_ids(state) == ["gemini-a", "gemini-b"]  # not the partial ["gemini-a"]
    assert [t for _, t, _ in client.calls] == ["", "p2", "", "p2", "", "p2"]


async def test_no_usable_credential_counts_as_a_failed_listing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "gemini_proxy.models")
    clock = Clock()
    client = ScriptedClient(lambda host, token: page("gemini-a"))
    catalog = ModelCatalog(clock)
    up = upstream("a", clock, "key-a")
    up.cool_down(up.credentials[0], 30)  # e.g. after a 429: pick() is None for 30 s
    state = gateway(client, up)
    assert await catalog.upstream_ids(state) == []
    assert client.calls == [] and catalog.listings["a"].failures == 1
    assert "upstream a failed: no usable credential" in caplog.text
    clock.now += 2
    assert await catalog.upstream_ids(state) == []  # still cooling down: failed again, not cached
    assert catalog.listings["a"].failures == 2
    clock.now += 30
    assert await catalog.upstream_ids(state) == ["gemini-a"]
    assert "upstream a works again" in caplog.text
    assert "key-a" not in caplog.text


async def test_auth_headers_that_fail_count_as_a_failed_listing(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenAuth:
        async def headers(self) -> dict[str, str]:
            raise UpstreamCredentialsFailed()

    clock = Clock()
    client = ScriptedClient(lambda host, token: page("gemini-v"))
    catalog = ModelCatalog(clock)
    endpoint = Endpoint.vertex("p", "global", "http://vx.test")
    up = Upstream("vx", "vertex", endpoint, [Credential(BrokenAuth(), "vx#1", "project:p")], clock=clock)
    assert await catalog.upstream_ids(gateway(client, up)) == []
    assert client.calls == [] and catalog.listings["vx"].failures == 1
    assert "upstream vx failed: credential vx#1 gave no auth headers" in caplog.text


async def test_upstreams_are_listed_concurrently_and_a_slow_one_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    b_listed = asyncio.Event()

    async def slow_a() -> Any:
        await b_listed.wait()  # listed one after the other, `a` would wait here until the time bound
        await asyncio.sleep(3600)

    def answer(host: str, token: str) -> Any:
        if host == "a.test":
            return slow_a()
        b_listed.set()
        return page("gemini-b")

    client = ScriptedClient(answer)
    catalog = ModelCatalog(clock, timeout=0.2)
    state = gateway(client, upstream("a", clock, "key-a"), upstream("b", clock, "key-b"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await catalog.upstream_ids(state) == ["gemini-b"]
    assert loop.time() - started < 2
    assert catalog.listings["a"].failures == 1 and catalog.listings["b"].failures == 0
    assert "upstream a failed: no complete answer within 0.2 s" in caplog.text


async def test_concurrent_requests_share_one_listing() -> None:
    clock = Clock()

    async def slowly() -> Any:
        await asyncio.sleep(0.05)
        return page("gemini-a")

    client = ScriptedClient(lambda host, token: slowly())
    catalog = ModelCatalog(clock)
    state = gateway(client, upstream("a", clock, "key-a"))
    results = await asyncio.gather(*(catalog.upstream_ids(state) for _ in range(5)))
    assert results == [["gemini-a"]] * 5
    assert len(client.calls) == 1


async def test_merged_in_upstream_order_and_an_upstream_without_credentials_is_not_listed(caplog) -> None:
    clock = Clock()
    client = ScriptedClient(lambda host, token: page("gemini-x", "gemini-" + host[0]))
    catalog = ModelCatalog(clock)
    byok = upstream("c", clock)  # bring-your-own-key: no key of the gateway's own
    state = gateway(client, upstream("a", clock, "key-a"), byok, upstream("b", clock, "key-b"))
    assert await catalog.upstream_ids(state) == ["gemini-x", "gemini-a", "gemini-b"]
    assert sorted(client.hosts()) == ["a.test", "b.test"]
    assert "failed" not in caplog.text


# -- end to end, against the fake Gemini -------------------------------------------------------------------


def _listings(fake: Any) -> list[dict[str, Any]]:
    return [r for r in fake.requests() if r["method"] == "GET" and r["path"].endswith("/models")]


def _ids(gw: Any) -> list[str]:
    r = httpx.get(gw.url + "/v1/models", timeout=30)
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["data"]]


def test_failed_listing_then_complete_list_after_the_backoff(make_gateway, fake, caplog) -> None:
    caplog.set_level(logging.INFO, "gemini_proxy.models")
    gw = make_gateway(aliases={"gpt-4o-mini": "gemini-2.5-flash"})
    clock = Clock()
    gw.app.state.model_catalog = ModelCatalog(clock)
    fake.config(api_keys=["second-key"])  # the gateway's `test-key` is refused: the first listing fails

    assert _ids(gw) == ["gpt-4o-mini"]
    fake.config(api_keys=list(TEST_KEYS))
    assert _ids(gw) == ["gpt-4o-mini"]  # within the back-off: not listed again
    assert [r["status"] for r in _listings(fake)] == [400]
    clock.now += 2
    ids = _ids(gw)
    assert ids[0] == "gpt-4o-mini"
    assert {"gemini-2.5-flash", "gemini-2.0-flash", "gemini-2.5-pro", "gemini-3-pro-preview"} <= set(ids)
    assert [r["status"] for r in _listings(fake)] == [400, 200]
    assert "upstream fake failed: Google answered 400 INVALID_ARGUMENT: API key not valid" in caplog.text
    assert "test-key" not in caplog.text


def test_a_slow_listing_does_not_hold_up_the_models_endpoint(make_gateway, fake) -> None:
    gw = make_gateway(aliases={"gpt-4o-mini": "gemini-2.5-flash"})
    clock = Clock()
    gw.app.state.model_catalog = ModelCatalog(clock, timeout=0.3)
    fake.config(latency_ms=2000)
    with httpx.Client(timeout=30) as http:
        r = http.get(gw.url + "/v1/models")
        assert r.elapsed.total_seconds() < 3
    assert [m["id"] for m in r.json()["data"]] == ["gpt-4o-mini"]
    fake.config(latency_ms=0)
    clock.now += 2
    assert "gemini-2.5-flash" in _ids(gw)
