"""State the replicas share through Redis (`storage.redis_url`; docs/team.md#replicas).

`SharedState` owns the connection and its health: short socket timeouts
(a hung Redis costs at most `TIMEOUT`, not redis-py's 5 s), a breaker (the
first failure marks Redis down: the log says so, the metric
`gemini_proxy_storage_up{backend="redis"}` goes to 0 and nothing on the
request path touches Redis any more) and a background task that probes it
with a growing pause (0.25 s .. `PROBE_MAX`) until it answers again. While
up, the same task heartbeats this process into a sorted set, so every
replica knows how many processes share the limits (what a replica divides
them by once Redis is lost).

What is shared:

* rate-limit windows, concurrency leases and budget counters (`RedisBackend`,
  used by app/gateway/ratelimit.py);
* upstream key rests: a 429 on one replica is published (`PUBLISH`) and every
  replica rests the same (group, model) locally; a replica that starts or
  reconnects reads the rests in force (`SET ... PX`), so the request path
  never asks Redis about them;
* thought signatures (`RedisSignatureStore`), so a tool loop whose turns land
  on different replicas keeps them.

Keys start with `gemini-proxy:`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.gateway.ratelimit import FORCE, LEASE_TTL, WINDOW, Backend, Budget, CounterMissing
from app.gateway.signatures import MemorySignatureStore
from app.gateway.upstreams import Upstream

log = logging.getLogger("gemini_proxy.redis")

PREFIX = "gemini-proxy:"
TIMEOUT = 0.25  # seconds: socket connect and read timeouts
PROBE_MIN = 0.25
PROBE_MAX = 2.0
HEARTBEAT = 2.0  # seconds between heartbeats; a process unseen for 3 of them is gone
SIGNATURE_TTL = 86400  # seconds a thought signature is kept in Redis
RESTS_CHANNEL = PREFIX + "rests"
REPLICAS = PREFIX + "replicas"

_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: budget counters; ARGV: limit, amount, expire-at per key. 0: all reserved; i: the i-th refused;
# -i: the i-th counter is missing (evicted, flushed: it must be seeded again, never counted from 0).
_RESERVE = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then return -i end
end
for i, key in ipairs(KEYS) do
  local spent = tonumber(redis.call('GET', key) or '0')
  local limit = tonumber(ARGV[3 * i - 2])
  if spent >= limit or spent + tonumber(ARGV[3 * i - 1]) > limit then return i end
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[3 * i - 1])
  redis.call('EXPIREAT', key, ARGV[3 * i])
end
return 0
"""

