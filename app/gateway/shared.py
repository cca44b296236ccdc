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
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.gateway.ratelimit import HIT, LEASE, Backend, Plan, Settlement, Verdict
from app.gateway.signatures import MemorySignatureStore
from app.gateway.upstreams import Upstream

log = logging.getLogger("gemini_proxy.redis")

PREFIX = "gemini-proxy:"
TIMEOUT = 0.25  # seconds: socket connect and read timeouts
PROBE_MIN = 0.25
PROBE_MAX = 2.0
MAX_CONNECTIONS = 2048  # per process: calls in flight at once (redis-py's default, 100, failed the 101st: the breaker)
HEARTBEAT = 2.0  # seconds between heartbeats; a process unseen for 3 of them is gone
LISTEN_POLL = 0.25  # seconds: the rests listener's longest wait for a message (it stops within it)
SIGNATURE_TTL = 86400  # seconds a thought signature is kept in Redis
RESTS_CHANNEL = PREFIX + "rests"
REPLICAS = PREFIX + "replicas"
WINDOWS = PREFIX + "win:"  # + "key:<id>/rpm" and the like: a rate window (see _CLOCK)
BUDGETS = PREFIX + "budget:"
LEASES = PREFIX + "leases:"
RECORD = PREFIX + "adm:"  # + an admission's id: what it took, until settled (an undo reads it)
GRANT_REQUESTS = 64  # a grant: units (slots) taken ahead for this many requests of the cost of the one asking
GRANT_FLOOR = 1024  # granted only while this many more such requests fit in the window (lease set): exact near limits
GRANT_LOW = GRANT_REQUESTS  # a window's grant left with units for fewer requests than this: the next admission
# asks ahead (its own script call) while the others go on from what is left, so a busy replica never runs dry
GRANT_TTL = 10.0  # seconds a concurrency lease or granted slot lives unless the heartbeat renews it (a crashed replica's expire)
GRANT_FLUSH = 0.05  # seconds before a grant's overrun (real usage past the units taken ahead) is forced into Redis
RECORD_TTL = 600  # at least, seconds an admission's record is kept (and as long as its leases): an undo after a lost
# reply must come within it

# The limiter's scripts (RedisBackend): one per admission, one per settlement, one to undo lost admissions.
# A rate window is a hash {m: minute (Unix time // 60), p: previous minute's count, c: this minute's count}: the
# sliding window counter of LocalWindows (app/gateway/ratelimit.py) on Redis's clock, the previous minute weighted
# by how much of it still overlaps the last 60 s.
_CLOCK = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(ms / 60000)
local function roll(key)
  local w = redis.call('HMGET', key, 'm', 'p', 'c')
  local m, p, c = tonumber(w[1]), tonumber(w[2]) or 0, tonumber(w[3]) or 0
  if m ~= minute then
    if m == minute - 1 then p = c else p = 0 end
    c = 0
  end
  return p, c
end
local function put(key, p, c)
  redis.call('HSET', key, 'm', minute, 'p', p, 'c', c)
  redis.call('EXPIRE', key, 121)
end
"""

# KEYS: the admission's record, then a window per hit, a counter per budget, a lease set per lease.
# ARGV: hits, budgets, leases, lease TTL (ms), record TTL (s), the lease member, replicas, grant TTL (ms); then limit,
# cost and units wanted ahead per hit, limit, amount, least amount and expire-at per budget (admitted while the least
# amount fits; takes the amount, or what is left if less), limit and slots wanted ahead per lease.
# Units ahead (a grant, see RedisBackend): taken only while the window (lease set) stays far from its limit: at most
# a quarter of what is left divided by the replicas, and only when `GRANT_FLOOR` more requests of this cost fit.
# Reply: {0, 0, minute, Redis time (ms), left in each window after its hit and grant..., units granted per hit...,
# slots granted per lease..., amount taken per budget...}: all taken (and recorded, for an undo);
# {1, i, minute, left, ms until one unit frees}: hit i refused; {2, i, minute}: budget i spent; {3, i, minute}:
# budget counter i is missing (evicted, flushed: seed it again, never count from 0); {4, i, minute}: lease i refused.
# A refusal takes nothing.
_ADMIT = _CLOCK + """
local nh, nb, nl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease_ttl, member = tonumber(ARGV[4]), ARGV[6]
local replicas, grant_ttl, floor = tonumber(ARGV[7]), tonumber(ARGV[8]), """ + str(GRANT_FLOOR) + """
local h0, b0 = 8, 8 + 3 * nh
local l0 = b0 + 4 * nb
for i = 1, nb do
  if redis.call('EXISTS', KEYS[1 + nh + i]) == 0 then return {3, i, minute} end
