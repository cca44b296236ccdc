"""Limits and shared state through a real Redis (tests/team/redis_server.py).

In one process: limits, settlement and budgets on Redis, and a Redis that dies under traffic (local limits,
no 5xx, `gemini_proxy_storage_up{backend="redis"}` 0, then 1 once it is back). Between two gateway
processes (`python -m app serve`) sharing one Redis: one rpm limit for both, a Gemini 3 tool loop whose
turns alternate between them keeps its thought signatures, and a 429 from Google on one rests the key on
the other.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.pipeline.context import Usage
from gateway_harness import FakeGemini, GatewayServer, metric_value

from .redis_server import RedisServer
from .team_support import MODEL, GatewayProcess, clean_env, sdk, wait_until

KEY = "sk-redis-limited-0123456789"
SHARED = "sk-redis-shared-0123456789"
FREE = "sk-redis-free-0123456789"


def chat(url: str, key: str, text: str = "hello", model: str = MODEL, **body: Any) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": text}], **body})


def fake_line(**directive: Any) -> str:
    return f"hello\n#fake {json.dumps(directive)}"


@pytest.fixture
def redis_gateway(make_gateway: Callable[..., GatewayServer], redis: RedisServer, fake: FakeGemini) -> Callable[..., GatewayServer]:
    def start(key_limits: dict[str, Any]) -> GatewayServer:
        keys = [{"name": "limited", "id": "rl", "key": KEY, "limits": key_limits}, {"name": "free", "key": FREE}]
        return make_gateway(auth={"client_keys": keys}, storage={"redis_url": redis.url})

    return start


def test_limits_and_settlement_on_redis(redis_gateway, redis, fake):
    gateway = redis_gateway({"rpm": 4, "tpm": 100_000, "concurrency": 1, "tokens_per_day": 10**6})
    assert metric_value(gateway, "gemini_proxy_storage_up", backend="redis") == 1

    def probe() -> tuple[int, int]:
        time.sleep(0.2)  # the previous request's settlement reaches Redis after its answer: let it land
        response = chat(gateway.url, KEY, "probe", max_tokens=50)
        assert response.status_code == 200
        return int(response.headers["x-ratelimit-remaining-tokens"]), response.json()["usage"]["total_tokens"]

    before, probe_tokens = probe()
    used = chat(gateway.url, KEY, fake_line(usage={"promptTokenCount": 900, "candidatesTokenCount": 100}), max_tokens=3000)
    assert used.status_code == 200 and used.headers["x-ratelimit-remaining-requests"] == "2"
    total = used.json()["usage"]["total_tokens"]
    after, _ = probe()
    assert before - after == probe_tokens + total  # settled in Redis with Google's usage
    assert chat(gateway.url, KEY).status_code == 200
    refused = chat(gateway.url, KEY)
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 120  # when one more fits: within two minutes
    # the refusal carries the other window's headers too, read from Redis (nothing taken)
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < int(refused.headers["x-ratelimit-remaining-tokens"]) < 100_000
    assert refused.headers["x-ratelimit-limit-tokens"] == "100000"
    keys = redis.command("KEYS", "gemini-proxy:*")
    assert b"gemini-proxy:win:key:rl/rpm" in keys and b"budget:key:rl:tokens:" in keys
    assert KEY.encode() not in keys  # never the secret


def test_concurrency_leases_on_redis_expire_and_release(redis_gateway, redis, fake):
    gateway = redis_gateway({"concurrency": 1})
    results: list[int] = []
    slow = threading.Thread(target=lambda: results.append(chat(gateway.url, KEY, fake_line(first_byte_delay_ms=1200)).status_code))
    slow.start()
    fake.wait_for(lambda s: s["active_requests"] == 1, timeout=10)
    assert redis.command("ZCARD", "gemini-proxy:leases:{key:rl}").strip() == b":1"
    assert chat(gateway.url, KEY).status_code == 429
    slow.join()
    assert results == [200]
    # released just before the answer's last bytes went out (release_leases)
    wait_until(lambda: redis.command("ZCARD", "gemini-proxy:leases:{key:rl}").strip() == b":0", 5)
    ttl = int(redis.command("PTTL", "gemini-proxy:leases:{key:rl}").strip()[1:])
    assert ttl < 0 or ttl <= 10_000  # a lease set never outlives its TTL (a crashed replica leaks nothing)
    assert chat(gateway.url, KEY).status_code == 200


def test_redis_lost_under_traffic_degrades_to_local_limits_without_5xx(redis_gateway, redis, fake, caplog):
    caplog.set_level("INFO", logger="gemini_proxy.redis")
    gateway = redis_gateway({"rpm": 1000})
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        deadline = time.monotonic() + 60  # bounded
        while not stop.is_set() and time.monotonic() < deadline:
            statuses.append(chat(gateway.url, KEY).status_code)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        wait_until(lambda: len(statuses) >= 5, 10)
        redis.kill()
        wait_until(lambda: metric_value(gateway, "gemini_proxy_storage_up", backend="redis") == 0, 10)
        seen = len(statuses)
        wait_until(lambda: len(statuses) >= seen + 10, 10)  # served with local limits meanwhile
        redis.start()
        wait_until(lambda: metric_value(gateway, "gemini_proxy_storage_up", backend="redis") == 1, 10)
        seen = len(statuses)
        wait_until(lambda: len(statuses) >= seen + 5, 10)
    finally:
        stop.set()
        worker.join()
    assert set(statuses) == {200}, sorted(set(statuses))
    assert b"gemini-proxy:win:key:rl/rpm" in redis.command("KEYS", "gemini-proxy:*")  # counting in Redis again
    logged = caplog.text
    assert "is unreachable" in logged and "serving with local limits" in logged and "answers: limits" in logged


def test_a_hung_redis_costs_at_most_its_short_timeout(redis_gateway, redis, fake):
    gateway = redis_gateway({"rpm": 1000, "concurrency": 10})
    assert chat(gateway.url, KEY).status_code == 200
    redis.pause(True)
    try:
        durations = []
        for _ in range(4):
            started = time.monotonic()
            assert chat(gateway.url, KEY).status_code == 200
            durations.append(time.monotonic() - started)
        assert max(durations) < 2.0, durations  # not redis-py's 5 s per call
        assert sum(durations[1:]) < 1.5, durations  # the breaker is open: the next ones do not wait at all
        assert metric_value(gateway, "gemini_proxy_storage_up", backend="redis") == 0
    finally:
        redis.pause(False)
    wait_until(lambda: metric_value(gateway, "gemini_proxy_storage_up", backend="redis") == 1, 10)
    assert chat(gateway.url, KEY).status_code == 200


# --- two gateway processes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, fake_gemini: FakeGemini, redis_server: RedisServer) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    root = tmp_path_factory.mktemp("pair")
    keys = [{"name": "shared", "id": "sh", "key": SHARED, "limits": {"rpm": 5}}, {"name": "free", "key": FREE}]
    env = clean_env(
        GEMINI_API_KEY="test-key", GEMINI_BASE_URL=fake_gemini.url,
        GEMINI_PROXY_STORAGE__DATABASE_URL=f"sqlite:///{root}/gateway.db",
        GEMINI_PROXY_STORAGE__REDIS_URL=redis_server.url, GEMINI_PROXY_AUTH__CLIENT_KEYS=json.dumps(keys),
    )
    one = GatewayProcess(env, root / "one.log")
    try:
        two = GatewayProcess(env, root / "two.log")
    except BaseException:
        one.stop()
        raise
    try:
        yield one, two
    finally:
        one.stop()
        two.stop()
        for process in (one, two):
            assert SHARED not in process.output() and FREE not in process.output()


def test_a_crashed_process_leaks_no_concurrency_slot(tmp_path, fake_gemini, redis_server, redis, fake):
    """A process killed (SIGKILL) while it serves a key's only concurrency slot: the other process admits the key's
    next request within seconds (the lease is no longer renewed), not after a long TTL."""
    key = "sk-one-at-a-time"
    env = clean_env(
        GEMINI_API_KEY="test-key", GEMINI_BASE_URL=fake_gemini.url,
        GEMINI_PROXY_STORAGE__DATABASE_URL=f"sqlite:///{tmp_path}/crash.db", GEMINI_PROXY_STORAGE__REDIS_URL=redis.url,
        GEMINI_PROXY_AUTH__CLIENT_KEYS=json.dumps([{"name": "solo", "id": "solo", "key": key, "limits": {"concurrency": 1}}]),
    )
    doomed = GatewayProcess(env, tmp_path / "doomed.log")
    survivor = None
    try:
        survivor = GatewayProcess(env, tmp_path / "survivor.log")
        slow = threading.Thread(target=lambda: _quietly(lambda: chat(doomed.url, key, fake_line(first_byte_delay_ms=15_000))),
                                daemon=True)
        slow.start()
        fake.wait_for(lambda s: s["active_requests"] == 1, timeout=10)
        assert chat(survivor.url, key).status_code == 429  # the slot is held, on the other process
        doomed.proc.kill()
        doomed.proc.wait(10)
        waited = wait_until(lambda: chat(survivor.url, key).status_code == 200, 20, step=0.5)
        assert waited < 15  # the lease's 10 s, a heartbeat's 2 s, and a margin
    finally:
        doomed.stop()
        if survivor is not None:
            survivor.stop()


def _quietly(call: Callable[[], Any]) -> None:
    try:
        call()
    except Exception:
        pass  # (its process was killed under it)


def test_two_processes_enforce_one_shared_limit(pair, redis, fake):
    one, two = pair
    statuses = [chat(gateway.url, SHARED).status_code for gateway in (one, two, one, two, one, two)]
    assert statuses.count(200) == 5 and statuses[-1] == 429, statuses
    assert chat(one.url, SHARED).status_code == 429 and chat(two.url, SHARED).status_code == 429
    assert chat(one.url, FREE).status_code == 200


def test_tool_loop_alternating_between_processes_keeps_its_signatures(pair, redis, fake):
    from features.feat_support import TOOLS, prompt, rebuilt, tool_result, turn_from_completion

    one, two = pair
    clients = [sdk(one.url, FREE), sdk(two.url, FREE)]
    model = "gemini-3-pro-preview"
    messages: list[Any] = [{"role": "user", "content": prompt("Plan my trip.", tool_steps=3)}]
    for step in range(3):
        turn = turn_from_completion(clients[step % 2].chat.completions.create(model=model, messages=messages, tools=TOOLS))
        assert turn.finish_reason == "tool_calls", turn
        messages.append(rebuilt(turn.content, turn.calls))  # as LangChain rebuilds it: the signature is not kept
        for call in turn.calls:
            messages.append(tool_result(call["id"], call["name"], call["arguments"], step))
    final = turn_from_completion(clients[1].chat.completions.create(model=model, messages=messages, tools=TOOLS))
    assert final.finish_reason == "stop" and final.content.startswith("Function results after 3 round(s)")
    # every step's signature came back from the store the other process wrote (no bypass, nothing refused)
    assert fake.stats()["signature_bypasses"] == 0


def test_a_google_429_on_one_process_rests_the_key_on_the_other(pair, redis, fake):
    one, two = pair
    model = "gemini-2.5-flash-lite"  # rests are per model: the other tests' model is not touched
    limited = chat(one.url, FREE, fake_line(fail_api_keys={"test-key": {"status": 429, "retry_delay": "30s"}}), model)
    assert limited.status_code == 429
    calls = len(fake.requests())
    time.sleep(0.3)  # the rest travels by pub/sub
    rested = chat(two.url, FREE, "hello", model)
    assert rested.status_code in (429, 503), rested.text
    assert len(fake.requests()) == calls  # the other process did not call Google with the resting key
    assert chat(two.url, FREE).status_code == 200  # another model is not resting


def test_a_process_started_later_learns_the_rests_in_force(pair, redis, fake, fake_gemini, tmp_path: Path):
    one, _ = pair
    model = "gemini-2.0-flash"
    assert chat(one.url, FREE, fake_line(fail_api_keys={"test-key": {"status": 429, "retry_delay": "30s"}}), model).status_code == 429
    env = clean_env(
        GEMINI_API_KEY="test-key", GEMINI_BASE_URL=fake_gemini.url,
        GEMINI_PROXY_STORAGE__DATABASE_URL=f"sqlite:///{tmp_path}/late.db",
        GEMINI_PROXY_STORAGE__REDIS_URL=redis.url,
    )
    late = GatewayProcess(env, tmp_path / "late.log")
    try:
        calls = len(fake.requests())
        assert chat(late.url, "x", "hello", model).status_code in (429, 503)
        assert len(fake.requests()) == calls
    finally:
        late.stop()


class SpentSource:
    """A budget source that says the same spend every time, and counts how often it was asked."""

    def __init__(self, tokens: int, usd: float) -> None:
        self.tokens, self.usd, self.asked = tokens, usd, 0

    async def spent(self, subject: str, since: float) -> tuple[int, float]:
        self.asked += 1
        return self.tokens, self.usd


def test_budgets_are_seeded_again_when_redis_comes_back(redis_gateway, redis, fake):
    gateway = redis_gateway({"tokens_per_month": 10**6, "usd_per_month": 100})

    source = gateway.state.limiter.budget_source = SpentSource(1000, 1.5)
    answer = chat(gateway.url, KEY)
    assert answer.status_code == 200
    assert source.asked == 1  # the month's tokens and USD: one query
    # the seed, then this request's own cost (priced before the settlement)
    usage = answer.json()["usage"]
    cost = gateway.state.recorder.prices.cost_micro(Usage(usage["prompt_tokens"], usage["completion_tokens"]), MODEL)
    assert cost and cost > 0
    usd_key = f"gemini-proxy:budget:key:rl:usd:{time.strftime('%Y-%m', time.gmtime())}"
    # settled just before the answer's last bytes (the whole settlement, on Redis)
    wait_until(lambda: int(redis.command("GET", usd_key).split(b"\r\n")[1]) == 1_500_000 + cost, 5)
    assert chat(gateway.url, KEY).status_code == 200 and source.asked == 1  # counted in Redis from then on
    redis.kill()
    assert chat(gateway.url, KEY).status_code == 200
    assert source.asked == 2  # the local counters start from what was spent, not from zero
    redis.start()  # empty: it lost the counters
    wait_until(lambda: metric_value(gateway, "gemini_proxy_storage_up", backend="redis") == 1, 10)
    assert chat(gateway.url, KEY).status_code == 200
    assert source.asked == 3


def test_a_budget_counter_gone_from_redis_is_seeded_again_not_restarted(redis_gateway, redis, fake, caplog):
    """Eviction or FLUSHDB while Redis stays up: the next reservation notices, and the counter is seeded again."""
    gateway = redis_gateway({"tokens_per_month": 10**6})

    source = gateway.state.limiter.budget_source = SpentSource(5000, 0.0)
    tokens_key = f"gemini-proxy:budget:key:rl:tokens:{time.strftime('%Y-%m', time.gmtime())}"

    def counter() -> int | None:
        reply = redis.command("GET", tokens_key)
        return None if reply.startswith(b"$-1") else int(reply.split(b"\r\n")[1])

    assert chat(gateway.url, KEY).status_code == 200 and source.asked == 1
    wait_until(lambda: (counter() or 0) > 5000, 5)
    redis.command("DEL", tokens_key)  # gone, while this process still holds it as seeded
    assert counter() is None
    settled = chat(gateway.url, KEY)
    assert settled.status_code == 200
    assert source.asked == 2  # seeded again from the usage records
    value = counter()
    assert value is not None and value >= 5000, value  # not restarted from this request's tokens
    assert metric_value(gateway, "gemini_proxy_storage_up", backend="redis") == 1  # not read as a Redis failure
    assert "seeded again" in caplog.text


def test_a_failing_budget_source_is_not_a_redis_failure(redis_gateway, redis, fake, caplog):
    gateway = redis_gateway({"tokens_per_day": 10**6})

    class Down:
        async def spent(self, subject: str, since: float) -> tuple[int, float]:
            raise OSError("connection to the database refused")

    gateway.state.limiter.budget_source = Down()
    with caplog.at_level("WARNING"):
        assert [chat(gateway.url, KEY, max_tokens=50).status_code for _ in range(2)] == [200, 200]
    assert metric_value(gateway, "gemini_proxy_storage_up", backend="redis") == 1  # the breaker stayed closed
    assert gateway.state.shared.up
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "unreachable" not in logged and "usage records failed (OSError)" in logged
    assert redis.command("EXISTS", f"gemini-proxy:budget:key:rl:tokens:{time.strftime('%Y-%m-%d', time.gmtime())}") == b":1\r\n"


def test_redis_down_at_start_divides_the_limits_by_the_workers(make_gateway, fake):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    keys = [{"name": "limited", "id": "rl", "key": KEY, "limits": {"rpm": 8}}]
    gateway = make_gateway(auth={"client_keys": keys}, storage={"redis_url": f"redis://127.0.0.1:{port}/0"},
                           server={"workers": 4})
    response = chat(gateway.url, KEY)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit-requests"] == "2"  # 8 // 4 workers, not 8 in each


# --- one script per admission and per settlement: lost replies, windows, early release ------------------------


def test_a_concurrency_one_key_making_sequential_requests_is_never_refused(redis_gateway, redis, fake):
    """The lease is released before the last bytes of the answer (not after, in the `finally`): a client that sends
    its next request as soon as it has read an answer finds its slot free, streamed or not."""
    import asyncio

    gateway = redis_gateway({"concurrency": 1})
    backend = gateway.state.limiter.shared
    settle = backend._settle

    async def slow_settle(**kwargs: Any) -> Any:  # a Redis farther away than this machine's
        await asyncio.sleep(0.05)
        return await settle(**kwargs)

    backend._settle = slow_settle
    statuses = [chat(gateway.url, KEY).status_code for _ in range(20)]
    with httpx.Client(timeout=30) as client:
        for _ in range(20):
            with client.stream("POST", gateway.url + "/v1/chat/completions", headers={"authorization": f"Bearer {KEY}"},
                               json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
                body = r.read()
                statuses.append(r.status_code)
                assert r.status_code != 200 or body.rstrip().endswith(b"data: [DONE]")
    assert statuses == [200] * 40, statuses


class Breaker:
    def __init__(self) -> None:
        self.failures: list[BaseException] = []

    def __call__(self, exc: BaseException) -> None:
        self.failures.append(exc)


def limiter_on(redis: RedisServer, **key_limits: Any) -> tuple[Any, Any, Breaker, Callable[[str], Any]]:
    from app.gateway.ratelimit import Limiter
    from app.gateway.shared import SharedState
    from app.pipeline.context import Limits, Principal, RequestContext

    state = SharedState(redis.url)
    backend = state.backend()
    breaker = Breaker()
    limiter = Limiter(shared=backend, shared_up=lambda: True, shared_failed=breaker, replicas=lambda: 1)
    principal = Principal.of_key("k", "k", limits=Limits(**key_limits))
    return state, limiter, breaker, lambda rid: RequestContext(rid, "POST", "/v1/chat/completions", principal=principal)


def lose_admission_replies(backend: Any, exc: type[BaseException]) -> Any:
    """From now on the admission script runs but its reply is lost (`exc` raised instead); returns the real script."""
    real = backend._admit

    async def ran_then_lost(**kwargs: Any) -> Any:
        await real(**kwargs)
        raise exc("reply lost")

    backend._admit = ran_then_lost
    return real


def number(reply: bytes) -> int:
    return int(reply.split(b"\r\n")[0][1:])


@pytest.mark.anyio
async def test_a_lost_settlement_releases_its_lease_at_the_next_call(redis):
    """A settlement whose reply is lost opens the breaker; its lease does not wait to expire: the next call
    that reaches Redis releases it (idempotent)."""
    state, limiter, breaker, request = limiter_on(redis, concurrency=1)
    backend = limiter.shared
    try:
        first = request("r1")
        await limiter.admit(first, 10, 10)
        assert number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == 1
        real = backend._settle

        async def lost(**_: Any) -> None:
            raise TimeoutError("reply lost")

        backend._settle = lost
        await limiter.settle(first)
        backend._settle = real
        assert len(breaker.failures) == 1 and number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == 1
        second = request("r2")
        await limiter.admit(second, 10, 10)  # not refused: the lost release was done first
        assert breaker.failures[1:] == [] and number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == 1
        await limiter.settle(second)
        assert number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == 0
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_an_admission_whose_reply_was_lost_is_undone_once(redis):
    """The script ran but its reply timed out: the request went on with local limits, and what the script took
    in Redis (window hits, budget reservation, lease) is undone by the next call, once."""
    state, limiter, breaker, request = limiter_on(redis, rpm=10, tpm=10_000, concurrency=1, tokens_per_month=10**6)
    backend = limiter.shared
    month = f"gemini-proxy:budget:key:k:tokens:{time.strftime('%Y-%m', time.gmtime())}"
    try:
        real = lose_admission_replies(backend, TimeoutError)
        lost = request("r1")
        await limiter.admit(lost, 100, 100)  # served by the local limits meanwhile
        assert lost.admission.backend is limiter.local and len(breaker.failures) == 1
        assert redis.command("HGET", "gemini-proxy:win:key:k/rpm", "c").endswith(b"1\r\n")
        assert number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == 1
        assert int(redis.command("GET", month).split(b"\r\n")[1]) == 200
        await limiter.settle(lost)
        backend._admit = real
        for rid, requests in (("r2", "9"), ("r3", "8")):  # the undo comes first, once (then no record is left)
            ctx = request(rid)
            await limiter.admit(ctx, 100, 100)
            assert ctx.admission.backend is backend and ctx.admission.headers["x-ratelimit-remaining-requests"] == requests
            assert int(ctx.admission.headers["x-ratelimit-remaining-tokens"]) == 10_000 - 200
            assert number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == 1
            assert int(redis.command("GET", month).split(b"\r\n")[1]) == 200
            ctx.usage = Usage(0, 0)
            await limiter.settle(ctx)  # nothing used: the tokens reserved are given back (same minute)
        assert breaker.failures[1:] == []
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_an_admission_cut_short_by_a_cancellation_is_undone(redis):
    """The client left while the admission script ran: the request is gone (no settlement will come), so what the
    script took is undone by the next call; and a cancellation of that undo keeps it pending, never drops it."""
    state, limiter, breaker, request = limiter_on(redis, rpm=10, concurrency=1)
    backend = limiter.shared
    try:
        real_undo = backend._undo
        real_admit = lose_admission_replies(backend, asyncio.CancelledError)
        with pytest.raises(asyncio.CancelledError):
            await limiter.admit(request("r1"), 10, 10)
        assert number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == 1
        backend._admit = real_admit

        async def undo_cancelled(**_: Any) -> Any:
            raise asyncio.CancelledError

        backend._undo = undo_cancelled
        with pytest.raises(asyncio.CancelledError):
            await limiter.admit(request("r2"), 10, 10)
        assert backend.lost_admissions  # still pending
        backend._undo = real_undo
        ctx = request("r3")
        await limiter.admit(ctx, 10, 10)  # the lease of r1 was released first: not refused
        assert ctx.admission.backend is backend and ctx.admission.headers["x-ratelimit-remaining-requests"] == "9"
        assert number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == 1
        await limiter.settle(ctx)
        assert number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == 0 and breaker.failures == []
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_redis_and_local_windows_are_the_same_epoch_minutes(redis):
    """Both count in fixed 60 s buckets on the epoch; a refund applies only while the reservation's minute is
    current, in Redis as locally."""
    from app.gateway.ratelimit import Backend, Plan, Settlement

    state, limiter, _, _ = limiter_on(redis)
    backend = limiter.shared
    local = Backend()
    try:
        plan = Plan("w1", [("key:k/tpm", 1000, 300)], [], [])
        shared, here = await backend.admit(plan), await local.admit(plan)
        now = int(redis.command("TIME").split(b"\r\n")[2])
        assert shared.window == here.window == now // 60, (shared, here, now)
        assert int(redis.command("HGET", "gemini-proxy:win:key:k/tpm", "m").split(b"\r\n")[1]) == shared.window
        for target in (backend, local):  # a refund for another minute's reservation changes nothing
            await target.settle(Settlement("w1", [], shared.window - 1, ["key:k/tpm"], -100, []))
        assert (await backend.admit(Plan("w2", [("key:k/tpm", 1000, 0)], [], []))).remaining == [700]
        assert (await local.admit(Plan("w2", [("key:k/tpm", 1000, 0)], [], []))).remaining == [700]
        for target in (backend, local):  # the current minute's: refunded
            await target.settle(Settlement("w1", [], shared.window, ["key:k/tpm"], -100, []))
        assert (await backend.admit(Plan("w3", [("key:k/tpm", 1000, 0)], [], []))).remaining == [800]
        assert (await local.admit(Plan("w3", [("key:k/tpm", 1000, 0)], [], []))).remaining == [800]
    finally:
        await state.redis.aclose()


class ScriptCalls:
    """Counts the scripts one RedisBackend runs (other processes on the same Redis, e.g. a module's gateways
    heartbeating, do not count)."""

    def __init__(self, backend: Any) -> None:
        self.count = 0
        for name in ("_admit", "_settle", "_undo", "_force"):
            setattr(backend, name, self._counting(getattr(backend, name)))

    def _counting(self, script: Any) -> Any:
        async def call(**kwargs: Any) -> Any:
            self.count += 1
            return await script(**kwargs)

        return call


def window_count(redis: RedisServer, window: str) -> int:
    reply = redis.command("HGET", f"gemini-proxy:win:{window}", "c")
    return 0 if reply.startswith(b"$-1") else int(reply.split(b"\r\n")[1])


def away_from_a_minute_boundary() -> None:
    """Wait while the minute is about to roll (a window's count would move to its weighted previous minute)."""
    while time.time() % 60 > 50:
        time.sleep(0.5)


@pytest.mark.anyio
async def test_far_from_its_limits_a_key_is_admitted_from_grants(redis):
    """A key far from every limit takes units and slots ahead: most admissions and settlements never reach Redis,
    what was taken is counted there (used or not), and the headers count down."""
    from app.gateway.shared import GRANT_REQUESTS

    away_from_a_minute_boundary()
    state, limiter, breaker, request = limiter_on(redis, rpm=1_000_000, tpm=10**9, concurrency=10_000)
    backend = limiter.shared
    try:
        scripts = ScriptCalls(backend)
        seen = []
        for i in range(200):
            ctx = request(f"g{i}")
            await limiter.admit(ctx, 10, 10)
            seen.append(int(ctx.admission.headers["x-ratelimit-remaining-requests"]))
            ctx.usage = Usage(10, 10)  # as estimated: nothing to settle but the lease
            await limiter.settle(ctx)
        calls = scripts.count
        # per grant: the admission script, and the settlement of that one request (its own lease); none for the rest
        assert calls <= 2 * (200 // GRANT_REQUESTS + 1), calls
        assert seen == sorted(seen, reverse=True) and seen[-1] < seen[0]
        rpm = window_count(redis, "key:k/rpm")
        assert rpm == 200 + backend.grants["key:k/rpm"].left  # what was used, and what is held ahead
        assert window_count(redis, "key:k/tpm") == 20 * 200 + backend.grants["key:k/tpm"].left
        pool = backend.slots["key:k"]
        assert number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == len(pool.held) == len(pool.free)
        assert breaker.failures == [] and backend.served == {}
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_grants_never_loosen_a_shared_limit(redis):
    """Two replicas drawing grants from one rpm window: together they never admit more than the limit, and near
    the limit they stop taking ahead, so at most what the other holds unused is lost."""
    from app.gateway.ratelimit import Plan
    from app.gateway.shared import GRANT_FLOOR, GRANT_REQUESTS, SharedState

    away_from_a_minute_boundary()
    states = [SharedState(redis.url) for _ in range(2)]
    for state in states:
        state.replicas = 2
    backends = [state.backend() for state in states]
    scripts = [ScriptCalls(b) for b in backends]
    limit = GRANT_FLOOR + 600
    try:
        admitted = [0, 0]
        refused = 0
        for i in range(limit + 200):
            verdict = await backends[i % 2].admit(Plan(f"r{i}", [("key:s/rpm", limit, 1)], [], []))
            if verdict.refused:
                refused += 1
            else:
                admitted[i % 2] += 1
        held = sum(b.grants["key:s/rpm"].left for b in backends if "key:s/rpm" in b.grants)
        assert sum(admitted) + held == limit == window_count(redis, "key:s/rpm")
        assert held <= 2 * GRANT_REQUESTS and refused == 200 + held
        assert sum(c.count for c in scripts) < limit  # grants served some of them
    finally:
        for state in states:
            await state.redis.aclose()


@pytest.mark.anyio
async def test_near_a_limit_every_admission_is_one_exact_script(redis):
    from app.gateway.shared import GRANT_FLOOR

    state, limiter, _, request = limiter_on(redis, rpm=GRANT_FLOOR, concurrency=GRANT_FLOOR)
    backend = limiter.shared
    try:
        await limiter.admit(request("n"), 10, 10)
        scripts = ScriptCalls(backend)
        for i in range(5):
            await limiter.admit(request(f"n{i}"), 10, 10)
        assert scripts.count == 5 and backend.grants == {} and backend.slots == {}
        assert number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == 6
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_a_grant_refunds_and_overruns_settle_in_the_process_then_in_redis(redis):
    """Real usage below the estimate goes back to the grant; above what the grant holds it is forced into Redis
    a moment later (GRANT_FLUSH), as a Redis settlement would."""
    from app.gateway.shared import GRANT_FLUSH

    away_from_a_minute_boundary()
    state, limiter, breaker, request = limiter_on(redis, tpm=10**9)
    backend = limiter.shared
    try:
        first = request("t1")
        await limiter.admit(first, 100, 100)  # the script: 200 tokens and 64 requests' worth ahead
        grant = backend.grants["key:k/tpm"]
        in_redis = window_count(redis, "key:k/tpm")
        assert in_redis == 200 + grant.left
        ctx = request("t2")
        await limiter.admit(ctx, 100, 100)
        assert grant.left == in_redis - 400
        ctx.usage = Usage(50, 0)  # 150 tokens back, to the grant
        await limiter.settle(ctx)
        assert grant.left == in_redis - 250 and window_count(redis, "key:k/tpm") == in_redis
        first.usage = Usage(100, grant.left + 1000)  # more than the grant holds: forced into Redis
        over = 100 + grant.left + 1000 - 200
        await limiter.settle(first)
        await asyncio.sleep(GRANT_FLUSH * 4)
        assert window_count(redis, "key:k/tpm") == in_redis + over and breaker.failures == []
    finally:
        await state.redis.aclose()


def lease_count(redis: RedisServer) -> int:
    """Members of the key's lease set, after removing the expired ones (as the next admission script would)."""
    redis.command("ZREMRANGEBYSCORE", "gemini-proxy:leases:{key:k}", "-inf", str(int(time.time() * 1000)))
    return number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}"))


@pytest.mark.anyio
async def test_granted_slots_live_by_the_heartbeat_and_expire_without_it(redis, monkeypatch):
    """A replica's granted slots and leases count in Redis only while its heartbeat renews them (a crashed replica's
    expire after GRANT_TTL). A heartbeat after a gap adds again the granted slots of requests still running and drops
    the free ones Redis lost (a lease of the script's is renewed only while Redis has it: a renewal never brings back a
    lease released meanwhile); a Redis that answers again drops the free ones and keeps those in use."""
    from app.gateway import shared

    monkeypatch.setattr(shared, "GRANT_TTL", 0.5)
    state, limiter, _, request = limiter_on(redis, concurrency=10_000)
    backend = limiter.shared
    try:
        ctx = request("c1")
        await limiter.admit(ctx, 10, 10)
        pool = backend.slots["key:k"]
        granted = len(pool.free)
        assert granted > 0 and lease_count(redis) == granted + 1
        running = request("c2")
        await limiter.admit(running, 10, 10)  # from a slot
        for _ in range(3):
            await asyncio.sleep(0.3)
            await state._beat()  # renews them
        assert lease_count(redis) == granted + 1
        await asyncio.sleep(0.7)  # no heartbeat: every granted slot expires, and the first request's own lease
        assert lease_count(redis) == 0
        await state._beat()
        assert pool.free == [] and len(pool.held) == 1  # the free ones are gone; the running request's is back
        assert lease_count(redis) == 1
        await limiter.settle(running)
        assert len(pool.free) == 1
        backend._returned()  # as when Redis answers after a loss
        assert backend.grants == {} and pool.free == [] and pool.held == set()
        await limiter.settle(ctx)
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_concurrent_requests_never_overspend_a_shared_budget_together(redis):
    """As in process (test_team_limits.py): the admission script takes what a budget has left, never more."""
    from app.gateway.ratelimit import Limiter
    from app.gateway.shared import SharedState
    from app.team.prices import PriceTable

    from .team_support import check_budget_reservations

    state = SharedState(redis.url)
    limiter = Limiter(shared=state.backend(), shared_up=lambda: True, replicas=lambda: 1, price_of=PriceTable().lookup)
    try:
        await check_budget_reservations(limiter)
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_hundreds_of_admissions_at_once_stay_on_redis(redis):
    """More calls in flight at once than redis-py's default pool (100) allowed: each gets a connection (the 101st
    used to fail, and the breaker sent the replica to local limits)."""
    state, limiter, breaker, request = limiter_on(redis, concurrency=1000, tokens_per_day=10**9)  # budgets: no grants
    try:
        ctxs = [request(f"many{i}") for i in range(300)]
        await asyncio.gather(*(limiter.admit(ctx, 10, 10) for ctx in ctxs))
        await asyncio.gather(*(limiter.settle(ctx) for ctx in ctxs))
        assert breaker.failures == [] and all(ctx.admission is None for ctx in ctxs)
        assert lease_count(redis) == 0
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_a_lease_lives_while_its_request_runs_and_a_crashed_replicas_lease_expires(redis, monkeypatch):
    """Near a limit a lease is the script's (no grant): it lives GRANT_TTL, renewed by the heartbeat while its
    request runs, however long; released, a renewal does not bring it back (even one that raced the release); after
    an outage longer than a lease, the first heartbeat adds back the leases of requests still running; a replica that
    stops renewing (it crashed) holds nothing once GRANT_TTL has passed."""
    from app.gateway import shared
    from app.gateway.ratelimit import RateLimitExceeded

    monkeypatch.setattr(shared, "GRANT_TTL", 0.5)
    state, limiter, _, request = limiter_on(redis, concurrency=1)
    backend = limiter.shared
    try:
        long = request("long")
        await limiter.admit(long, 10, 10)
        assert lease_count(redis) == 1 and backend.slots == {}
        for _ in range(4):  # 1.2 s, over twice the TTL: renewed
            await asyncio.sleep(0.3)
            await state._beat()
        assert lease_count(redis) == 1
        with pytest.raises(RateLimitExceeded):
            await limiter.admit(request("second"), 10, 10)
        await limiter.settle(long)
        await state._beat()
        assert lease_count(redis) == 0 and backend.exact == {}
        raced = request("raced")
        await limiter.admit(raced, 10, 10)
        redis.command("ZREM", "gemini-proxy:leases:{key:k}", raced.admission.ident)  # released as the beat renews
        await state._beat()
        assert lease_count(redis) == 0  # not brought back
        await limiter.settle(raced)
        running = request("running")  # Redis away for longer than a lease: the running request's lease expired
        await limiter.admit(running, 10, 10)
        await asyncio.sleep(0.7)
        assert lease_count(redis) == 0
        backend._returned()  # Redis answers again: the next heartbeat adds the lease back, once
        await state._beat()
        assert lease_count(redis) == 1
        await limiter.settle(running)
        assert lease_count(redis) == 0
        crashed = request("crashed")
        await limiter.admit(crashed, 10, 10)
        backend.exact.clear()  # the replica is gone: nothing renews or releases its lease
        await asyncio.sleep(0.7)
        after = request("after")
        await limiter.admit(after, 10, 10)  # the crashed replica's lease has expired
        await limiter.settle(after)
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_the_heartbeat_gives_back_free_slots_beyond_one_grant(redis):
    """After a burst, an idle replica keeps at most GRANT_REQUESTS free slots: the rest go back to the others."""
    from app.gateway.shared import GRANT_REQUESTS

    state, limiter, _, request = limiter_on(redis, concurrency=10_000)
    backend = limiter.shared
    try:
        burst = [request(f"b{i}") for i in range(3 * GRANT_REQUESTS)]
        for ctx in burst:
            await limiter.admit(ctx, 10, 10)
        for ctx in burst:
            await limiter.settle(ctx)
        pool = backend.slots["key:k"]
        assert len(pool.free) > GRANT_REQUESTS and lease_count(redis) == len(pool.held)
        await state._beat()
        assert len(pool.free) == len(pool.held) == GRANT_REQUESTS == lease_count(redis)
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_a_changed_limit_is_not_served_from_what_was_granted(redis):
    """Units and slots taken ahead under one limit serve nothing once the key's limit changes (PATCH): the next
    admission is the script under the new limit; near it, nothing is taken ahead."""
    from app.gateway.ratelimit import Plan

    away_from_a_minute_boundary()
    state, limiter, _, _ = limiter_on(redis)
    backend = limiter.shared
    try:
        verdict = await backend.admit(Plan("l1", [("key:c/rpm", 1_000_000, 1)], [], [("key:c", 5000)]))
        assert not verdict.refused and backend.grants["key:c/rpm"].left > 0 and backend.slots["key:c"].free
        scripts = ScriptCalls(backend)
        verdict = await backend.admit(Plan("l2", [("key:c/rpm", 1_000_000, 1)], [], [("key:c", 5000)]))
        assert not verdict.refused and scripts.count == 0  # served from the grants
        verdict = await backend.admit(Plan("l3", [("key:c/rpm", 1_000_000, 1)], [], [("key:c", 10)]))
        assert verdict.refused  # 65 held (the free slots count until they expire) against 10: refused by Redis
        assert scripts.count == 1 and backend.slots["key:c"].free == []
        verdict = await backend.admit(Plan("l4", [("key:c/rpm", 10, 1)], [], []))  # the grant was for 1,000,000:
        # the script refuses (65 counted), the grant's unused units go back, the script admits (3 counted)
        assert not verdict.refused and scripts.count == 4 and window_count(redis, "key:c/rpm") == 3
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_admissions_missing_the_grant_together_ask_ahead_once(redis):
    from app.gateway.ratelimit import Plan
    from app.gateway.shared import GRANT_LOW, GRANT_REQUESTS

    away_from_a_minute_boundary()
    state, limiter, _, _ = limiter_on(redis)
    backend = limiter.shared
    try:
        plans = [Plan(f"m{i}", [("key:m/rpm", 1_000_000, 1)], [], []) for i in range(8)]
        verdicts = await asyncio.gather(*(backend.admit(p) for p in plans))
        assert not any(v.refused for v in verdicts)
        taken = window_count(redis, "key:m/rpm")
        assert taken - 8 == backend.grants["key:m/rpm"].left <= GRANT_REQUESTS + GRANT_LOW  # one grant, not eight
    finally:
        await state.redis.aclose()



@pytest.mark.anyio
async def test_a_busy_replica_asks_ahead_before_its_grant_runs_out(redis):
    """Admissions 16 at a time (fewer than `GRANT_LOW`): the units are asked for again while some are left, so no
    admission finds the grant empty; one script per grant's worth of requests, not one per admission until a grant
    came (the first round, with nothing granted yet, is exact)."""
    from app.gateway.ratelimit import Plan
    from app.gateway.shared import GRANT_REQUESTS

    away_from_a_minute_boundary()
    state, limiter, _, _ = limiter_on(redis)
    backend = limiter.shared
    try:
        scripts = ScriptCalls(backend)
        for r in range(12):
            if r == 1:
                scripts.count = 0  # (the first round: nothing granted yet)
            plans = [Plan(f"b{r}-{i}", [("key:b/rpm", 1_000_000, 1)], [], []) for i in range(16)]
            verdicts = await asyncio.gather(*(backend.admit(p) for p in plans))
            assert not any(v.refused for v in verdicts)
        assert scripts.count <= 11 * 16 // GRANT_REQUESTS + 1, scripts.count
        assert window_count(redis, "key:b/rpm") == 12 * 16 + backend.grants["key:b/rpm"].left
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_near_the_floor_the_units_held_are_used_up_not_asked_for_again(redis):
    """Other replicas take a window near its floor after this one's grant: once Redis says so, this replica's
    admissions use up the units it holds (no grant would come) instead of each asking for more; then exact calls."""
    from app.gateway.ratelimit import Plan
    from app.gateway.shared import GRANT_FLOOR, SharedState

    away_from_a_minute_boundary()
    state = SharedState(redis.url)
    state.replicas = 1
    backend = state.backend()
    hits = [("key:z/rpm", 4000, 1)]
    try:
        await backend.admit(Plan("z0", hits, [], []))
        units, others = backend.grants["key:z/rpm"].left, backend.grants["key:z/rpm"].seen - GRANT_FLOOR + 10
        redis.command("HINCRBY", "gemini-proxy:win:key:z/rpm", "c", str(others))  # the other replicas' requests
        scripts = ScriptCalls(backend)
        for i in range(1, 200):
            assert not (await backend.admit(Plan(f"z{i}", hits, [], []))).refused
        g = backend.grants["key:z/rpm"]
        assert g.left == 0 and g.seen < GRANT_FLOOR  # all used, none stranded
        assert scripts.count == 199 - units  # one asked (the floor seen), the held units served, then exact calls
        assert window_count(redis, "key:z/rpm") == 200 + others
    finally:
        await state.redis.aclose()

@pytest.mark.anyio
async def test_a_lost_admission_with_grants_is_undone_whole(redis):
    """The admission that took units and slots ahead lost its reply: the undo gives back the hit, the units ahead
    and every slot it added."""
    state, limiter, breaker, request = limiter_on(redis, rpm=1_000_000, concurrency=10_000)
    backend = limiter.shared
    try:
        real = lose_admission_replies(backend, TimeoutError)
        await limiter.admit(request("u1"), 10, 10)
        assert len(breaker.failures) == 1 and backend.grants == {}
        assert window_count(redis, "key:k/rpm") > 1 and number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) > 1
        backend._admit = real
        await backend._make_good()
        assert window_count(redis, "key:k/rpm") == 0
        assert number(redis.command("ZCARD", "gemini-proxy:leases:{key:k}")) == 0
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_a_window_that_refuses_gets_this_replicas_unused_units_back_first(redis):
    """Near the limit, a replica refused by a window in which it holds unused units gives them back and tries once
    more: together the replicas admit exactly the limit."""
    from app.gateway.ratelimit import Plan
    from app.gateway.shared import GRANT_FLOOR, SharedState

    away_from_a_minute_boundary()
    states = [SharedState(redis.url) for _ in range(2)]
    one, two = (state.backend() for state in states)
    limit = GRANT_FLOOR + 200
    try:
        assert not (await one.admit(Plan("a0", [("key:s/rpm", limit, 1)], [], []))).refused
        held = one.grants["key:s/rpm"].left
        assert held > 0
        admitted = 1
        for i in range(limit):  # the other replica takes everything it can
            if (await two.admit(Plan(f"b{i}", [("key:s/rpm", limit, 1)], [], []))).refused:
                break
            admitted += 1
        assert admitted + held + two.grants["key:s/rpm"].left == limit == window_count(redis, "key:s/rpm")
        # a plan the grants do not cover (a second window) goes to the script, which finds the window full
        for i in range(held):
            verdict = await one.admit(Plan(f"a{i + 1}", [("key:s/rpm", limit, 1), ("key:t/rpm", 10**6, 1)], [], []))
            assert not verdict.refused  # served by units this replica gave back
        assert one.grants["key:s/rpm"].left == 0 and window_count(redis, "key:s/rpm") == limit
        assert (await one.admit(Plan("a-last", [("key:s/rpm", limit, 1), ("key:t/rpm", 10**6, 1)], [], []))).refused
    finally:
        for state in states:
            await state.redis.aclose()


