"""Usage records in the database: writing batches, the totals the CLI and /admin/usage show, pruning.

A record is a tuple in `RECORD_FIELDS` order (`record_of`) from the request
to the database; only the spool file holds dicts, one JSON object a line
(`as_dict`, `from_dict`). `write` inserts a batch in one transaction, `ON
CONFLICT DO NOTHING` on the record's own id, and adds to `usage_daily` only the
rows actually inserted (`_RowsInsert.new_ids`), so a batch written twice (a spool
replayed after a crash) counts once. The rows go in the driver's own SQL
(`_RowsInsert`), not through SQLAlchemy's compiled insert, and on an SQLite
file the whole transaction runs in one worker thread (docs/team.md#how-records-are-written).

Totals (`report`) over `[since, until)`: whole UTC days inside the range come
from `usage_daily`, the partial days at its edges from the rows. Retention
deletes rows only, so old whole days still add up after their rows are gone.
Group values: `key` -> the key id, `team` -> the team (null: none), `model` -> the
Gemini model that served the request (else the model asked), `day` -> `YYYY-MM-DD`
(UTC). Costs are summed as integer micro-USD; a record without a price adds 0.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import String, and_, case, delete, func, literal, or_, select, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from app.errors import InvalidRequest
from app.pipeline.context import RequestContext
from app.team.db import sqlite_twin
from app.team.keys import parse_duration, rfc3339
from app.team.schema import usage_daily, usage_records

GroupBy = Literal["key", "team", "model", "day"]
GROUPS: tuple[GroupBy, ...] = ("key", "team", "model", "day")
SUMS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
CHUNK = 400  # rows per INSERT (x 24 columns: within SQLite's and asyncpg's parameter limits)
_LENGTHS = {"request_id": 128, "key_id": 64, "key_name": 256, "team": 128, "endpoint": 32, "model": 256,
            "upstream": 128, "served_model": 256, "error_code": 64}


def _clip(value: str | None, limit: int) -> str | None:
    """Fit a text column: no NUL (PostgreSQL refuses it), at most `limit` characters."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value[:limit]


RECORD_FIELDS = (
    "id", "ts", "request_id", "key_id", "key_name", "team", "endpoint", "model", "upstream", "served_model", "status",
    "error_code", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "cost_micro_usd",
    "latency_ms", "ttft_ms", "attempts", "stream", "client_disconnected",
)
Record = tuple[Any, ...]  # a usage record, in `RECORD_FIELDS` order


def record_of(ctx: RequestContext, record_id: str) -> Record:
    """The usage record of a finished request, as a tuple in `RECORD_FIELDS` order (cheap on the request path)."""
    usage = ctx.usage
    principal = ctx.principal
    first = ctx.first_token
    cost = ctx.cost_usd
    started = ctx.started
    return (
        record_id, ctx.wall, ctx.request_id, principal.key_id, principal.name, principal.team, ctx.endpoint or "other",
        ctx.model, ctx.upstream, ctx.response_model or ctx.served_model, ctx.status, ctx.error_code,
        usage.prompt if usage else 0, usage.completion if usage else 0, usage.reasoning if usage else 0,
        usage.cached if usage else 0, None if cost is None else round(cost * 1_000_000),
        round((time.perf_counter() - started) * 1000), None if first is None else round((first - started) * 1000),
        ctx.attempts, ctx.stream, ctx.error_code == "client_closed",
    )


def as_dict(record: Record) -> dict[str, Any]:
    """A record as the spool file holds it (one JSON object a line)."""
    return dict(zip(RECORD_FIELDS, record, strict=True))


def from_dict(fields: dict[str, Any]) -> Record:
    """A record from the spool file's form; a field missing is None (`write` refuses the record if it needs one)."""
    return tuple(map(fields.get, RECORD_FIELDS))


class RecordRefused(ValueError):
    """A record that can never be stored (malformed: a spool line edited by hand, a field of the wrong type)."""


# usage_records' columns, in the order of the rows `_prepare` makes (the table's order)
COLUMNS = tuple(c.name for c in usage_records.columns)
(_ID, _CREATED_AT, _DAY, _REQUEST_ID, _KEY_ID, _KEY_NAME, _TEAM, _ENDPOINT, _MODEL, _UPSTREAM, _SERVED_MODEL, _STATUS,
 _ERROR_CODE, _PROMPT, _COMPLETION, _REASONING, _CACHED, _COST) = range(18)


