"""Client limits and budgets: admit a request before Google, settle it after (docs/team.md#limits).

A key and its team may each carry `rpm`, `tpm`, `concurrency`,
`tokens_per_day`, `tokens_per_month` and `usd_per_month`; every one that is
set applies. `Limiter.admit` runs once per request, after the endpoint has
parsed the body and before Google is called; `Limiter.settle` runs in the
pipeline's `finally` with Google's real usage (`ctx.usage`) and cost
(`ctx.cost_usd`):

* rpm / tpm: a sliding window counter (one-minute buckets on the epoch, the
  previous one weighted), in the process (`LocalWindows`) or, shared by every
  replica, on Redis (the same algorithm in a Lua script, app/gateway/shared.py).
  Tokens are reserved from an estimate
  (`estimate_prompt_tokens`: text bytes / 4 and a fixed count per inline
  media part, plus `max_tokens`, or a default output of at most 4096 tokens
  and a quarter of the smallest tpm) and settled with the real count:
  a positive difference is forced in (over the limit if need be, the next
  requests wait), a negative one refunded while the minute that took the
  reservation is still the current one;
* concurrency: a lease per request, released just before the last bytes of
  the answer (`release_leases`) or else in the `finally`; on Redis a
  sorted set whose members expire unless the replica's heartbeat renews them
  (every 2 s, for 10 s: `GRANT_TTL` in app/gateway/shared.py), so a crashed
  replica's leases are gone within seconds;
* budgets: calendar counters (UTC day, UTC month) of tokens and micro-USD,
  reserved (the estimate as for tpm, priced by the model asked for USD; a
  request without a maximum output admitted while its prompt fits, taking
  what is left when its default output does not) and settled like tpm; the first use of a counter in a period seeds
  it from a `BudgetSource` (the usage table): one query per key or team and
  period at a time (tokens and USD of a month together), at most
  `SEED_TIMEOUT`; a source that fails or is slow does not fail the request
  (the counter goes on from what it holds; the seed is tried again after
  `SEED_RETRY`; logged once) and is never taken for a Redis failure.

Without Redis each of N worker processes enforces its share of every limit
(limit // N, one more for the first limit % N workers by their slot,
`claim_worker_slot`; USD limit / N), so the gateway is never looser than
configured (a limit below N leaves some workers none: they refuse it). With Redis configured but unreachable a
replica falls back to the same local limits divided by the number of
processes last seen alive (`SharedState.replicas`), and never answers 5xx for
it. A budget counter enforcing a share is seeded with the same share of what
was spent (spent / N); each time a local fallback starts its counters are
seeded again (a seed only ever raises a counter). A key with no limits costs one attribute test.

An admission is one backend call (`Plan` -> `Verdict`: all the hits, budgets and leases, all or nothing, and
the figures of the headers or of the refusal), a settlement one more (`Settlement`); on Redis one script
each (docs/team.md#replicas).

Answers to a limited key carry OpenAI's `x-ratelimit-*` headers; refusals
are 429 with OpenAI's bodies (`rate_limit_exceeded` with `Retry-After` and
`retry-after-ms`; `insufficient_quota` with `x-should-retry: false`).
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from app.errors import GatewayError
from app.pipeline.context import Limits, Principal, RequestContext, Usage

log = logging.getLogger("gemini_proxy.limits")

WINDOW = 60  # seconds: rpm and tpm are per minute
DEFAULT_OUTPUT = 4096  # tokens reserved for the answer when the request names no maximum
MEDIA_TOKENS = 258  # prompt tokens counted per image (or other media part) sent: Gemini's figure for an image tile
IMAGE_OUTPUT_TOKENS = 1290  # output tokens reserved per image asked of an image model (Gemini's ~1290 per image)
SEED_TIMEOUT = 2.0  # seconds a budget seed may wait for the usage records before the request goes on without it
SEED_RETRY = 10.0  # seconds before a failed seed is tried again (the request path never hammers a sick database)
LARGE_BODY = 32 * 1024  # bytes: a body larger than this is scanned for media before its size is taken for text
KINDS = ("rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month", "usd_per_month")
WORKER_SLOTS_ENV = "GEMINI_PROXY_WORKER_SLOTS"  # the run's directory of worker slot locks (`gemini-proxy serve --workers`)
_lease_ids = itertools.count(1)
_process_tag = f"{os.getpid()}-{time.time_ns() % 10**9}"


def go_duration(seconds: float) -> str:
    """OpenAI's reset format (Go's `time.Duration` text, milliseconds): 20ms, 1s, 1.428s, 6m0s, 1h0m0s."""
    return _go_ms(max(0, round(seconds * 1000)))


def _go_ms(ms: int) -> str:
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


_RESETS: dict[int, bytes] = {}  # milliseconds -> the `x-ratelimit-reset-*` value (a window's reset: 0 to 60 s)


def _reset_value(ms: int) -> bytes:
    value = _RESETS.get(ms)
    if value is None:
        value = _go_ms(ms).encode()
        if len(_RESETS) < 100_000:
            _RESETS[ms] = value
    return value


# where inline media begins: a data URL's payload, or a `"data": "` field (Gemini's inlineData, OpenAI's input_audio)
_MEDIA_START = re.compile(rb';base64,|"data"\s*:\s*"')


def estimate_prompt_tokens(body: bytes) -> int:
    """The prompt's tokens as the limiter reserves them: text bytes / 4, and `MEDIA_TOKENS` per inline media part.

    A body up to `LARGE_BODY` is taken whole (bytes / 4). A larger one is scanned once for inline media (a data
    URL's base64 payload, a `"data"` string field) up to the closing quote (`bytes.find`, no parsing); those
    bytes are not counted as text, so a megabyte of image never makes a request "too large" for a tpm.
    """
    size = len(body)
    if size <= LARGE_BODY:
        return size // 4
    media_bytes = parts = pos = 0
    search = _MEDIA_START.search
    while (found := search(body, pos)) is not None:
        start = found.end()
        end = body.find(b'"', start)
        if end < 0:
            end = size
        media_bytes += end - start
        parts += 1
        pos = end + 1
    return (size - media_bytes) // 4 + MEDIA_TOKENS * parts


def _scope(ctx: RequestContext, subject: Subject) -> str:
    """`key <name>` or `team <name>` (never a secret), where OpenAI says `organization org-...`."""
    return f"key {ctx.principal.label}" if subject.ident.startswith("key:") else f"team {ctx.principal.team}"


class RateLimitExceeded(GatewayError):
    """429 `rate_limit_exceeded` (type `requests` or `tokens`), as OpenAI answers it."""

    status = 429
    code = "rate_limit_exceeded"


class CounterMissing(Exception):
    """A shared budget counter this process had seeded is gone (Redis evicted or flushed it): seed it again."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class QuotaExceeded(GatewayError):
    """429 `insufficient_quota`: a token or USD budget is spent; retrying cannot help."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class BudgetSource(Protocol):
    """What was spent already (e.g. the usage table), to seed a budget counter after a restart.

    `subject` is `key:<key id>` or `team:<name>`; `since` a Unix time (the
    start of the UTC day or month). Returns (tokens, USD).
    """

    async def spent(self, subject: str, since: float) -> tuple[int, float]: ...


class NoBudgetSource:
    """The default: counters start at zero."""

    async def spent(self, subject: str, since: float) -> tuple[int, float]:
        return 0, 0.0


def share(limits: Limits, n: int, slot: int | None = None) -> Limits:
    """One process's share of `limits` when `n` processes enforce them without shared state.

    `slot` (0 .. n-1: which of the run's `--workers` this is, `claim_worker_slot`): limit // n, and one more for the
    first limit % n slots, so the shares add up to the limit exactly, never more (a limit below n leaves some
    workers none). Without a slot (replicas counted through a Redis that is away): limit // n, at least 1.
    """
    if n <= 1:
        return limits

    def part(value: int | None) -> int | None:
        if value is None:
            return None
        if slot is None:
            return max(1, value // n)
        return value // n + (1 if slot < value % n else 0)

    usd = None if limits.usd_per_month is None else limits.usd_per_month / n
    return Limits(part(limits.rpm), part(limits.tpm), part(limits.concurrency), part(limits.tokens_per_day),
                  part(limits.tokens_per_month), usd)


def claim_worker_slot(directory: str, n: int) -> tuple[int, int] | None:
    """(slot, the open file holding it): the lowest of 0 .. n-1 that no live worker of this run holds (an exclusive
    `flock` held for the process's life: a worker that dies frees it for the one started in its place); None when
    every slot is held or the directory cannot be used."""
    for slot in range(n):
        try:
            fd = os.open(os.path.join(directory, f"worker-{slot}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return slot, fd
    return None


def periods(now: float) -> tuple[str, float, float, str, float, float]:
    """(day tag, day start, day end, month tag, month start, month end), UTC."""
    d = datetime.fromtimestamp(now, UTC)
    day = d.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)
    return (day.strftime("%Y-%m-%d"), day.timestamp(), day.timestamp() + 86400,
            month.strftime("%Y-%m"), month.timestamp(), next_month.timestamp())


@dataclass(slots=True)
class Subject:
    ident: str  # "key:<id>" | "team:<name>"
    limits: Limits  # as enforced here (a share when local)


@dataclass(slots=True)
class Budget:
    key: str  # counter name
    subject: str
    kind: str  # tokens_per_day | tokens_per_month | usd_per_month
    limit: int  # tokens, or micro-USD
    reserved: int  # asked; once admitted, what was taken: at most what the budget had left, at least `floor`
    expire_at: int
    since: float
    floor: int = 0  # admitted only while this much is left (the prompt's estimate; all of it when the request names
    # its maximum output): a request without a maximum takes what is left when its default output does not fit


@dataclass(slots=True)
class Plan:
    """One admission as a backend executes it, all or nothing (`Backend.admit`)."""

    ident: str  # the admission's id: the member of its leases; on Redis, the key of its record (an undo reads it)
    hits: list[tuple[str, int, int]]  # (window, limit, cost): each subject's rpm, then each subject's tpm
    budgets: list[Budget]
    leases: list[tuple[str, int]]  # (subject, concurrency limit)


HIT, BUDGET, MISSING, LEASE = 1, 2, 3, 4  # what refused an admission (`Verdict.refused`)


@dataclass(slots=True)
class Verdict:
    """A backend's answer to a `Plan`: admitted with the figures the `x-ratelimit-*` headers need, or what refused."""

    refused: int  # 0: all taken; HIT, BUDGET, MISSING (a budget counter gone from Redis: seed it again) or LEASE
    index: int  # which hit, budget or lease refused
    window: int  # the minute (Unix time // 60) the hits were taken in
    remaining: list[int] = field(default_factory=list)  # admitted: left in each window after its hit; HIT: [left]
    frees: float = 0.0  # HIT: seconds until one more unit of the refusing window frees


@dataclass(slots=True)
class Settlement:
    """What settling one admission does, in one backend call (`Backend.settle`)."""

    ident: str
    leases: list[str]  # subjects whose lease is still held
    window: int  # the minute the tpm reservation was taken in
    tpm: list[str]  # the tpm windows
    delta: int  # real tokens minus reserved: forced in if positive; refunded only while `window` is the current minute
    budgets: list[tuple[str, int, int]]  # (counter, amount to add, expire at)


@dataclass(slots=True, eq=False)
class Admission:
    """What one admitted request holds: reservations to settle, leases to release, headers to send."""

    backend: Backend
    subjects: list[Subject]
    reserved: int  # tokens reserved in each tpm window
    window: int  # the minute the reservation was taken in
    ident: str = ""
    tpm: list[str] = field(default_factory=list)  # the tpm windows (the settlement's)
    leases: list[str] = field(default_factory=list)  # subjects whose lease is held (emptied once released)
    budgets: list[Budget] = field(default_factory=list)
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # x-ratelimit-*, as the answer sends them
    failed: Callable[[BaseException], None] | None = None  # a shared backend's failure (the breaker)

    @property
    def headers(self) -> dict[str, str]:
        return {name.decode(): value.decode() for name, value in self.raw_headers}


@dataclass(slots=True, eq=False)
class _Shape:
    """What every admission of one principal (at one process share) takes alike, built once (`Limiter._shape`):
    a request then computes only its costs and its headers' figures."""

    principal: Principal  # held: the cache is keyed by its id, which must not be reused while the entry lives
    subjects: list[Subject]
    rpm: list[tuple[str, int, int]]  # the rpm hits (window, limit, cost 1), one per subject with an rpm
    tpm: list[tuple[Subject, str, int]]  # (subject, window, limit), one per subject with a tpm
    kinds: list[tuple[Subject, str]]  # per hit (rpm ones, then tpm ones): whose window, rpm or tpm
    leases: list[tuple[str, int]]  # (subject, concurrency limit)
    # an admission's `tpm` and `leases`: shared by every admission of the shape (an admission rebinds its
    # `leases` once released, never changes the list)
    tpm_windows: list[str]
    lease_subjects: list[str]
    output: int  # tokens reserved for the answer when the request names no maximum
    budgeted: bool  # a subject has a token or USD budget
    # per header kind (requests, tokens): the three names, then (hit index, limit, limit text) of its first hit and
    # of the others (the team's, when the key has the same kind)
    headers: list[tuple[bytes, bytes, bytes, tuple[int, int, bytes], list[tuple[int, int, bytes]]]]


def _shape_of(principal: Principal, subjects: list[Subject]) -> _Shape:
    rpm = [(s.ident + "/rpm", s.limits.rpm, 1) for s in subjects if s.limits.rpm is not None]
    tpm = [(s, s.ident + "/tpm", s.limits.tpm) for s in subjects if s.limits.tpm is not None]
    kinds = [*((s, "rpm") for s in subjects if s.limits.rpm is not None), *((s, "tpm") for s, _, _ in tpm)]
    headers = []
    for name, hits in ((b"requests", [(i, limit) for i, (_, limit, _) in enumerate(rpm)]),
                       (b"tokens", [(len(rpm) + i, limit) for i, (_, _, limit) in enumerate(tpm)])):
        if hits:
            names = (b"x-ratelimit-limit-" + name, b"x-ratelimit-remaining-" + name, b"x-ratelimit-reset-" + name)
            windows = [(i, limit, str(limit).encode()) for i, limit in hits]
            headers.append((*names, windows[0], windows[1:]))
    leases = [(s.ident, s.limits.concurrency) for s in subjects if s.limits.concurrency is not None]
    return _Shape(
        principal, subjects, rpm, tpm, kinds, leases, [window for _, window, _ in tpm], [s for s, _ in leases],
        min(DEFAULT_OUTPUT, min((limit for _, _, limit in tpm), default=4 * DEFAULT_OUTPUT) // 4),
        any(s.limits.tokens_per_day is not None or s.limits.tokens_per_month is not None
            or s.limits.usd_per_month is not None for s in subjects),
        headers,
    )


async def release_leases(ctx: RequestContext) -> None:
    """Release a limited request's concurrency leases now, just before the last bytes of its answer go out: a
    client that sends its next request as soon as it has read the answer finds its slot free. Idempotent (the
    settlement releases whatever is still held); never raises (a shared backend's failure opens the breaker, and
    the lease is released by the next call that reaches Redis)."""
    adm: Admission | None = ctx.admission
    if adm is None or not adm.leases:
        return
    leases, adm.leases = adm.leases, []
    try:
        await adm.backend.release(leases, adm.ident)
    except Exception as exc:
        if adm.failed is not None:
            adm.failed(exc)
    except BaseException:  # cut short (the client left): the settlement in the `finally` releases them
        adm.leases = leases
        raise


def fits_in(p: float, c: float, s: float, limit: int, cost: int) -> float:
    """Seconds until `cost` more fits in a window whose previous minute counted `p` and this one `c`, `s` seconds into
    this minute: while the previous minute's weight falls (this minute), or once it has become the previous one. The
    same arithmetic as the Redis script's (app/gateway/shared.py `_ADMIT`)."""
    if p * (1 - s / WINDOW) + c + cost <= limit:
        return 0.0
    room = limit - cost - c
    if room >= 0 and p > room:  # this minute, once p * (1 - t / 60) <= room
        return max(0.0, WINDOW * (1 - room / p) - s)
    left = WINDOW - s
    room = limit - cost
    if room < 0:  # more than the limit never fits (a share of 0): a minute, then again
        return left
    if c <= room:  # at the next minute's start
        return left
    return left + WINDOW * (1 - room / c)  # in the next minute, as this one's count weighs less


class LocalWindows:
    """In-process sliding window counters: `limits`' algorithm (two one-minute windows on the epoch, the previous
    one weighted by how much of it still overlaps the last minute), the same as the Redis script's
    (app/gateway/shared.py), at about 1 us a hit.
    """

    __slots__ = ("_windows", "clock")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._windows: dict[str, list[int]] = {}  # key -> [minute index, previous count, current count]
        self.clock = clock

    def _roll(self, key: str, now: float) -> list[int]:
        index = int(now // WINDOW)
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = [index, 0, 0]
        elif w[0] != index:
            w[1] = w[2] if w[0] == index - 1 else 0
            w[2] = 0
            w[0] = index
        return w

    @staticmethod
    def _weighted(w: list[int], now: float) -> float:
        return w[1] * (1 - (now % WINDOW) / WINDOW) + w[2]

    def take(self, limit: int, key: str, cost: int, now: float) -> int:
        """What is left after taking `cost`, or -1 - what is left when it does not fit (nothing taken)."""
        w = self._windows.get(key)
        if w is None or w[0] != int(now // WINDOW):  # not rolled into this minute yet
            w = self._roll(key, now)
        used = self._weighted(w, now) if w[1] else w[2]  # (not rounded down: `limits`' comparison, never looser)
        if cost > limit or used + cost > limit:
            return -1 - max(0, math.floor(limit - used))
        w[2] += cost
        return math.floor(limit - used - cost)

    def hit(self, limit: int, key: str, cost: int) -> bool:
        return self.take(limit, key, cost, self.clock()) >= 0

    def force(self, key: str, amount: int, now: float | None = None) -> None:
        """Add `amount` (negative: give back) to the current minute, whatever the limit."""
        self._roll(key, self.clock() if now is None else now)[2] += amount

    def wait(self, limit: int, key: str, cost: int, now: float) -> float:
        """Seconds until `cost` more fits in the window."""
        w = self._roll(key, now)
        return fits_in(w[1], w[2], now % WINDOW, limit, cost)

    def stats(self, limit: int, key: str, now: float | None = None) -> tuple[int, float]:
        """(what is left, seconds until one more unit frees)."""
        now = self.clock() if now is None else now
        w = self._roll(key, now)
        return max(0, math.floor(limit - self._weighted(w, now))), fits_in(w[1], w[2], now % WINDOW, limit, 1)


class Backend:
    """Where the counters live: windows, leases and budget counters; this one in the process's memory.

    `admit` and `settle` are one call each (on Redis, one script each); here plain Python that never suspends.
    """

    shared = False

    def __init__(self) -> None:
        self.windows = LocalWindows()
        self._leases: dict[str, int] = {}
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (value, expires at)
        # budget counters seeded from the BudgetSource; cleared when Redis returns (shared) or a fallback starts (local)
        self.seeded: set[str] = set()

    def suspends(self, ident: str) -> bool:
        """Whether settling this admission waits on a remote store (then it runs as a task a cancellation spares)."""
        return False

    async def admit(self, plan: Plan) -> Verdict:
        """All or nothing: the hits, then the budgets, then the leases; nothing is taken when one refuses."""
        windows = self.windows
        now = windows.clock()
        window = int(now // WINDOW)
        remaining: list[int] = []
        for key, limit, cost in plan.hits:
            left = windows.take(limit, key, cost, now)
            if left < 0:
                i = len(remaining)
                self._unhit(plan.hits[:i], now)
                return Verdict(HIT, i, window, [-1 - left], windows.wait(limit, key, cost, now))
            remaining.append(left)
        for i, b in enumerate(plan.budgets):
            spent = self._get(b.key)
            if spent >= b.limit or spent + b.floor > b.limit:
                self._unhit(plan.hits, now)
                return Verdict(BUDGET, i, window)
        held = self._leases
        for i, (subject, limit) in enumerate(plan.leases):
            if held.get(subject, 0) >= limit:
                self._unhit(plan.hits, now)
                return Verdict(LEASE, i, window)
        for b in plan.budgets:
            b.reserved = min(b.reserved, b.limit - self._get(b.key))
            self._add(b.key, b.reserved, b.expire_at)
        for subject, _ in plan.leases:
            held[subject] = held.get(subject, 0) + 1
        return Verdict(0, 0, window, remaining)

    async def peek(self, windows: list[tuple[str, int]]) -> list[int]:
        """What is left in each (window, limit), nothing taken."""
        return [self.windows.stats(limit, key)[0] for key, limit in windows]

    def _unhit(self, hits: list[tuple[str, int, int]], now: float) -> None:
        for key, _, cost in hits:
            self.windows.force(key, -cost, now)

    async def release(self, subjects: list[str], ident: str) -> None:
        """The admission's leases on these subjects are free."""
        for subject in subjects:
            held = self._leases.get(subject, 0) - 1
            if held > 0:
                self._leases[subject] = held
            else:
                self._leases.pop(subject, None)

    async def settle(self, s: Settlement) -> None:
        """Leases released, the tpm difference forced in or refunded, the budget differences added."""
        if s.leases:
            await self.release(s.leases, s.ident)
        if s.delta and s.tpm:
            now = self.windows.clock()
            if s.delta > 0 or int(now // WINDOW) == s.window:
                for key in s.tpm:
                    self.windows.force(key, s.delta, now)
        for key, amount, expire_at in s.budgets:
            self._add(key, amount, expire_at)

    def _get(self, key: str) -> int:
        value = self._counters.get(key)
        if value is None or value[1] <= time.time():
            return 0
        return value[0]

    def _add(self, key: str, amount: int, expire_at: int) -> None:
        self._counters[key] = (self._get(key) + amount, expire_at)

    async def seed(self, key: str, value: int, expire_at: int) -> None:
        """The counter is at least `value` (what the usage records say was spent; more if counted here since)."""
        if value > self._get(key):
            self._counters[key] = (value, expire_at)


class Limiter:
    """Admits and settles the requests of limited keys (see the module docstring)."""

    def __init__(
        self,
        local_share: int = 1,
        local_slot: int | None = None,
        metrics: Any = None,
        budget_source: BudgetSource | None = None,
        shared: Backend | None = None,
        shared_up: Callable[[], bool] | None = None,
        shared_failed: Callable[[BaseException], None] | None = None,
        replicas: Callable[[], int] | None = None,
        price_of: Callable[[str], Any] | None = None,
    ) -> None:
        self.local = Backend()
        self.price_of = price_of or (lambda model: None)  # model asked -> its `Price` (app/team/prices.py), or None
        self.local_share = max(1, local_share)
        self.local_slot = local_slot  # which of the `local_share` workers this is (its exact share), if known
        self.metrics = metrics
        self.budget_source: BudgetSource = budget_source or NoBudgetSource()
        self.shared = shared
        self._shared_up = shared_up or (lambda: shared is not None)
        self._shared_failed = shared_failed or (lambda exc: None)
        self._replicas = replicas or (lambda: self.local_share)
        self._shares: dict[tuple[Limits, int], Limits] = {}
        self._shapes: dict[tuple[int, int], _Shape] = {}  # (id of the principal, share) -> its admissions' shape
        self._periods: tuple[int, tuple[str, float, float, str, float, float]] = (-1, periods(0))
        self._on_shared = True  # the last admission used the shared backend (a fallback starts when this flips)
        self._seeding: dict[tuple[str, float], asyncio.Future[tuple[int, float] | None]] = {}  # queries in flight
        self._seed_retry: dict[tuple[str, float], float] = {}  # (subject, since) -> monotonic time of the next try
        self._seed_failing = False  # the log said the usage records cannot be read (said once, until they can)

    def set_slot(self, slot: int) -> None:
        """This worker's slot is known (now): the shares are computed again from it."""
        self.local_slot = slot
        self._shares.clear()
        self._shapes.clear()

    def _share(self, limits: Limits, n: int) -> Limits:
        key = (limits, n)
        found = self._shares.get(key)
        if found is None:  # (the exact share of this worker's slot without Redis; with Redis away, at least 1)
            found = self._shares[key] = share(limits, n, self.local_slot if self.shared is None else None)
        return found

    def _subjects(self, p: Principal, n: int) -> list[Subject]:
        out = []
        if p.limits.any():
            out.append(Subject(f"key:{p.key_id}", self._share(p.limits, n)))
        if p.team is not None and p.team_limits.any():
            out.append(Subject(f"team:{p.team}", self._share(p.team_limits, n)))
        return out

    def _shape(self, p: Principal, n: int) -> _Shape:
        """The principal's `_Shape` at share `n`, built on its first admission (principals live as long as their
        key's entry in the auth's tables: the cache is emptied when it grows past what keys explain)."""
        key = (id(p), n)
        shape = self._shapes.get(key)
        if shape is None or shape.principal is not p:
            if len(self._shapes) >= 10_000:
                self._shapes.clear()
            shape = self._shapes[key] = _shape_of(p, self._subjects(p, n))
        return shape

    async def admit(self, ctx: RequestContext, prompt_tokens: int, max_output: int | None, model: str = "") -> None:
        """Reserve what the request may use, or raise 429; on success `ctx.admission` holds it (`model`: the name
        asked, which prices a USD budget's reservation)."""
        if self.shared is not None:
            if self._shared_up():
                try:
                    ctx.admission = await self._admit(ctx, self.shared, 1, prompt_tokens, max_output, model)
                    self._on_shared = True
                    return
                except GatewayError:
                    raise
                except Exception as exc:  # Redis is gone: this request and the next ones use local limits
                    self._shared_failed(exc)
            if self._on_shared:  # a local fallback starts: its budget counters are seeded again (spent meanwhile)
                self._on_shared = False
                self.local.seeded.clear()
        ctx.admission = await self._admit(ctx, self.local, self._local_n(), prompt_tokens, max_output, model)

    def _local_n(self) -> int:
        """How many processes the local limits are shared by: the replicas last seen through Redis (when it is away),
        else this run's workers."""
        return self._replicas() if self.shared is not None else self.local_share

    async def _admit(
        self, ctx: RequestContext, backend: Backend, n: int, prompt_tokens: int, max_output: int | None, model: str = ""
    ) -> Admission:
        """One backend call (`Plan` -> `Verdict`): the windows, the budgets and the leases, all or nothing."""
        shape = self._shape(ctx.principal, n)
        estimate = max(1, prompt_tokens + (max_output if max_output is not None else shape.output))
        team = ctx.principal.team or ""
        for s, _, tpm in shape.tpm:  # more than a whole minute's tokens never fits: refused before anything is taken
            if estimate > tpm > 0:  # (a worker's share of 0: refused by its window, as a rate limit)
                raise self._too_large(ctx, s, team, tpm, estimate)
        # requests first, then tokens
        hits = shape.rpm + [(window, limit, estimate) for _, window, limit in shape.tpm]
        budgets = self._budgets(shape.subjects, prompt_tokens, max_output, shape.output, model) if shape.budgeted else []
        found: dict[tuple[str, float], tuple[int, float] | None] = {}  # a month's tokens and USD: one query
        if budgets:
            await self._seed_budgets(backend, budgets, n, found)
        plan = Plan(f"{_process_tag}-{next(_lease_ids)}", hits, budgets, shape.leases)
        verdict = await backend.admit(plan)
        if verdict.refused == MISSING:  # evicted or flushed in Redis: seeded again, never counted from 0
            log.warning("a shared budget counter was gone from Redis (%s): seeded again from the usage records",
                        budgets[verdict.index].key)
            backend.seeded.difference_update(b.key for b in budgets)
            await self._seed_budgets(backend, budgets, n, found)
            for b in budgets:
                if b.key not in backend.seeded:  # the usage records are unreadable now: from 0, seeded again later
                    await backend.seed(b.key, 0, b.expire_at)
            verdict = await backend.admit(plan)
            if verdict.refused == MISSING:
                raise CounterMissing(budgets[verdict.index].key)
        if verdict.refused:
            raise self._refusal(ctx, team, shape.subjects, plan, shape.kinds, verdict, estimate)
        adm = Admission(backend, shape.subjects, estimate, verdict.window, plan.ident, shape.tpm_windows,
                        shape.lease_subjects, budgets, self._headers(shape, verdict.remaining))
        if backend.shared:
            adm.failed = self._shared_failed
        return adm

    def _budgets(
        self, subjects: list[Subject], prompt: int, max_output: int | None, default_output: int, model: str
    ) -> list[Budget]:
        """The budget counters the subjects' token and USD budgets reserve from: the prompt's estimate and the
        request's maximum output (without one, the default output, cut to what the budget has left); USD priced by
        the model asked (nothing reserved for a model without a price: it is counted once its usage is known)."""
        output = max_output if max_output is not None else default_output
        need, floor = prompt + output, prompt + (max_output or 0)
        usd_need = usd_floor = 0
        budgets: list[Budget] = []
        for s in subjects:
            lim = s.limits
            if lim.tokens_per_day is None and lim.tokens_per_month is None and lim.usd_per_month is None:
                continue
            minute = int(time.time() // WINDOW)  # UTC days and months begin on a minute: cache per minute
            if self._periods[0] != minute:
                self._periods = (minute, periods(minute * WINDOW))
            day, day_start, day_end, month, month_start, month_end = self._periods[1]
            if lim.tokens_per_day is not None:
                budgets.append(Budget(f"{s.ident}:tokens:{day}", s.ident, "tokens_per_day", lim.tokens_per_day, need,
                                      int(day_end) + 86400, day_start, floor))
            if lim.tokens_per_month is not None:
                budgets.append(Budget(f"{s.ident}:tokens:{month}", s.ident, "tokens_per_month", lim.tokens_per_month,
                                      need, int(month_end) + 86400, month_start, floor))
            if lim.usd_per_month is not None:
                if not usd_need:
                    price = self.price_of(model) if model else None
                    if price is not None:
                        usd_need = price.cost_micro(Usage(prompt, output))
                        usd_floor = price.cost_micro(Usage(prompt, max_output or 0))
                budgets.append(Budget(f"{s.ident}:usd:{month}", s.ident, "usd_per_month",
                                      round(lim.usd_per_month * 1_000_000), usd_need, int(month_end) + 86400,
                                      month_start, usd_floor))
        return budgets

    def _refusal(
        self, ctx: RequestContext, team: str, subjects: list[Subject], plan: Plan, kinds: list[tuple[Subject, str]],
        verdict: Verdict, estimate: int,
    ) -> GatewayError:
        """The 429 for what refused the plan (OpenAI's bodies and headers; docs/team.md#limits)."""
        i = verdict.index
        if verdict.refused == HIT:
            s, kind = kinds[i]
            limit = plan.hits[i][1]
            remaining = verdict.remaining[0]
            if kind == "rpm":
                return self._refuse(ctx, s, team, "rpm", limit, verdict.frees, requests=True, used=limit - remaining)
            wait = verdict.frees if limit else 1.0  # (a share of 0)
            return self._refuse(ctx, s, team, "tpm", limit, wait, requests=False, used=limit - remaining,
                                requested=estimate)
        if verdict.refused == LEASE:
            subject, limit = plan.leases[i]
            s = next(s for s in subjects if s.ident == subject)
            return self._refuse(ctx, s, team, "concurrency", limit, 1.0, requests=True, what="concurrent requests")
        refused = plan.budgets[i]
        self._count(team, refused.kind)
        what = "USD" if refused.kind == "usd_per_month" else "tokens"
        period = refused.kind.rsplit("_", 1)[-1]
        scope = f"key {ctx.principal.label}" if refused.subject.startswith("key:") else f"team {ctx.principal.team}"
        return QuotaExceeded(
            "You exceeded your current quota, please check your plan and billing details. "
            f"({scope}: {refused.kind}, {what} per calendar {period}, UTC)",
            headers={"x-should-retry": "false"},
        )

    async def _seed_budgets(
        self, backend: Backend, budgets: list[Budget], n: int, found: dict[tuple[str, float], tuple[int, float] | None]
    ) -> None:
        """Seed the counters this backend has not seeded yet from what the usage records say was spent."""
        seeded = backend.seeded
        for b in budgets:
            if b.key not in seeded:
                query = (b.subject, b.since)
                if query not in found:
                    found[query] = await self._spent(query)
                spent = found[query]
                if spent is None:  # unreadable: counted from what this backend knows, seeded on a later request
                    continue
                tokens, usd = spent
                # a process enforcing its share (limit / n) counts its share of what was spent
                value = round(usd * 1_000_000 / n) if b.kind == "usd_per_month" else tokens // n
                await backend.seed(b.key, value, b.expire_at)
                seeded.add(b.key)

    async def _spent(self, query: tuple[str, float]) -> tuple[int, float] | None:
        """What `subject` spent since `since` (one query in flight per pair, shared by the requests waiting for it);
        None while the budget source fails (it is tried again after `SEED_RETRY`). Never raises."""
        retry_at = self._seed_retry.get(query)
        if retry_at is not None and time.monotonic() < retry_at:
            return None
        pending = self._seeding.get(query)
        if pending is None:
            pending = self._seeding[query] = asyncio.ensure_future(self._query(query))
            pending.add_done_callback(lambda _: self._seeding.pop(query, None))
        return await asyncio.shield(pending)  # a request that goes away does not cancel the others' query

    async def _query(self, query: tuple[str, float]) -> tuple[int, float] | None:
        try:
            async with asyncio.timeout(SEED_TIMEOUT):
                spent = await self.budget_source.spent(*query)
        except Exception as exc:  # the database, not Redis: never the breaker, never a 5xx
            self._seed_retry[query] = time.monotonic() + SEED_RETRY
            if not self._seed_failing:
                self._seed_failing = True
                log.warning(
                    "reading what %s spent from the usage records failed (%s): budgets count from what is known "
                    "here and are seeded again every %g s until it succeeds", query[0], type(exc).__name__, SEED_RETRY,
                )
            return None
        self._seed_retry.pop(query, None)
        if self._seed_failing:
            self._seed_failing = False
            log.warning("the usage records can be read again: budgets are seeded from them")
        return spent

    @staticmethod
    def _headers(shape: _Shape, remaining: list[int]) -> list[tuple[bytes, bytes]]:
        """The six `x-ratelimit-*` headers of the window that binds (fewest remaining) among key and team."""
        headers: list[tuple[bytes, bytes]] = []
        for limit_name, remaining_name, reset_name, (i, limit, limit_text), others in shape.headers:
            left = remaining[i]
            for j, other_limit, other_text in others:
                if remaining[j] < left:
                    limit, limit_text, left = other_limit, other_text, remaining[j]
            # time until the window is back to full, replenished continuously (`go_duration` of it)
            reset = _reset_value(max(0, round(WINDOW * (limit - left) / limit * 1000)) if limit else 0)  # (0: a share of none)
            headers += ((limit_name, limit_text), (remaining_name, str(left).encode()), (reset_name, reset))
        return headers

    async def peek_headers(self, principal: Principal, sent: frozenset[bytes] = frozenset()) -> list[tuple[bytes, bytes]]:
        """The `x-ratelimit-*` headers of an answer to a limited key that took nothing (a refusal, or an error
        before its admission), as an admitted answer's would read: what is left now in each window; those already
        in `sent` (a refusal's own, naming the window that refused) are left out. Never raises."""
        backend, n = (self.shared, 1) if self.shared is not None and self._shared_up() else (self.local, self._local_n())
        shape = self._shape(principal, n)
        if not shape.headers:
            return []
        windows = [(key, limit) for key, limit, _ in shape.rpm] + [(key, limit) for _, key, limit in shape.tpm]
        try:
            left = await backend.peek(windows)
        except Exception:  # (headers only: never the breaker's business, the next admission finds out)
            return []
        return [header for header in self._headers(shape, left) if header[0] not in sent]

    def _count(self, team: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.rate_limited(team, kind)

    def _refuse(
        self, ctx: RequestContext, subject: Subject, team: str, kind: str, limit: int, wait: float, *, requests: bool,
        used: int | None = None, requested: int = 1, what: str | None = None,
    ) -> RateLimitExceeded:
        self._count(team, kind)
        wait = max(0.001, wait)
        seconds = max(1, math.ceil(wait))
        name = what or ("requests per min (RPM)" if requests else "tokens per min (TPM)")
        used_text = f", Used {used}" if used is not None else ""
        if limit == 0:  # a worker's share of a limit smaller than the workers (no Redis): another worker may serve it
            used_text += (f" (this worker's share of the {kind} limit is 0: the {self.local_share} worker processes "
                          "enforce their shares without Redis)")
        exc = RateLimitExceeded(
            f"Rate limit reached for {ctx.model or 'this model'} in {_scope(ctx, subject)} on {name}: Limit {limit}"
            f"{used_text}, Requested {requested}. Please try again in {go_duration(wait)}.",
            type="requests" if requests else "tokens",
            headers={"retry-after": str(seconds), "retry-after-ms": str(max(1, round(wait * 1000)))},
        )
        if kind == "concurrency":  # not a per-minute window: its pairs are read as they are (`peek_headers`)
            return exc
        label = "requests" if requests else "tokens"
        exc.headers[f"x-ratelimit-limit-{label}"] = str(limit)
        exc.headers[f"x-ratelimit-remaining-{label}"] = "0"
        # as on every answer, the time until the window is back to full (Retry-After says when one more fits)
        full = WINDOW * min(limit, used if used is not None else limit) / limit if limit else 0.0
        exc.headers[f"x-ratelimit-reset-{label}"] = go_duration(max(full, wait))
        return exc

    def _too_large(self, ctx: RequestContext, subject: Subject, team: str, limit: int, requested: int) -> RateLimitExceeded:
        self._count(team, "tpm")
        return RateLimitExceeded(
            f"Request too large for {ctx.model or 'this model'} in {_scope(ctx, subject)} on tokens per min (TPM): "
            f"Limit {limit}, Requested "
            f"{requested}. The input or output tokens must be reduced in order to run successfully.",
            type="tokens", headers={"x-should-retry": "false"},
        )

    async def settle(self, ctx: RequestContext) -> None:
        """After the answer: real usage in place of the reservation, leases released (one backend call). Never raises."""
        adm: Admission | None = ctx.admission
        if adm is None:
            return
        ctx.admission = None
        usage = ctx.usage
        actual = usage.prompt + usage.completion if usage is not None else 0
        cost = ctx.cost_usd or 0.0
        budgets = []
        for b in adm.budgets:
            amount = round(cost * 1_000_000) if b.kind == "usd_per_month" else actual
            if amount != b.reserved:
                budgets.append((b.key, amount - b.reserved, b.expire_at))
        leases, adm.leases = adm.leases, []
        backend = adm.backend
        try:
            await backend.settle(Settlement(adm.ident, leases, adm.window, adm.tpm, actual - adm.reserved, budgets))
        except Exception as exc:
            if backend.shared:
                self._shared_failed(exc)
            else:
                log.exception("settling the limits of request %s failed", ctx.request_id)