@pytest.mark.anyio
async def test_units_given_back_go_to_their_minute(redis):
    """_FORCE adds (or gives back) units in the minute they belong to: this one, or the previous one (its weighted
    count), never an older one."""
    state, limiter, _, _ = limiter_on(redis)
    backend = limiter.shared
    try:
        now = int(redis.command("TIME").split(b"\r\n")[2]) // 60
        key = "gemini-proxy:win:key:f/tpm"
        redis.command("HSET", key, "m", str(now - 1), "p", "0", "c", "100")  # last minute's 100, not rolled yet
        await backend._force(keys=[key], args=[-30, now - 1])
        assert redis.command("HMGET", key, "m", "p", "c").split(b"\r\n")[2::2] == [str(now).encode(), b"70", b"0"]
        await backend._force(keys=[key], args=[25, now, -70, now - 2])  # an older minute: left alone
        assert redis.command("HMGET", key, "m", "p", "c").split(b"\r\n")[2::2] == [str(now).encode(), b"70", b"25"]
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_a_stopping_replica_gives_back_what_it_took_ahead(redis):
    """At shutdown the units and free slots taken ahead go back to Redis at once (the other replicas may use them),
    overruns still waiting for their flush are forced, and only what was really used stays counted."""
    away_from_a_minute_boundary()
    state, limiter, breaker, request = limiter_on(redis, rpm=1_000_000, tpm=10**9, concurrency=10_000)
    backend = limiter.shared
    try:
        await state.start()
        for i in range(3):
            ctx = request(f"s{i}")
            await limiter.admit(ctx, 10, 10)
            ctx.usage = Usage(10, 10 + 5 * i)  # the third overruns its estimate by 10, the second by 5: from the grant
            await limiter.settle(ctx)
        assert backend.grants["key:k/rpm"].left > 0 and backend.slots["key:k"].free
        assert window_count(redis, "key:k/rpm") > 3 and lease_count(redis) > 0
        backend._force_soon("key:k/tpm", backend._minute(), 7)  # an overrun not flushed yet
        await state.stop()
        assert window_count(redis, "key:k/rpm") == 3
        assert window_count(redis, "key:k/tpm") == 3 * 20 + 5 + 10 + 7
        assert lease_count(redis) == 0 and breaker.failures == []
    finally:
        await state.redis.aclose()