def _row(record: Record, sqlite: bool) -> Record:
    try:
        return _prepare(record, sqlite)
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        record_id = str(record[0] if record else None)[:64]
        raise RecordRefused(f"usage record {record_id!r} is malformed: {type(exc).__name__}") from None


def _prepare(record: Record, sqlite: bool) -> Record:
    """A record as a row of `usage_records` (`COLUMNS` order), ready for the driver: its time (SQLite: as SQLAlchemy
    stores a DATETIME) and UTC day, texts cut to fit, numbers checked; SQLite's booleans as the 1 / 0 it stores (a
    `bool` costs the sqlite3 module an adapter lookup per value, ~3 us a row for two)."""
    (record_id, ts, request_id, key_id, key_name, team, endpoint, model, upstream, served_model, status, error_code,
     prompt, completion, reasoning, cached, cost, latency, ttft, attempts, stream, disconnected) = record
    if type(record_id) is not str:
        raise TypeError("id")
    created: datetime | str
    flags: tuple[Any, Any]
    if sqlite:
        created = sqlite_stamp(ts)
        day = created[:10]
        flags = 1 if stream else 0, 1 if disconnected else 0
    else:
        when = datetime.fromtimestamp(ts, UTC)
        created, day = when, when.date().isoformat()
        flags = bool(stream), bool(disconnected)
    n = _LENGTHS
    return (
        record_id, created, day, _clip(request_id, n["request_id"]), _clip(key_id, n["key_id"]),
        _clip(key_name, n["key_name"]), _clip(team, n["team"]), _clip(endpoint, n["endpoint"]), _clip(model, n["model"]),
        _clip(upstream, n["upstream"]), _clip(served_model, n["served_model"]), int(status or 0),
        _clip(error_code, n["error_code"]), int(prompt), int(completion), int(reasoning), int(cached),
        None if cost is None else int(cost), int(latency), None if ttft is None else int(ttft), int(attempts), *flags,
    )


def sqlite_datetime(when: datetime) -> str:
    """`when` (UTC) as SQLAlchemy stores a DATETIME in SQLite (its bind processor, at a quarter of its cost)."""
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 (faster than an f-string here)
        when.year, when.month, when.day, when.hour, when.minute, when.second, when.microsecond)


_second: list[tuple[float | None, str]] = [(None, "")]  # the last whole second stamped, and its text to the seconds


def sqlite_stamp(ts: float) -> str:
    """`sqlite_datetime(datetime.fromtimestamp(ts, UTC))` at half its cost: the microseconds rounded as
    `fromtimestamp` rounds them (half to even), the date and time of the whole second formatted once a second."""
    fraction, whole = math.modf(ts)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    elif micro < 0:
        whole, micro = whole - 1, micro + 1_000_000
    last = _second[0]
    if last[0] != whole:
        last = _second[0] = whole, sqlite_datetime(datetime.fromtimestamp(whole, UTC))[:19]
    return f"{last[1]}.{micro:06d}"


def _daily_sums(rows: Iterable[Record]) -> list[dict[str, Any]]:
    """`usage_daily`'s increments for rows just inserted: one per (day, key, team, model), in one order for every writer
    (no deadlock between replicas)."""
    daily: dict[tuple[str, str, str, str], list[int]] = {}
    for row in rows:
        key = (row[_DAY], row[_KEY_ID], row[_TEAM] or "", (row[_SERVED_MODEL] or row[_MODEL] or "")[:256])
        sums = daily.get(key)
        if sums is None:
            sums = daily[key] = [0, 0, 0, 0, 0, 0, 0]
        sums[0] += 1
        sums[1] += row[_STATUS] >= 400 or row[_ERROR_CODE] is not None
        sums[2] += row[_PROMPT]
        sums[3] += row[_COMPLETION]
        sums[4] += row[_REASONING]
        sums[5] += row[_CACHED]
        sums[6] += row[_COST] or 0
    return [
        {"day": k[0], "key_id": k[1], "team": k[2], "model": k[3], "requests": s[0], "errors": s[1],
         **dict(zip(SUMS, s[2:6], strict=True)), "cost_micro_usd": s[6]}
        for k, s in sorted(daily.items())
    ]