end
local grants, slots = {}, {}
local function unhit(n)
  for j = 1, n do redis.call('HINCRBY', KEYS[1 + j], 'c', -(tonumber(ARGV[h0 + 3 * j - 1]) + grants[j])) end
end
local weight = 1 - (ms % 60000) / 60000
local remaining = {}
for i = 1, nh do
  local key, limit = KEYS[1 + i], tonumber(ARGV[h0 + 3 * i - 2])
  local cost, want = tonumber(ARGV[h0 + 3 * i - 1]), tonumber(ARGV[h0 + 3 * i])
  local p, c = roll(key)
  local used = p * weight + c
  if cost > limit or used + cost > limit then
    unhit(i - 1)
    -- ms until `cost` more fits: ratelimit.py `fits_in`
    local s, frees = ms % 60000, 0
    local room = limit - cost - c
    if room >= 0 and p > room then
      frees = math.max(0, 60000 * (1 - room / p) - s)
    else
      frees = 60000 - s
      room = limit - cost
      if room >= 0 and c > room then frees = frees + 60000 * (1 - room / c) end
    end
    return {1, i, minute, math.max(0, math.floor(limit - used)), math.ceil(frees)}
  end
  local left = math.floor(limit - used - cost)
  local g = 0
  if want > 0 and left >= floor * math.max(1, cost) then g = math.min(want, math.floor(left / (4 * replicas))) end
  put(key, p, c + cost + g)
  remaining[i] = left - g
  grants[i] = g
end
local takes = {}
for i = 1, nb do
  local spent = tonumber(redis.call('GET', KEYS[1 + nh + i]) or '0')
  local limit, amount, least = tonumber(ARGV[b0 + 4 * i - 3]), tonumber(ARGV[b0 + 4 * i - 2]), tonumber(ARGV[b0 + 4 * i - 1])
  if spent >= limit or spent + least > limit then
    unhit(nh)
    return {2, i, minute}
  end
  takes[i] = math.min(amount, limit - spent)