@pytest.mark.anyio
async def test_a_replica_refused_a_lease_gives_its_own_free_slots_back_and_is_admitted(redis):
    """Slots taken ahead count in Redis: when the other replicas fill a concurrency limit, this replica's own free
    slots may be what fills it. A lease refusal then gives them back and tries once more (as a window refusal gives
    back the units held), instead of refusing while holding free slots."""
    from app.gateway.ratelimit import LEASE, Plan
    from app.gateway.shared import GRANT_FLOOR, GRANT_REQUESTS, SharedState

    away_from_a_minute_boundary()
    state = SharedState(redis.url)
    backend = state.backend()
    limit = GRANT_FLOOR + 200
    lease_set = "gemini-proxy:leases:{key:full}"
    try:
        first = await backend.admit(Plan("a1", [("key:full/rpm", 10**6, 1)], [], [("key:full", limit)]))
        assert first.refused == 0
        pool = backend.slots["key:full"]
        assert len(pool.free) == GRANT_REQUESTS  # taken ahead, far from the limit
        others = limit - number(redis.command("ZCARD", lease_set))
        for i in range(others):  # the other replicas' requests fill the set
            redis.command("ZADD", lease_set, str(2**50), f"other:{i}")
        assert number(redis.command("ZCARD", lease_set)) == limit
        # a window without a grant yet: this admission is a script, and the lease set is full
        verdict = await backend.admit(Plan("a2", [("key:full/tpm", 10**9, 100)], [], [("key:full", limit)]))
        assert verdict.refused == 0, verdict
        assert pool.free == [] and number(redis.command("ZCARD", lease_set)) == limit - GRANT_REQUESTS + 1
        # with no free slot of its own left, a full set refuses
        for i in range(GRANT_REQUESTS - 1):
            redis.command("ZADD", lease_set, str(2**50), f"later:{i}")
        refused = await backend.admit(Plan("a3", [("key:full/tpm", 10**9, 100)], [], [("key:full", limit)]))
        assert refused.refused == LEASE
    finally:
        await state.redis.aclose()
