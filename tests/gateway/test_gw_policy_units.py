"""Unit tests of the key pool (`Upstream`) and the retry loop (`Dispatcher`) on a fake clock.

No network: `once` is a stub that fails as scripted, sleeps advance a fake
clock, so back-off, RetryInfo, cool-downs, daily-quota parking and fall-back
are checked exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.errors import RateLimited, UpstreamError, UpstreamUnavailable
from app.gateway.dispatch import Dispatcher, UpstreamCall
from app.gateway.routing import Target
from app.gateway.upstreams import DEFAULT_COOLDOWN, Credential, Upstream, seconds_until_daily_reset
from app.settings import RetrySettings
from app.translate.capabilities import ModelCapabilities
from app.translate.chat_request import GeminiCall
from app.translate.chat_response import ResponseOptions
from app.upstream.auth import ApiKeyAuth
from app.upstream.client import Endpoint

DAILY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"


NOON_PACIFIC = 1796673600.0  # 2026-12-07 12:00 in Los Angeles


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _cred(label: str, group: str | None = None) -> Credential:
    return Credential(ApiKeyAuth("secret-" + label), label, group or f"key:{label}")


def _upstream(clock: Clock, *creds: Credential, name: str = "ai") -> Upstream:
    return Upstream(name, "gemini", Endpoint.gemini("http://fake"), list(creds), clock=clock)


def _target(upstream: Upstream, model: str = "gemini-2.5-flash", priority: int = 0) -> Target:
    return Target(upstream, model, ModelCapabilities(), priority)


def _prepare(target: Target) -> UpstreamCall[GeminiCall]:
    return UpstreamCall("generateContent", b'{"contents": []}', GeminiCall({"contents": []}, False, ResponseOptions(model=target.model)))


def _google(code: int, retry_after: float | None = None, quota: str | None = None, reason: str | None = None) -> UpstreamError:
    status = {429: 429, 500: 500, 503: 503, 504: 504, 400: 400, 403: 403, 404: 404}[code]
    return UpstreamError(
        f"google {code}", google_code=code, retry_after=retry_after, quota_ids=(quota,) if quota else (),
        reason=reason, status=status,
    )


class Script:
    """`once` for the dispatcher: pops one outcome per call (an exception to raise, or a result)."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, target: Target, call: UpstreamCall[GeminiCall], headers: dict[str, str]) -> Any:
        self.calls.append((target.label, headers["x-goog-api-key"]))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def _dispatcher(clock: Clock, rng: Callable[[], float] = lambda: 0.5, **retry: Any) -> Dispatcher:
    settings = RetrySettings(**{"max_attempts": 3, "backoff_initial": 0.5, "backoff_max": 4.0, "max_retry_delay": 30.0, **retry})
    return Dispatcher(client=None, retry=settings, sleep=clock.sleep, rng=rng, clock=clock)  # type: ignore[arg-type]


async def _run(dispatcher: Dispatcher, targets: list[Target], script: Script) -> Any:
    return await dispatcher.run(targets, _prepare, script)


# ------------------------------------------------------------------ key pool


def test_keys_rotate_round_robin_and_skip_cooling_groups() -> None:
    clock = Clock()
    a1, a2, b, c = _cred("a1", "project:A"), _cred("a2", "project:A"), _cred("b"), _cred("c")
    up = _upstream(clock, a1, a2, b, c)
    assert [up.pick().label for _ in range(5)] == ["a1", "a2", "b", "c", "a1"]
    assert up.cool_down(a1, 7.0) == 7.0  # Google's retryDelay
    assert [up.pick().label for _ in range(4)] == ["b", "c", "b", "c"], "the whole project A rests"
    assert up.wait_time() == 0
    clock.now += 7.0
    assert {up.pick().label for _ in range(4)} == {"a1", "a2", "b", "c"}


def test_all_keys_cooling_reports_the_shortest_wait() -> None:
    clock = Clock()
    a, b = _cred("a"), _cred("b")
    up = _upstream(clock, a, b)
    up.cool_down(a, 20)
    up.cool_down(b, None)  # no RetryInfo: the default
    assert up.pick() is None
    assert up.wait_time() == pytest.approx(min(20, DEFAULT_COOLDOWN))
    clock.now += DEFAULT_COOLDOWN
    assert up.pick() is b