# KEYS: a budget counter; ARGV: an amount, expire-at. Adds to a counter that exists (a missing one is seeded again
# by the next reservation, not restarted from this amount).
_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: a budget counter; ARGV: what was spent, expire-at. Raises the counter to at least that (never lowers it).
_SEED = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '-1')
if spent < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2]) end
return 0
"""

_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""


class SharedState:
    """One Redis for the replicas: connection, breaker and probe, heartbeat, rests (see the module docstring)."""

    def __init__(
        self, url: str, on_health: Callable[[bool], None] | None = None, lease_ttl: float = LEASE_TTL, workers: int = 1
    ) -> None:
        self.url = url
        self.lease_ttl = lease_ttl  # seconds a concurrency lease lives unless released
        self.redis = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        self.up = False
        # processes last seen sharing this Redis; until Redis is first seen, this replica's own worker processes
        self.replicas = max(1, workers)
        self.replica_id = f"{os.uname().nodename}:{os.getpid()}:{time.time_ns() % 10**9}"
        self._on_health = on_health or (lambda up: None)
        self._lease = self.redis.register_script(_LEASE)
        self._reserve = self.redis.register_script(_RESERVE)
        self._seed = self.redis.register_script(_SEED)
        self._add = self.redis.register_script(_ADD)
        self._heartbeat = self.redis.register_script(_HEARTBEAT)
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._upstreams: dict[str, Upstream] = {}
        self.on_return: list[Callable[[], None]] = []  # called when Redis answers again after a loss
        self._tasks: set[asyncio.Task[Any]] = set()

    def backend(self) -> RedisBackend:
        return RedisBackend(self)

    def watch_upstreams(self, upstreams: Iterable[Upstream]) -> None:
        """Share these upstreams' rests: publish ours, apply the others'."""
        for upstream in upstreams:
            self._upstreams[upstream.name] = upstream
            upstream.on_rest = self._publish_rest

    async def start(self) -> None:
        try:
            await self._beat()
            self._set(True)
            await self._load_rests()
        except Exception as exc:
            self.failed(exc)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        for task in (self._task, self._listener, *self._tasks):
            if task is not None:
                task.cancel()
        for task in (self._task, self._listener, *self._tasks):
            if task is not None:
                try:
                    await task
                except BaseException:
                    pass
        try:
            if self.up:
                await self.redis.zrem(REPLICAS, self.replica_id)
        except Exception:
            pass
        await self.redis.aclose()

    def _set(self, up: bool) -> None:
        changed = up != self.up
        self.up = up
        self._on_health(up)
        if up and changed:
            log.log(
                logging.WARNING if self._task is not None else logging.INFO,
                "Redis at %s answers: limits, rests and signatures are shared (%d processes)",
                _shown(self.url), self.replicas,
            )
            if self._listener is None or self._listener.done():
                self._listener = asyncio.get_running_loop().create_task(self._listen())

    def failed(self, exc: BaseException) -> None:
        """A Redis call failed: local limits from now on, until the probe finds Redis again."""
        if self.up:
            log.warning(
                "Redis at %s is unreachable (%s): serving with local limits (each of %d processes enforces its share) "
                "until it answers again", _shown(self.url), type(exc).__name__, self.replicas,
            )
        elif self._task is None:
            log.warning("Redis at %s is unreachable (%s) at start: serving with local limits until it answers",
                        _shown(self.url), type(exc).__name__)
        self.up = False
        self._on_health(False)
        self._wake.set()

    async def _beat(self) -> None:
        count = await self._heartbeat(keys=[REPLICAS], args=[int(HEARTBEAT * 3000), self.replica_id])
        self.replicas = max(1, int(count))

    async def _run(self) -> None:
        pause = PROBE_MIN
        while True:
            if self.up:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), HEARTBEAT)
                except TimeoutError:
                    pass
                if not self.up:
                    continue
                try:
                    await self._beat()
                except Exception as exc:
                    self.failed(exc)
            else:
                await asyncio.sleep(pause)
                try:
                    await self._beat()
                    await self._load_rests()
                except Exception:
                    pause = min(PROBE_MAX, pause * 2)
                    continue
                pause = PROBE_MIN
                for callback in self.on_return:
                    callback()  # e.g. budget counters are seeded again (a restarted Redis lost them)
                self._set(True)

    # --- upstream rests -----------------------------------------------------------------------

    def _publish_rest(self, upstream: Upstream, group: str, model: str, seconds: float) -> None:
        if not self.up:
            return
        task = asyncio.get_running_loop().create_task(self._send_rest(upstream.name, group, model, seconds))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_rest(self, upstream: str, group: str, model: str, seconds: float) -> None:
        message = orjson.dumps({"u": upstream, "g": group, "m": model, "s": seconds, "from": self.replica_id})
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(f"{PREFIX}rest:{upstream}\x00{group}\x00{model}", "1", px=max(1, int(seconds * 1000)))
                pipe.publish(RESTS_CHANNEL, message)
                await pipe.execute()
        except Exception as exc:
            self.failed(exc)

    def _apply_rest(self, upstream: str, group: str, model: str, seconds: float) -> None:
        target = self._upstreams.get(upstream)
        if target is not None and seconds > 0:
            target.rest_group(group, model, seconds)

    async def _load_rests(self) -> None:
        """The rests in force (a replica that starts or comes back missed their messages)."""
        async for key in self.redis.scan_iter(match=PREFIX + "rest:*", count=500):
            ttl = await self.redis.pttl(key)
            name = key.decode(errors="replace")[len(PREFIX) + 5:]
            parts = name.split("\x00")
            if ttl > 0 and len(parts) == 3:
                self._apply_rest(parts[0], parts[1], parts[2], ttl / 1000)

    async def _listen(self) -> None:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(RESTS_CHANNEL)
            while self.up:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message.get("type") != "message":
                    continue
                try:
                    data = orjson.loads(message["data"])
                except orjson.JSONDecodeError:
                    continue
                if data.get("from") != self.replica_id:
                    self._apply_rest(str(data["u"]), str(data["g"]), str(data["m"]), float(data["s"]))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed(exc)
        finally:
            try:
                await pubsub.aclose()
            except Exception:
                pass


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def _shown(url: str) -> str:
    """The URL without its password (in the user info, or redis-py's `?password=` query parameter)."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return head + sep + _QUERY_PASSWORD.sub(r"\1***", rest)


class RedisBackend(Backend):
    """The limiter's counters in Redis: `limits`' sliding window counter (redis-py), leases and budgets (Lua)."""

    shared = True

    def __init__(self, state: SharedState) -> None:
        url = state.url
        scheme = "async+" + url.split("://", 1)[0]
        # one pool (and its short timeouts) with the rest of the shared state; limits' hints say str|float|bool
        options: dict[str, Any] = {"connection_pool": state.redis.connection_pool, "retry": Retry(NoBackoff(), 0)}
        storage = storage_from_string(
            scheme + "://" + url.split("://", 1)[1], implementation="redispy", wrap_exceptions=True,
            key_prefix=PREFIX + "LIMITS", **options,
        )
        super().__init__()
        state.on_return.append(self.seeded.clear)
        self.storage: Any = storage
        self.limiter = SlidingWindowCounterRateLimiter(storage)
        self.state = state
        self._items: dict[int, RateLimitItem] = {}

    def _item(self, amount: int) -> RateLimitItem:
        item = self._items.get(amount)
        if item is None:
            item = self._items[amount] = RateLimitItemPerMinute(amount)
        return item

    async def hit(self, limit: int, key: str, cost: int) -> bool:
        return await self.limiter.hit(self._item(limit), key, cost=cost)

    async def force(self, limit: int, key: str, amount: int) -> None:
        # the sliding counter's own script with a limit no count reaches: records real usage over the limit
        await self.storage.acquire_sliding_window_entry(self._item(limit).key_for(key), FORCE, WINDOW, amount)

    async def stats(self, limit: int, key: str) -> tuple[int, float]:
        stats = await self.limiter.get_window_stats(self._item(limit), key)
        return stats.remaining, max(0.0, stats.reset_time - time.time())

    async def lease(self, subject: str, limit: int, lease_id: str) -> bool:
        ttl_ms = int(self.state.lease_ttl * 1000)
        granted = await self.state._lease(keys=[f"{PREFIX}leases:{{{subject}}}"], args=[limit, ttl_ms, lease_id])
        return bool(granted)

    async def release(self, subject: str, lease_id: str) -> None:
        await self.state.redis.zrem(f"{PREFIX}leases:{{{subject}}}", lease_id)

    async def reserve(self, budgets: list[Budget]) -> Budget | None:
        args: list[int] = []
        for b in budgets:
            args += [b.limit, b.reserved, b.expire_at]
        refused = int(await self.state._reserve(keys=[PREFIX + "budget:" + b.key for b in budgets], args=args))
        if refused < 0:
            raise CounterMissing(budgets[-refused - 1].key)
        return budgets[refused - 1] if refused else None

    async def add(self, key: str, amount: int, expire_at: int) -> None:
        await self.state._add(keys=[PREFIX + "budget:" + key], args=[amount, expire_at])

    async def seed(self, key: str, value: int, expire_at: int) -> None:
        await self.state._seed(keys=[PREFIX + "budget:" + key], args=[value, expire_at])


class RedisSignatureStore:
    """Thought signatures in Redis (TTL `SIGNATURE_TTL`), with the local LRU in front and as the fallback."""

    def __init__(self, state: SharedState, local: MemorySignatureStore) -> None:
        self.state = state
        self.local = local

    async def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        wanted = list(keys)
        found = await self.local.get_many(wanted)
        missing = [k for k in wanted if k not in found]
        if missing and self.state.up:
            try:
                values = await self.state.redis.mget([PREFIX + "sig:" + k for k in missing])
            except Exception as exc:
                self.state.failed(exc)
                return found
            for key, value in zip(missing, values, strict=True):
                if value is not None:
                    found[key] = value.decode() if isinstance(value, bytes) else str(value)
        return found

    async def put_many(self, items: Mapping[str, str]) -> None:
        await self.local.put_many(items)
        if items and self.state.up and self.local.capacity > 0:  # signatures.cache_size 0: remember nothing
            try:
                async with self.state.redis.pipeline(transaction=False) as pipe:
                    for key, value in items.items():
                        pipe.set(PREFIX + "sig:" + key, value, ex=SIGNATURE_TTL)
                    await pipe.execute()
            except Exception as exc:
                self.state.failed(exc)