@dataclass(slots=True)
class Totals:
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    cost_micro_usd: int = 0

    def add(self, other: Sequence[Any]) -> None:
        self.requests += int(other[0] or 0)
        self.errors += int(other[1] or 0)
        self.prompt_tokens += int(other[2] or 0)
        self.completion_tokens += int(other[3] or 0)
        self.reasoning_tokens += int(other[4] or 0)
        self.cached_tokens += int(other[5] or 0)
        self.cost_micro_usd += int(other[6] or 0)

    def to_json(self, group: str | None) -> dict[str, Any]:
        return {
            "group": group, "requests": self.requests, "errors": self.errors, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "reasoning_tokens": self.reasoning_tokens,
            "cached_tokens": self.cached_tokens, "cost_usd": self.cost_micro_usd / 1_000_000,
        }


DEFAULT_SINCE = "7d"
# `since` / `until` are clamped to this range (no record is older or newer), so day arithmetic never overflows.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def _out_of_range(text: str, param: str) -> InvalidRequest:
    return InvalidRequest(
        f"`{param}` is out of range: {text[:100]!r}; give a time between {rfc3339(EARLIEST)} and {rfc3339(LATEST)}.",
        param=param,
    )


def parse_when(text: str, param: str, now: datetime) -> datetime:
    """`since` / `until`: RFC 3339 / ISO-8601 (a date is its UTC midnight; no zone = UTC), or `7d`, `24h` = that long ago.

    Clamped to [`EARLIEST`, `LATEST`]; a time that is no time in UTC (year 0 or 10000) is a 400 naming `param`.
    """
    value = text.strip()
    if value.lower() == "now":
        return now
    try:
        return max(now - parse_duration(value), EARLIEST)
    except OverflowError:  # a span longer than the calendar
        raise _out_of_range(text, param) from None
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"`{param}` is not a time: {text[:100]!r}; give an ISO-8601 time (2026-12-01T00:00:00Z), a date "
            "(2026-12-01) or a span back from now (7d, 24h, 30m).", param=param,
        ) from None
    try:
        when = as_utc(when)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is before year 1 in UTC
        raise _out_of_range(text, param) from None
    return min(max(when, EARLIEST), LATEST)


@dataclass(frozen=True, slots=True)
class UsageQuery:
    by: GroupBy
    since: datetime
    until: datetime

    @classmethod
    def parse(cls, by: str | None, since: str | None, until: str | None, now: datetime | None = None) -> UsageQuery:
        """Validate the parameters of /admin/usage and `gemini-proxy usage` (400 naming the bad one)."""
        now = now or datetime.now(UTC)
        group = (by or "key").strip().lower()
        if group not in GROUPS:
            raise InvalidRequest(f"`by` must be one of {', '.join(GROUPS)}; got {str(by)[:50]!r}.", param="by")
        start = parse_when(since if since is not None else DEFAULT_SINCE, "since", now)
        end = parse_when(until, "until", now) if until is not None else now
        if start >= end:
            raise InvalidRequest(f"`since` ({rfc3339(start)}) must be before `until` ({rfc3339(end)}).", param="since")
        return cls(group, start, end)

    def to_json(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"by": self.by, "since": rfc3339(self.since), "until": rfc3339(self.until), "rows": rows}


def _day_start(when: datetime, up: bool) -> datetime:
    start = when.replace(hour=0, minute=0, second=0, microsecond=0)
    return start + timedelta(days=1) if up and start != when else start