end
for i = 1, nl do
  local key, limit, want = KEYS[1 + nh + nb + i], tonumber(ARGV[l0 + 2 * i - 1]), tonumber(ARGV[l0 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ms)
  local held = redis.call('ZCARD', key)
  if held >= limit then
    unhit(nh)
    for j = 1, i - 1 do
      local k = KEYS[1 + nh + nb + j]
      redis.call('ZREM', k, member)
      for s = 1, slots[j] do redis.call('ZREM', k, member .. ':' .. s) end
    end
    return {4, i, minute}
  end
  redis.call('ZADD', key, ms + lease_ttl, member)
  local free, s = limit - held - 1, 0
  if want > 0 and free >= floor then s = math.min(want, math.floor(free / (4 * replicas))) end
  for j = 1, s do redis.call('ZADD', key, ms + grant_ttl, member .. ':' .. j) end
  slots[i] = s
  redis.call('PEXPIRE', key, math.max(lease_ttl, grant_ttl))
end
for i = 1, nb do
  redis.call('INCRBY', KEYS[1 + nh + i], takes[i])
  redis.call('EXPIREAT', KEYS[1 + nh + i], ARGV[b0 + 4 * i])
end
redis.call('SET', KEYS[1], cjson.encode({minute, KEYS, ARGV, grants, slots, takes}), 'EX', ARGV[5])
local reply = {0, 0, minute, ms}
for i = 1, nh do reply[4 + i] = remaining[i] end
for i = 1, nh do reply[4 + nh + i] = grants[i] end
for i = 1, nl do reply[4 + 2 * nh + i] = slots[i] end
for i = 1, nb do reply[4 + 2 * nh + nl + i] = takes[i] end
return reply
"""

# KEYS: the admission's record, the lease sets still held, the tpm windows, the budget counters.
# ARGV: leases, windows, budgets, the lease member, the minute the reservation was taken in, the tokens to add to
# each window (negative: a refund, only while that minute is the current one); then amount and expire-at per budget
# (added to a counter that exists: a missing one is seeded again by the next admission, not restarted from this).
_SETTLE = _CLOCK + """
local nl, nw, nb = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('DEL', KEYS[1])
for i = 1, nl do redis.call('ZREM', KEYS[1 + i], ARGV[4]) end
local delta = tonumber(ARGV[6])
if delta > 0 or (delta < 0 and minute == tonumber(ARGV[5])) then
  for i = 1, nw do
    local key = KEYS[1 + nl + i]
    local p, c = roll(key)
    put(key, p, c + delta)
  end
end
for i = 1, nb do
  local key = KEYS[1 + nl + nw + i]
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCRBY', key, ARGV[5 + 2 * i])
    redis.call('EXPIREAT', key, ARGV[6 + 2 * i])
  end
end
return 0
"""

# KEYS: the records of admissions whose reply was lost (a timeout: taken or not, unknown), then lease sets whose
# release was lost; ARGV: the number of records, then the member per lease set. A record still there is undone
# (its hits while their minute is current, its budget reservations, its leases) and deleted; a record gone (the
# admission never ran, or it expired) does nothing: undoing twice is undoing once.
_UNDO = _CLOCK + """
local nr = tonumber(ARGV[1])
for r = 1, nr do
  local raw = redis.call('GET', KEYS[r])
  if raw then
    redis.call('DEL', KEYS[r])
    local rec = cjson.decode(raw)
    local keys, args, grants, slots, takes = rec[2], rec[3], rec[4], rec[5], rec[6]
    local nh, nb, nl = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
    if rec[1] == minute then
      for j = 1, nh do
        local p, c = roll(keys[1 + j])
        put(keys[1 + j], p, c - tonumber(args[8 + 3 * j - 1]) - (grants[j] or 0))
      end
    end
    local b0 = 8 + 3 * nh
    for i = 1, nb do
      local taken = takes and takes[i] or args[b0 + 3 * i - 1]  -- (a record of an earlier version: its amounts)
      if redis.call('EXISTS', keys[1 + nh + i]) == 1 then redis.call('DECRBY', keys[1 + nh + i], taken) end
    end
    for i = 1, nl do
      local key = keys[1 + nh + nb + i]
      redis.call('ZREM', key, args[6])
      for s = 1, (slots[i] or 0) do redis.call('ZREM', key, args[6] .. ':' .. s) end
    end
  end
end
for i = nr + 1, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1 + i - nr]) end
return 0
"""

# KEYS: windows; ARGV: their limits. Reply: what is left in each (as an admission counts it), nothing taken.
_PEEK = _CLOCK + """
local weight = 1 - (ms % 60000) / 60000
local out = {}
for i = 1, #KEYS do
  local p, c = roll(KEYS[i])
  out[i] = math.max(0, math.floor(tonumber(ARGV[i]) - (p * weight + c)))
end
return out
"""

# KEYS: windows; ARGV: per window, the units to add (negative: give back) and the minute they belong to, whatever
# the limit: a grant overrun by the real usage of requests admitted from it (this minute), or a grant's unused units
# given back (its minute: this one, or the previous one while it still weighs). An older minute is left alone.
_FORCE = _CLOCK + """
for i = 1, #KEYS do
  local delta, at = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  if at == minute or at == minute - 1 then
    local p, c = roll(KEYS[i])
    if at == minute then c = math.max(0, c + delta) else p = math.max(0, p + delta) end
    put(KEYS[i], p, c)
  end
end
return 0
"""

# KEYS: lease sets holding granted slots or leases of requests running; ARGV: grant TTL (ms), the sets' TTL (ms), then
# per set: how many granted members in use, free, free to give back, and exact leases held, and those members.
# Granted members in use live another grant TTL (added again if they had expired: they are requests running); free
# ones and exact leases only if still there (a lease released meanwhile stays released); the ones given back are
# removed. Reply: per set, the free members that were gone (expired, or the set lost): the replica drops them.
_RENEW = _CLOCK + """
local expire, set_ttl = ms + tonumber(ARGV[1]), tonumber(ARGV[2])
local pos, gone = 3, {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local nu, nf, nd, nx = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3])
  pos = pos + 4
  gone[i] = {}
  for j = 1, nu do
    redis.call('ZADD', key, expire, ARGV[pos])
    pos = pos + 1
  end
  for j = 1, nf do
    if redis.call('ZSCORE', key, ARGV[pos]) then
      redis.call('ZADD', key, expire, ARGV[pos])
    else
      table.insert(gone[i], ARGV[pos])
    end
    pos = pos + 1
  end
  for j = 1, nd do
    redis.call('ZREM', key, ARGV[pos])
    pos = pos + 1
  end
  for j = 1, nx do
    redis.call('ZADD', key, 'XX', expire, ARGV[pos])
    pos = pos + 1
  end
  if redis.call('PTTL', key) < set_ttl then redis.call('PEXPIRE', key, set_ttl) end