def test_daily_quota_parks_the_group_until_midnight_pacific() -> None:
    clock = Clock()
    pacific = ZoneInfo("America/Los_Angeles")
    wall = datetime(2026, 3, 10, 21, 30, tzinfo=pacific).timestamp()  # 21:30 in California
    a, b = _cred("a", "project:A"), _cred("b", "project:A")
    up = Upstream("ai", "gemini", Endpoint.gemini(), [a, b], clock=clock, wall_clock=lambda: wall)
    rest = up.cool_down(a, 30, daily=True)
    assert rest == pytest.approx(2.5 * 3600)
    assert up.pick() is None and up.wait_time() == pytest.approx(2.5 * 3600)
    clock.now += 2.5 * 3600
    assert up.pick() is not None
    # Just before midnight: never less than a minute.
    assert seconds_until_daily_reset(datetime(2026, 3, 10, 23, 59, 59, tzinfo=pacific).timestamp()) == 60.0


def test_parking_one_refused_key_leaves_its_group_alone() -> None:
    clock = Clock()
    a, b = _cred("a", "project:A"), _cred("b", "project:A")
    up = _upstream(clock, a, b)
    up.refuse(a)
    assert [up.pick().label for _ in range(3)] == ["b", "b", "b"]


# ------------------------------------------------------------------ retry loop


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    clock = Clock()
    low = _dispatcher(clock, rng=lambda: 0.0)
    high = _dispatcher(clock, rng=lambda: 0.999999)
    assert [low.backoff(t, None) for t in (1, 2, 3, 4, 5, 6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert [round(high.backoff(t, None), 4) for t in (1, 2, 3, 4, 5, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert low.backoff(2, 7.5) == 7.5  # RetryInfo wins


@pytest.mark.anyio
@pytest.mark.parametrize("code", [500, 503, 504])
async def test_server_errors_are_retried_with_backoff(code: int) -> None:
    clock = Clock()
    up = _upstream(clock, _cred("a"))
    script = Script(_google(code), _google(code), {"ok": True})
    result, outcome = await _run(_dispatcher(clock), [_target(up)], script)
    assert result == {"ok": True} and outcome.attempts == 3 and outcome.credential == "a"
    assert clock.sleeps == [0.375, 0.75]  # 0.5 * 2**(n-1) * (0.5 + 0.5 / 2)
    assert outcome.headers() == {"x-gemini-proxy-attempts": "3", "x-gemini-proxy-target": "ai/gemini-2.5-flash"}


@pytest.mark.anyio
async def test_connection_failures_are_retried() -> None:
    clock = Clock()
    up = _upstream(clock, _cred("a"))
    script = Script(UpstreamUnavailable("reset"), UpstreamUnavailable("slow", status=504), "fine")
    result, outcome = await _run(_dispatcher(clock), [_target(up)], script)
    assert result == "fine" and outcome.attempts == 3


@pytest.mark.anyio
async def test_retry_info_is_honoured_up_to_the_bound_then_falls_back() -> None:
    clock = Clock()
    up1, up2 = _upstream(clock, _cred("a"), name="one"), _upstream(clock, _cred("b"), name="two")
    script = Script(_google(503, retry_after=3.0), _google(503, retry_after=31.0), "from two")
    result, outcome = await _run(_dispatcher(clock), [_target(up1), _target(up2)], script)
    assert clock.sleeps == [3.0], "3 s honoured; 31 s is beyond max_retry_delay: the next target at once"
    assert result == "from two" and outcome.target.upstream is up2 and outcome.attempts == 3
    assert [c[0] for c in script.calls] == ["one/gemini-2.5-flash", "one/gemini-2.5-flash", "two/gemini-2.5-flash"]


@pytest.mark.anyio
async def test_429_moves_to_another_quota_group_without_waiting() -> None:
    clock = Clock()
    a1, a2, b = _cred("a1", "project:A"), _cred("a2", "project:A"), _cred("b", "project:B")
    up = _upstream(clock, a1, a2, b)
    script = Script(_google(429, retry_after=40.0), "served", "again")
    dispatcher = _dispatcher(clock)
    result, outcome = await _run(dispatcher, [_target(up)], script)
    assert result == "served" and outcome.credential == "b" and outcome.attempts == 2
    assert clock.sleeps == []
    _, second = await _run(dispatcher, [_target(up)], script)
    assert second.credential == "b", "project A still rests"
    assert [c[1] for c in script.calls] == ["secret-a1", "secret-b", "secret-b"]


@pytest.mark.anyio
async def test_all_keys_resting_is_a_429_with_retry_after_and_no_call() -> None:
    clock = Clock()
    a, b = _cred("a"), _cred("b")
    up = _upstream(clock, a, b)
    script = Script(_google(429, retry_after=45.0), _google(429, retry_after=50.0))
    dispatcher = _dispatcher(clock)
    with pytest.raises(UpstreamError) as first:
        await _run(dispatcher, [_target(up)], script)
    assert first.value.google_code == 429 and len(script.calls) == 2 and clock.sleeps == []
    clock.now += 5
    with pytest.raises(RateLimited) as later:
        await _run(dispatcher, [_target(up)], script)
    assert len(script.calls) == 2, "no call while every key rests"
    assert later.value.status == 429 and later.value.headers["retry-after"] == "40"


@pytest.mark.anyio
async def test_short_rest_on_the_last_target_is_waited_out() -> None:
    clock = Clock()
    up = _upstream(clock, _cred("a"))
    script = Script(_google(429, retry_after=1.5), "after the rest")
    result, outcome = await _run(_dispatcher(clock), [_target(up)], script)
    assert result == "after the rest" and outcome.attempts == 2
    assert sum(clock.sleeps) == pytest.approx(1.5)


@pytest.mark.anyio
async def test_daily_quota_is_not_retried_and_parks_the_key() -> None:
    clock = Clock()
    a, b = _cred("a"), _cred("b")
    up = _upstream(clock, a, b)
    up.wall_clock = lambda: NOON_PACIFIC  # 12 hours before Google's daily reset, whatever the time of the run
    script = Script(_google(429, quota=DAILY), "b serves", "b again")
    dispatcher = _dispatcher(clock)
    await _run(dispatcher, [_target(up)], script)
    clock.now += 3600  # an hour later a is still parked
    _, outcome = await _run(dispatcher, [_target(up)], script)
    assert outcome.credential == "b" and [c[1] for c in script.calls] == ["secret-a", "secret-b", "secret-b"]
    assert clock.sleeps == []


@pytest.mark.anyio
@pytest.mark.parametrize("code", [400, 403])
async def test_client_errors_end_at_once_and_never_penalise_a_key(code: int) -> None:
    clock = Clock()
    a, b = _cred("a"), _cred("b")
    up = _upstream(clock, a, b)
    script = Script(_google(code), "next")
    with pytest.raises(UpstreamError) as info:
        await _run(_dispatcher(clock), [_target(up), _target(_upstream(clock, _cred("z"), name="other"))], script)
    assert info.value.status == code and info.value.headers["x-gemini-proxy-attempts"] == "1"
    assert len(script.calls) == 1 and clock.sleeps == []
    assert up.wait_time() == 0 and up._cooling == {} and up._parked == {}


@pytest.mark.anyio
async def test_exhausted_retries_raise_the_last_error_with_the_attempt_count() -> None:
    clock = Clock()
    up1, up2 = _upstream(clock, _cred("a"), name="one"), _upstream(clock, _cred("b"), name="two")
    script = Script(*[_google(503)] * 6)
    with pytest.raises(UpstreamError) as info:
        await _run(_dispatcher(clock), [_target(up1), _target(up2)], script)
    assert info.value.status == 503 and info.value.headers["x-gemini-proxy-attempts"] == "6"
    assert len(clock.sleeps) == 4  # between tries of each target, none after the last try


@pytest.mark.anyio
async def test_refused_key_is_parked_and_the_next_key_serves() -> None:
    clock = Clock()
    a, b = _cred("a"), _cred("b")
    up = _upstream(clock, a, b)
    script = Script(_google(400, reason="API_KEY_INVALID"), "b", "b2")
    dispatcher = _dispatcher(clock)
    _, outcome = await _run(dispatcher, [_target(up)], script)
    _, again = await _run(dispatcher, [_target(up)], script)
    assert outcome.credential == "b" and again.credential == "b" and outcome.attempts == 2



def test_pick_takes_turns_without_the_clock_until_something_rests_then_skips_what_rests() -> None:
    now = [100.0]
    creds = [Credential(ApiKeyAuth(f"k{i}"), f"ai#{i}", f"key:ai#{i}") for i in range(3)]
    up = Upstream("ai", "gemini", Endpoint.gemini("http://x", "v1beta"), creds, clock=lambda: now[0])
    assert [up.pick("m").label for _ in range(4)] == ["ai#0", "ai#1", "ai#2", "ai#0"]  # type: ignore[union-attr]
    assert up.usable("m") and up.available("m") == 3
    up.cool_down(creds[1], 30, model="m")
    assert [up.pick("m").label for _ in range(3)] == ["ai#2", "ai#0", "ai#2"]  # type: ignore[union-attr]
    assert up.pick("other").label == "ai#0"  # type: ignore[union-attr]  # a rest is per model
    for cred in (creds[0], creds[2]):
        up.cool_down(cred, 30, model="m")
    assert not up.usable("m") and up.pick("m") is None and up.usable("other")
    now[0] += 31
    assert up.usable("m") and up.pick("m") is not None
    assert not Upstream("none", "gemini", Endpoint.gemini("http://x", "v1beta"), []).usable()