class _RowsInsert:
    """The insert of `write` in the driver's own SQL, one statement per chunk, `ON CONFLICT (id) DO NOTHING`, and the
    ids of the rows that were new (`new_ids`).

    SQLAlchemy's compiled insert spent ~30 us per row handling parameters; here a row costs `_prepare` and the
    driver's own work. SQLite: one multi-row VALUES (at most `CHUNK` rows: its parameter limit); the rows it counts
    as inserted are all of them unless the batch is a replay, and only then are the new ones read back (`RETURNING
    id` cost ~2.5 us a row, every time). PostgreSQL: the rows as one JSON array (orjson), taken apart by the server
    (`json_array_elements`), `RETURNING id`: ~2 us per row in the gateway, where asyncpg binding them
    (`executemany`, or one array per column) costs 6-13 us.
    """

    def __init__(self, dialect: Dialect) -> None:
        columns = list(usage_records.columns)
        self.postgresql = dialect.name == "postgresql"
        names = ", ".join(dialect.identifier_preparer.quote(c.name) for c in columns)
        self.head = f"INSERT INTO {usage_records.name} ({names}) "
        self.tail = " ON CONFLICT (id) DO NOTHING"
        # TEXT, not VARCHAR(n): an explicit cast would cut a long value where the column refuses it (DataError)
        types = (("TEXT" if isinstance(c.type, String) else c.type.compile(dialect)) for c in columns)
        casts = ", ".join(f"(r->>{i})::{t}" for i, t in enumerate(types))
        self.json = f"{self.head}SELECT {casts} FROM json_array_elements($1::json) AS r{self.tail} RETURNING id"
        # SQLite: a statement's rows get the next rowids in order (one above the largest), and the transaction holds
        # the file's write lock: the rows one insert added are the table's last ones
        self.last = f"SELECT id FROM {usage_records.name} ORDER BY rowid DESC LIMIT ?"
        self.placeholders = "(" + ", ".join("?" * len(columns)) + ")"

    @functools.lru_cache(maxsize=8)  # noqa: B019 (one instance per store; the sizes of the last chunks)
    def values(self, rows: int) -> str:
        return f"{self.head}VALUES {', '.join([self.placeholders] * rows)}{self.tail}"

    def new_ids(self, conn: Connection, rows: list[Record]) -> set[str]:
        """Insert `rows`; the ids of those that were not there already."""
        try:
            if self.postgresql:
                statement, parameters = self.json, (orjson.dumps(rows).decode(),)
            else:
                statement, parameters = self.values(len(rows)), tuple(itertools.chain.from_iterable(rows))
            result = conn.exec_driver_sql(statement, parameters)
        except (TypeError, OverflowError) as exc:  # a value no driver can send (an integer past 64 bits, a surrogate)
            raise RecordRefused(f"a usage record in this batch cannot be sent: {type(exc).__name__}") from None
        if self.postgresql:
            return set(result.scalars())
        added = result.rowcount
        if added == len(rows):
            return {row[_ID] for row in rows}
        return set(conn.exec_driver_sql(self.last, (added,)).scalars()) if added > 0 else set()


class UsageStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._rows_insert = _RowsInsert(engine.dialect)
        # SQLite: `write` runs wholly in a worker thread on a synchronous engine over the same file; through aiosqlite
        # each of its ~15 driver calls was a trip to its thread and back (~1 ms a batch)
        self._twin = sqlite_twin(engine)
        # one statement, built (and compiled) once, executed for every group: a statement with the groups in it cost
        # 2-12 ms per batch to build and compile
        statement = (postgresql_insert if engine.dialect.name == "postgresql" else sqlite_insert)(usage_daily)
        self._daily_upsert = statement.on_conflict_do_update(
            index_elements=["day", "key_id", "team", "model"],
            set_={c: usage_daily.c[c] + statement.excluded[c] for c in ("requests", "errors", *SUMS, "cost_micro_usd")},
        )

    async def ping(self) -> bool:
        """Whether the database answers now."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def write(self, records: Iterable[Record]) -> int:
        """Insert a batch (one transaction) and add its new rows to the daily sums; how many rows were new."""
        rows = [_row(r, not self._rows_insert.postgresql) for r in records]
        if not rows:
            return 0
        if self._twin is not None:  # the whole transaction in one trip to a worker thread
            return await asyncio.to_thread(self._write_twin, self._twin, rows)
        async with self.engine.begin() as conn:
            return await conn.run_sync(self._insert, rows)

    def _write_twin(self, twin: Engine, rows: list[Record]) -> int:
        with twin.begin() as conn:
            return self._insert(conn, rows)

    def _insert(self, conn: Connection, rows: list[Record]) -> int:
        inserted: list[Record] = []
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            new = self._rows_insert.new_ids(conn, chunk)
            if len(new) == len(chunk):
                inserted.extend(chunk)
            else:  # some were there already (a replay); an id twice in the batch counts once
                for row in chunk:
                    if row[_ID] in new:
                        new.discard(row[_ID])
                        inserted.append(row)
        if inserted:
            conn.execute(self._daily_upsert, _daily_sums(inserted))
        return len(inserted)

    def close(self) -> None:
        """Close the SQLite writer's own connection (the engine is the caller's to dispose)."""
        if self._twin is not None:
            self._twin.dispose()

    async def report(
        self, by: GroupBy, since: datetime, until: datetime, *, key_id: str | None = None, team: str | None = None
    ) -> list[dict[str, Any]]:
        """Totals per group over [since, until): the rows of /admin/usage and `gemini-proxy usage`."""
        totals: dict[str | None, Totals] = {}
        first_day, last_day = _day_start(since, up=True), _day_start(until, up=False)
        async with self.engine.connect() as conn:
            if first_day < last_day:
                spans = [(since, first_day), (last_day, until)]
                await self._daily(conn, by, first_day, last_day, key_id, team, totals)
            else:
                spans = [(since, until)]
            for start, end in spans:
                if start < end:
                    await self._rows(conn, by, start, end, key_id, team, totals)
        rows = [t.to_json(group) for group, t in totals.items()]
        if by == "day":
            rows.sort(key=lambda r: r["group"])
        else:
            rows.sort(key=lambda r: (-r["cost_usd"], -r["requests"], r["group"] or ""))
        return rows

    async def spent(self, *, key_id: str | None = None, team: str | None = None, since: datetime) -> tuple[int, float]:
        """Tokens (prompt + completion) and USD spent by a key or a team since `since` (seeds budget counters)."""
        until = datetime.now(UTC) + timedelta(days=1)
        rows = await self.report("key", as_utc(since), until, key_id=key_id, team=team)
        tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
        micro = sum(round(r["cost_usd"] * 1_000_000) for r in rows)
        return tokens, micro / 1_000_000

    async def prune(self, older_than: datetime, batch: int = 5000) -> int:
        """Delete the rows of requests before `older_than`, a few thousand per transaction; how many."""
        deleted = 0
        while True:
            async with self.engine.begin() as conn:
                ids = (await conn.execute(
                    select(usage_records.c.id).where(usage_records.c.created_at < older_than).limit(batch)
                )).scalars().all()
                if not ids:
                    break
                await conn.execute(delete(usage_records).where(usage_records.c.id.in_(ids)))
            deleted += len(ids)
        if deleted and self.engine.dialect.name == "sqlite":
            async with self.engine.connect() as conn:
                await conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        return deleted

    async def _rows(
        self, conn: AsyncConnection, by: GroupBy, start: datetime, end: datetime, key_id: str | None,
        team: str | None, totals: dict[str | None, Totals],
    ) -> None:
        t = usage_records.c
        group: ColumnElement[Any] = {
            "key": t.key_id, "team": t.team, "model": func.coalesce(t.served_model, t.model, literal("")), "day": t.day,
        }[by]
        error = case((or_(t.status >= 400, t.error_code.is_not(None)), 1), else_=0)
        query = select(
            group, func.count(), func.sum(error), *(func.sum(t[c]) for c in SUMS),
            func.sum(func.coalesce(t.cost_micro_usd, 0)),
        ).where(and_(t.created_at >= start, t.created_at < end))
        if key_id is not None:
            query = query.where(t.key_id == key_id)
        if team is not None:
            query = query.where(t.team == team)
        for row in (await conn.execute(query.group_by(group))).all():
            totals.setdefault(row[0] or None, Totals()).add(row[1:])

    async def _daily(
        self, conn: AsyncConnection, by: GroupBy, first: datetime, last: datetime, key_id: str | None,
        team: str | None, totals: dict[str | None, Totals],
    ) -> None:
        t = usage_daily.c
        group = {"key": t.key_id, "team": t.team, "model": t.model, "day": t.day}[by]
        query = select(
            group, func.sum(t.requests), func.sum(t.errors), *(func.sum(t[c]) for c in SUMS), func.sum(t.cost_micro_usd)
        ).where(and_(t.day >= first.strftime("%Y-%m-%d"), t.day < last.strftime("%Y-%m-%d")))
        if key_id is not None:
            query = query.where(t.key_id == key_id)
        if team is not None:
            query = query.where(t.team == team)
        for row in (await conn.execute(query.group_by(group))).all():
            totals.setdefault(row[0] or None, Totals()).add(row[1:])


def as_utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