end
return gone
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
        self, url: str, on_health: Callable[[bool], None] | None = None, workers: int = 1
    ) -> None:
        self.url = url
        self.redis = aioredis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, retry=Retry(NoBackoff(), 0),
            health_check_interval=30, max_connections=MAX_CONNECTIONS,
        )
        self.up = False
        # processes last seen sharing this Redis; until Redis is first seen, this replica's own worker processes
        self.replicas = max(1, workers)
        self.replica_id = f"{os.uname().nodename}:{os.getpid()}:{time.time_ns() % 10**9}"
        self._on_health = on_health or (lambda up: None)
        self._seed = self.redis.register_script(_SEED)
        self._heartbeat = self.redis.register_script(_HEARTBEAT)
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._upstreams: dict[str, Upstream] = {}
        self.on_return: list[Callable[[], None]] = []  # called when Redis answers again after a loss
        self.on_beat: list[Callable[[], Awaitable[None]]] = []  # called with each heartbeat while Redis answers
        self.on_stop: list[Callable[[], Awaitable[None]]] = []  # called at shutdown while Redis answers
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
        # The listener is not cancelled: redis-py's pub/sub read can swallow a cancellation and then wait forever.
        # It sees `_stopping` within one `LISTEN_POLL`.
        self._stopping = True
        tasks = [task for task in (self._task, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        if self._listener is not None:
            tasks.append(self._listener)
        if tasks:
            await asyncio.wait(tasks, timeout=4 * LISTEN_POLL)
        try:
            if self.up:
                for give_back in self.on_stop:
                    await give_back()
                await self.redis.zrem(REPLICAS, self.replica_id)
        except Exception as exc:
            log.warning("Redis at %s: could not give back what this process held at shutdown (%s); it expires",
                        _shown(self.url), type(exc).__name__)
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
        for renew in self.on_beat:
            await renew()

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
            while self.up and not self._stopping:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_POLL)
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


def _lease_set(subject: str) -> str:
    """The sorted set of a key's or team's concurrency leases."""
    return f"{LEASES}{{{subject}}}"


@dataclass(slots=True)
class Grant:
    """Units of one window this replica took ahead in Redis (they count there already) for Redis's minute `minute`."""

    minute: int
    limit: int  # the limit they were granted under: a changed limit is not served from them
    left: int  # units not used yet
    seen: int  # what Redis said was left in the window after the grant (for the x-ratelimit-remaining-* figures)


@dataclass(slots=True)
class Slots:
    """Concurrency slots of one lease set this replica took ahead (members `<admission id>:<n>` in Redis)."""

    limit: int  # the limit they were granted under
    free: list[str] = field(default_factory=list)
    held: set[str] = field(default_factory=set)  # free or in use: renewed by the heartbeat

    def drop_free(self) -> None:
        """The free slots are not given out any more (nor renewed: they expire); those in use stay held."""
        self.held.difference_update(self.free)
        self.free.clear()


class RedisBackend(Backend):
    """The limiter's counters in Redis: one script per admission, one per settlement (see `_ADMIT`, `_SETTLE`).

    A call whose reply is lost (a timeout: it may have run) is made good by the next call that reaches Redis:
    an admission's record (`adm:<id>`, kept `RECORD_TTL`) is undone, a lease's release done again.

    Grants (docs/team.md#replicas): while a window or a lease set is far from its limit (`GRANT_FLOOR` more requests
    fit), the admission script also takes units ahead for the next `GRANT_REQUESTS` requests (at most a quarter of
    what is left over the replicas) and concurrency slots (lease members `<id>:<n>`, `GRANT_TTL`, renewed by the
    heartbeat, which also gives back free slots beyond `GRANT_REQUESTS`). Later admissions of keys without budgets
    are served from them without a round trip (only under the limit they were granted with), and settled in the
    process (a refund goes back to the grant; an overrun is taken from it, or forced into Redis within
    `GRANT_FLUSH`). One admission at a time asks ahead for a window or lease set. Near a limit nothing is granted:
    every admission is one exact script call.
    """

    shared = True

    def __init__(self, state: SharedState) -> None:
        super().__init__()
        state.on_return.append(self._returned)
        state.on_beat.append(self._renew)
        state.on_stop.append(self._give_back)
        self.state = state
        self._admit = state.redis.register_script(_ADMIT)
        self._settle = state.redis.register_script(_SETTLE)
        self._undo = state.redis.register_script(_UNDO)
        self._force = state.redis.register_script(_FORCE)
        self._renew_script = state.redis.register_script(_RENEW)
        self._peek = state.redis.register_script(_PEEK)
        self.lost_admissions: list[str] = []  # records of admissions whose reply was lost
        self.lost_releases: list[tuple[str, str]] = []  # (lease set, member) whose release was lost
        self.grants: dict[str, Grant] = {}  # window -> the units taken ahead
        self.slots: dict[str, Slots] = {}  # lease subject -> the slots taken ahead
        self.exact: dict[str, set[str]] = {}  # lease subject -> admissions holding a lease of the script's (renewed)
        self._restore_leases = False  # Redis answers again: leases that expired meanwhile are added back, once
        self.served: dict[str, list[tuple[str, str]]] = {}  # admissions served from grants -> (subject, member) in use
        self._asking: set[str] = set()  # windows and lease subjects an admission in flight asks ahead for
        self._offset_ms = 0.0  # Redis's clock minus this process's monotonic clock
        # (window, minute) -> units to force into Redis (overruns) or to give back (unused grants), together, soon
        self._forced: dict[tuple[str, int], int] = {}
        self._flusher: asyncio.Task[None] | None = None

    def suspends(self, ident: str) -> bool:
        return ident not in self.served

    def _returned(self) -> None:
        """Redis answers again: what was taken ahead may be gone (expired, a restarted Redis): free units and slots
        are dropped; slots of requests still running stay held (the next heartbeat adds them again if need be)."""
        self.seeded.clear()
        self.grants.clear()
        for pool in self.slots.values():
            pool.drop_free()
        self._restore_leases = True  # the next heartbeat adds back the leases of requests still running

    def _minute(self) -> int:
        return int((time.monotonic() * 1000 + self._offset_ms) // 60000)

    def _from_grants(self, plan: Plan) -> Verdict | None:
        """The admission served from the units and slots taken ahead, or None when they do not cover it, or when a
        window's grant runs low (`GRANT_LOW`) far from its limit and no admission asks ahead for it yet: this one
        then does, before the grant runs out (an admission finding it empty meanwhile is one exact script call:
        under load, one per request until the grant came)."""
        minute = self._minute()
        grants, slots = self.grants, self.slots
        for key, limit, cost in plan.hits:
            g = grants.get(key)
            if g is None or g.minute != minute or g.left < cost or g.limit != limit:
                return None
            unit = max(1, cost)
            if g.left - cost < GRANT_LOW * unit and g.seen >= GRANT_FLOOR * unit and key not in self._asking:
                return None
        for subject, limit in plan.leases:
            pool = slots.get(subject)
            if pool is None or not pool.free:
                return None
            if pool.limit != limit:  # the limit changed
                pool.drop_free()
                return None
        remaining = []
        for key, _, cost in plan.hits:
            g = grants[key]
            g.left -= cost
            remaining.append(g.seen + g.left)
        self.served[plan.ident] = [(subject, slots[subject].free.pop()) for subject, _ in plan.leases]
        return Verdict(0, 0, minute, remaining)

    async def admit(self, plan: Plan) -> Verdict:
        if not plan.budgets:
            verdict = self._from_grants(plan)
            if verdict is not None:
                return verdict
        verdict = await self._scripted(plan)
        if verdict.refused == HIT:
            key = plan.hits[verdict.index][0]
            g = self.grants.get(key)
            if g is not None and g.left > 0:  # this process's own unused units may be what fills the window:
                units, g.left = g.left, 0  # given back, and the admission tried once more
                await self._force(keys=[WINDOWS + key], args=[-units, g.minute])
                verdict = await self._scripted(plan)
        if verdict.refused == LEASE:
            subject = plan.leases[verdict.index][0]
            # and its own free slots may be what fills the lease set: given back, and the admission tried once more
            if await self._return_free_slots([subject]):
                verdict = await self._scripted(plan)
        return verdict

    async def _scripted(self, plan: Plan) -> Verdict:
        """The admission script (see `_ADMIT`), asking ahead where it may."""
        if self.lost_admissions or self.lost_releases:
            await self._make_good()
        keys = [RECORD + plan.ident]
        lease_ms = int(GRANT_TTL * 1000)  # renewed by the heartbeat while the request runs (`_renew`)
        ahead = 0 if plan.budgets else GRANT_REQUESTS  # a budget is settled in Redis by every request
        args: list[Any] = [len(plan.hits), len(plan.budgets), len(plan.leases), lease_ms, RECORD_TTL, plan.ident,
                           self.state.replicas, lease_ms]
        asking = []
        minute = self._minute()
        for key, limit, cost in plan.hits:
            keys.append(WINDOWS + key)
            held = self._held(key, limit, minute)
            # up to `GRANT_LOW` more than a grant: asked for again when that much is left, a grant's worth each time
            want = 0 if key in self._asking or not ahead else max(0, (ahead + GRANT_LOW) * max(1, cost) - held)
            if want:
                asking.append(key)
            args += (limit, cost, want)
        for b in plan.budgets:
            keys.append(BUDGETS + b.key)
            args += (b.limit, b.reserved, b.floor, b.expire_at)
        for subject, limit in plan.leases:
            keys.append(_lease_set(subject))
            pool = self.slots.get(subject)
            free = len(pool.free) if pool is not None and pool.limit == limit else 0
            want = 0 if subject in self._asking else max(0, ahead - free)
            if want:
                asking.append(subject)
            args += (limit, want)
        self._asking.update(asking)
        try:
            reply = await self._admit(keys=keys, args=args)
        except BaseException:  # a timeout, or the client left (cancelled): it may have run
            self.lost_admissions.append(keys[0])  # undone once Redis answers again (undoing nothing costs nothing)
            raise
        finally:
            self._asking.difference_update(asking)
        refused, index, window = int(reply[0]), int(reply[1]), int(reply[2])
        if refused == HIT:
            return Verdict(HIT, index - 1, window, [int(reply[3])], int(reply[4]) / 1000)
        if refused:
            return Verdict(refused, index - 1, window)
        self._offset_ms = int(reply[3]) - time.monotonic() * 1000
        for subject, _ in plan.leases:
            self.exact.setdefault(subject, set()).add(plan.ident)
        nh = len(plan.hits)
        remaining = []  # as the headers count it: what Redis has left, and what this process holds ahead
        for (key, limit, _), left, granted in zip(plan.hits, reply[4:4 + nh], reply[4 + nh:4 + 2 * nh], strict=True):
            left, granted = int(left), int(granted)
            g = self.grants.get(key)
            if g is not None and (g.minute != window or g.limit != limit):
                if g.left > 0:  # its unused units, given back to their minute (while it still weighs)
                    self._force_soon(key, g.minute, -g.left)
                del self.grants[key]
                g = None
            if granted:
                if g is None:
                    g = self.grants[key] = Grant(window, limit, granted, left)
                else:
                    g.left += granted
                    g.seen = left
            elif g is not None:  # what Redis has left now: near the floor, the units held are used up here, not asked
                g.seen = left  # for again by every admission (none would be granted) while they stay unused
            remaining.append(left + g.left if g is not None else left)
        nl = len(plan.leases)
        for b, taken in zip(plan.budgets, reply[4 + 2 * nh + nl:], strict=True):
            b.reserved = int(taken)  # (what the budget had left, when less than asked)
        for (subject, limit), granted in zip(plan.leases, reply[4 + 2 * nh:4 + 2 * nh + nl], strict=True):
            members = [f"{plan.ident}:{n}" for n in range(1, int(granted) + 1)]
            if members:
                pool = self.slots.get(subject)
                if pool is None:
                    pool = self.slots[subject] = Slots(limit)
                elif pool.limit != limit:  # the free slots granted under another limit are not given out
                    pool.drop_free()
                    pool.limit = limit
                pool.free += members
                pool.held.update(members)
        return Verdict(0, 0, window, remaining)

    async def peek(self, windows: list[tuple[str, int]]) -> list[int]:
        """What is left in each (window, limit): Redis's count, and the units this process holds ahead."""
        reply = await self._peek(keys=[WINDOWS + key for key, _ in windows], args=[limit for _, limit in windows])
        minute = self._minute()
        return [int(there) + self._held(key, limit, minute) for (key, limit), there in zip(windows, reply, strict=True)]

    def _held(self, key: str, limit: int, minute: int) -> int:
        """Units of this window this process holds ahead, usable now (granted this minute, under this limit)."""
        g = self.grants.get(key)
        return g.left if g is not None and g.minute == minute and g.limit == limit else 0

    def _put_back(self, members: list[tuple[str, str]]) -> None:
        """Granted slots free again (unless they were dropped meanwhile: expired, or a changed limit)."""
        for subject, member in members:
            pool = self.slots.get(subject)
            if pool is not None and member in pool.held:
                pool.free.append(member)

    async def release(self, subjects: list[str], ident: str) -> None:
        served = self.served.get(ident)
        if served is not None:
            self._put_back([m for m in served if m[0] in subjects])
            served[:] = [m for m in served if m[0] not in subjects]
            return
        self._forget(subjects, ident)
        keys = [_lease_set(subject) for subject in subjects]
        try:
            if len(keys) == 1:
                await self.state.redis.zrem(keys[0], ident)
            else:
                async with self.state.redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.zrem(key, ident)
                    await pipe.execute()
        except Exception:
            self.lost_releases += ((key, ident) for key in keys)
            raise

    def _forget(self, subjects: list[str], ident: str) -> None:
        """The admission's leases on these subjects are released: the heartbeat renews them no more."""
        for subject in subjects:
            held = self.exact.get(subject)
            if held is not None:
                held.discard(ident)
                if not held:
                    del self.exact[subject]

    def _settle_served(self, s: Settlement, served: list[tuple[str, str]]) -> None:
        """A settlement of an admission served from grants, in the process: slots back, tokens to or from the grant."""
        self._put_back(served)
        if not s.delta:
            return
        minute = self._minute()
        for key in s.tpm:
            g = self.grants.get(key)
            if g is not None and g.minute != minute:
                g = None  # a past minute's grant: its units are spent there
            if s.delta < 0:  # a refund, only while the reservation's minute is the current one (as in Redis)
                if g is not None and s.window == minute:
                    g.left -= s.delta
            elif g is not None and g.left >= s.delta:
                g.left -= s.delta
            else:
                self._force_soon(key, minute, s.delta)

    def _flush_soon(self) -> None:
        if self._forced and self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def _force_soon(self, key: str, minute: int, units: int) -> None:
        self._forced[key, minute] = self._forced.get((key, minute), 0) + units
        self._flush_soon()

    async def _flush(self) -> None:
        """Force the grants' overruns and give back their unused units, a moment later, together (kept for the next
        try if it fails)."""
        forced: dict[tuple[str, int], int] = {}
        try:
            await asyncio.sleep(GRANT_FLUSH)
            forced, self._forced = self._forced, {}
            await self._force_all(forced)
            forced = {}
        except Exception as exc:
            self.state.failed(exc)
        finally:
            for key, units in forced.items():  # not applied: tried again by the next flush
                self._forced[key] = self._forced.get(key, 0) + units
            self._flusher = None
        if self.state.up:
            self._flush_soon()  # overruns settled while this one was in flight (a Redis away: the heartbeat's turn)

    async def _force_all(self, forced: dict[tuple[str, int], int]) -> None:
        """(window, minute) -> units forced into (negative: given back to) that window's minute, in one script."""
        args: list[int] = []
        for (_, minute), units in forced.items():
            args += (units, minute)
        await self._force(keys=[WINDOWS + key for key, _ in forced], args=args)

    async def _renew(self) -> None:
        """The heartbeat: the leases of requests running and the granted slots live another `GRANT_TTL` (on Redis's
        clock), free slots beyond `GRANT_REQUESTS` are given back, and free ones Redis no longer has are dropped
        (they count nowhere); lost replies are made good (a process serving from grants may make no other call for a
        while). A replica that stops renewing (it crashed) holds nothing in Redis `GRANT_TTL` later."""
        self._flush_soon()
        if self.lost_admissions or self.lost_releases:
            await self._make_good()
        keys: list[str] = []
        args: list[Any] = [int(GRANT_TTL * 1000), int(GRANT_TTL * 1000)]
        renewed: list[Slots | None] = []
        # after an outage longer than a lease, the leases of requests still running are gone from Redis: added back
        # once (a release racing this one renewal may be undone: that lease then expires within GRANT_TTL)
        restore, self._restore_leases = self._restore_leases, False
        for subject in {*self.slots, *self.exact}:
            pool = self.slots.get(subject)
            exact = list(self.exact.get(subject, ()))
            if pool is None or not pool.held:
                if not exact:
                    continue
                pool = None
                in_use, free, back = [], [], []
            else:
                back = pool.free[GRANT_REQUESTS:]
                del pool.free[GRANT_REQUESTS:]
                pool.held.difference_update(back)
                free = pool.free
                free_set = set(free)
                in_use = [m for m in pool.held if m not in free_set]
            if restore:
                in_use, exact = in_use + exact, []
            keys.append(_lease_set(subject))
            args += (len(in_use), len(free), len(back), len(exact), *in_use, *free, *back, *exact)
            renewed.append(pool)
        if not keys:
            return
        try:
            reply = await self._renew_script(keys=keys, args=args)
        except BaseException:
            self._restore_leases = self._restore_leases or restore  # (tried again by the next heartbeat)
            raise
        for pool, gone in zip(renewed, reply, strict=True):
            if pool is None:  # (exact leases only: nothing is reported gone)
                continue
            for member in gone:
                member = member.decode() if isinstance(member, bytes) else str(member)
                pool.held.discard(member)
                if member in pool.free:
                    pool.free.remove(member)

    async def _give_back(self) -> None:
        """At shutdown: the units and free slots taken ahead go back to Redis now, for the other replicas, rather
        than count until their minute ends (their `GRANT_TTL`), and the overruns still pending are forced."""
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except BaseException:
                pass
        for key, g in self.grants.items():
            if g.left > 0:
                self._forced[key, g.minute] = self._forced.get((key, g.minute), 0) - g.left
                g.left = 0
        self.grants.clear()
        if self._forced:
            forced, self._forced = self._forced, {}
            await self._force_all(forced)
        await self._return_free_slots(list(self.slots))
        if self.lost_admissions or self.lost_releases:
            await self._make_good()

    async def _return_free_slots(self, subjects: list[str]) -> bool:
        """The free slots taken ahead for these lease subjects removed from their sets in Redis (one `_RENEW` call,
        nothing renewed) and no longer given out here; whether there were any."""
        keys: list[str] = []
        back: list[Any] = [0, 0]
        for subject in subjects:
            pool = self.slots.get(subject)
            if pool is not None and pool.free:
                keys.append(_lease_set(subject))
                back += (0, 0, len(pool.free), 0, *pool.free)
                pool.drop_free()
        if keys:
            await self._renew_script(keys=keys, args=back)
        return bool(keys)

    async def settle(self, s: Settlement) -> None:
        served = self.served.pop(s.ident, None)
        if served is not None:
            self._settle_served(s, served)
            return
        self._forget(s.leases, s.ident)
        leases = [_lease_set(subject) for subject in s.leases]
        if self.lost_admissions or self.lost_releases:
            try:
                await self._make_good()
            except BaseException:
                self.lost_releases += ((key, s.ident) for key in leases)  # this one's too, with the others
                raise
        keys = [RECORD + s.ident, *leases, *(WINDOWS + key for key in s.tpm), *(BUDGETS + b[0] for b in s.budgets)]
        args: list[Any] = [len(leases), len(s.tpm), len(s.budgets), s.ident, s.window, s.delta]
        for _, amount, expire_at in s.budgets:
            args += (amount, expire_at)
        try:
            await self._settle(keys=keys, args=args)
        except Exception:
            self.lost_releases += ((key, s.ident) for key in leases)
            raise

    async def _make_good(self) -> None:
        """Undo the admissions whose reply was lost, release the leases whose release was lost (idempotent)."""
        records, releases = self.lost_admissions, self.lost_releases
        self.lost_admissions, self.lost_releases = [], []
        try:
            await self._undo(keys=[*records, *(key for key, _ in releases)],
                             args=[len(records), *(member for _, member in releases)])
        except BaseException:  # failed, or cut short by a cancellation: kept for the next call (idempotent)
            self.lost_admissions[:0], self.lost_releases[:0] = records, releases
            raise

    async def seed(self, key: str, value: int, expire_at: int) -> None:
        await self.state._seed(keys=[BUDGETS + key], args=[value, expire_at])


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
