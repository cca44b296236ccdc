"""The parts of usage accounting on their own, on a real SQLite file and a real PostgreSQL: the price table
and the cost formula, idempotent batches and daily sums, totals across partial and whole days, `spent()`,
retention in the background, the spool of a process that died, a record the database refuses."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.errors import InvalidRequest
from app.pipeline.context import Usage
from app.settings import PriceSettings, normalise_database_url
from app.team.db import open_database
from app.team.prices import DEFAULT_PRICES, PRICES_AS_OF, PriceTable
from app.team.schema import usage_records
from app.team.usage_store import (
    CHUNK,
    RecordRefused,
    UsageQuery,
    UsageStore,
    from_dict,
    sqlite_datetime,
    sqlite_stamp,
)
from app.team.usage_writer import UsageWriter

NOW = datetime(2026, 12, 6, 15, 30, tzinfo=UTC)


def record(n: int, when: datetime, key: str = "key_a", team: str | None = "t", model: str = "gemini-2.5-flash",
           prompt: int = 10, completion: int = 5, cost: int | None = 7, status: int = 200) -> dict[str, Any]:
    return {
        "id": f"u{n:08d}", "ts": when.timestamp(), "request_id": f"req_{n}", "key_id": key, "key_name": "k", "team": team,
        "endpoint": "chat", "model": model, "upstream": "fake", "served_model": model, "status": status,
        "error_code": None if status < 400 else "upstream_error", "prompt_tokens": prompt, "completion_tokens": completion,
        "reasoning_tokens": 1, "cached_tokens": 2, "cost_micro_usd": cost, "latency_ms": 3, "ttft_ms": None,
        "attempts": 1, "stream": False, "client_disconnected": False,
    }


# -- prices -------------------------------------------------------------------------------------------------------


def test_built_in_prices_are_dated_and_priced_by_the_served_model():
    assert PRICES_AS_OF == "2026-12-06"
    table = PriceTable()
    usage = Usage(prompt=1000, completion=250, reasoning=50, cached=300)
    # (1000 - 300) x 0.30 + 300 x 0.03 + 250 x 2.50 (thinking billed as output) micro-USD
    assert table.cost_micro(usage, "gemini-2.5-flash") == 210 + 9 + 625
    assert table.cost_micro(usage, "models/gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash") == 844  # a version suffix
    assert table.cost_micro(usage, "gemini-2.5-flash-lite") == round(700 * 0.10 + 300 * 0.01 + 250 * 0.40)
    assert table.cost_micro(usage, None, "gemini-3.8-flash") == round(700 * 0.75 + 300 * 0.075 + 250 * 3.75)
    assert table.cost_micro(None, "gemini-2.5-flash") == 0  # no usage (an error): nothing to pay
    for model, row in DEFAULT_PRICES.items():
        assert float(row[0]) >= 0 and float(row[1]) >= 0, model


def test_the_long_prompt_tier_prices_every_token_of_the_request():
    table = PriceTable()
    short = Usage(prompt=200_000, completion=1000, cached=0)
    long = Usage(prompt=200_001, completion=1000, cached=1)
    assert table.cost_micro(short, "gemini-2.5-pro") == 200_000 * 1.25 + 1000 * 10
    assert table.cost_micro(long, "gemini-2.5-pro") == round(200_000 * 2.50 + 1 * 0.25 + 1000 * 15)
    assert table.cost_micro(long, "gemini-3.1-pro-preview") == round(200_000 * 4.00 + 1 * 0.40 + 1000 * 18)


def test_unknown_models_cost_null_with_one_warning(caplog):
    table = PriceTable()
    with caplog.at_level(logging.WARNING, "gemini_proxy.usage"):
        assert table.cost_micro(Usage(prompt=5), "acme-llm") is None
        assert table.cost_micro(Usage(prompt=5), "acme-llm") is None
    assert [r.getMessage() for r in caplog.records].count(
        "no price for model 'acme-llm': its usage is recorded with cost null (add it under `pricing:`)") == 1


def test_config_overrides_names_then_globs_then_the_table():
    table = PriceTable({
        "gemini-2.5-flash": PriceSettings(input=1, output=2),  # cached defaults to the input price
        "tuned-*": PriceSettings(input=3, output=4, cached=1, long_prompt_threshold=10, long_input=30, long_output=40),
        "gemini-embedding-*": PriceSettings(input=0, output=0),
    })
    assert table.cost_micro(Usage(prompt=100, completion=10, cached=50), "gemini-2.5-flash") == 100 + 20
    assert table.cost_micro(Usage(prompt=10, completion=1), "tuned-x") == 34
    assert table.cost_micro(Usage(prompt=11, completion=1), "tuned-x") == 370
    assert table.cost_micro(Usage(prompt=100), "gemini-embedding-001") == 0  # a config glob beats a built-in name
    assert table.cost_micro(Usage(prompt=100), "gemini-2.5-pro") == 125  # untouched rows stay


# -- parameters -----------------------------------------------------------------------------------------------------


def test_since_and_until():
    q = UsageQuery.parse(None, None, None, now=NOW)
    assert (q.by, q.since, q.until) == ("key", NOW - timedelta(days=7), NOW)
    q = UsageQuery.parse("DAY", "24h", "2026-12-06T12:00:00+02:00", now=NOW)
    assert (q.by, q.since, q.until) == ("day", NOW - timedelta(hours=24), datetime(2026, 12, 6, 10, tzinfo=UTC))
    assert UsageQuery.parse("team", "2026-12-01", None, now=NOW).since == datetime(2026, 12, 1, tzinfo=UTC)
    for args, param in ((("user", None, None), "by"), ((None, "x", None), "since"), ((None, None, "tomorrow"), "until"),
                        ((None, "2026-12-07", None), "since")):
        with pytest.raises(InvalidRequest) as info:
            UsageQuery.parse(*args, now=NOW)
        assert info.value.param == param


def test_extreme_times_are_a_400_naming_the_parameter_or_clamped():
    for args, param in (((None, "0001-01-01T00:00:00+14:00", None), "since"),
                        ((None, None, "9999-12-31T23:59:59-14:00"), "until")):
        with pytest.raises(InvalidRequest) as info:
            UsageQuery.parse(*args, now=NOW)
        assert info.value.param == param and "out of range" in info.value.message
    q = UsageQuery.parse("day", "0001-01-01", "9999-12-31T23:59:59Z", now=NOW)
    assert (q.since, q.until) == (datetime(1970, 1, 1, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC))
    assert UsageQuery.parse(None, "30000d", None, now=NOW).since == datetime(1970, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidRequest) as info:
        UsageQuery.parse(None, "999999999d", None, now=NOW)
    assert info.value.param == "since" and "out of range" in info.value.message


def test_the_widest_range_reads_the_database(database_url):
    async def main() -> None:
        store = await _store(database_url)
        try:
            await store.write([from_dict(record(1, NOW))])
            q = UsageQuery.parse("day", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", now=NOW)
            rows = await store.report(q.by, q.since, q.until)
            assert [(r["group"], r["requests"]) for r in rows] == [("2026-12-06", 1)]
        finally:
            await store.engine.dispose()

    asyncio.run(main())


# -- the store, on SQLite and PostgreSQL ------------------------------------------------------------------------------


async def _store(url: str) -> UsageStore:
    return UsageStore(await open_database(normalise_database_url(url)))


async def until(condition: Callable[[], object], tries: int = 100, step: float = 0.05) -> None:
    """Wait, at most `tries` x `step` seconds, until `condition()` holds (the test asserts what it needs after)."""
    for _ in range(tries):
        if condition():
            return
        await asyncio.sleep(step)


def test_batches_count_once_and_totals_join_days_and_rows(backend_url):
    async def main() -> None:
        store = await _store(backend_url)
        try:
            day1 = datetime(2026, 12, 4, 23, 0, tzinfo=UTC)  # partial first day
            day2 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # a whole day inside the range
            day3 = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)  # partial last day
            batch = [record(1, day1), record(2, day2, team=None), record(3, day2, key="key_b", cost=None, status=503),
                     record(4, day3, model="gemini-3.8-flash"), record(5, day3 + timedelta(hours=5))]
            rows = [from_dict(r) for r in batch]
            assert await store.write(rows) == 5
            assert await store.write(rows[:3]) == 0  # a replayed batch: nothing counted twice
            since, until = datetime(2026, 12, 4, 22, tzinfo=UTC), datetime(2026, 12, 6, 2, tzinfo=UTC)
            keys = {r["group"]: r for r in await store.report("key", since, until)}
            assert set(keys) == {"key_a", "key_b"}
            assert (keys["key_a"]["requests"], keys["key_a"]["prompt_tokens"], keys["key_a"]["cost_usd"]) == (3, 30, 21e-6)
            assert (keys["key_b"]["requests"], keys["key_b"]["errors"], keys["key_b"]["cost_usd"]) == (1, 1, 0)
            teams = {r["group"]: r["requests"] for r in await store.report("team", since, until)}
            assert teams == {"t": 3, None: 1}
            days = [(r["group"], r["requests"]) for r in await store.report("day", since, until)]
            assert days == [("2026-12-04", 1), ("2026-12-05", 2), ("2026-12-06", 1)]
            models = {r["group"]: r["requests"] for r in await store.report("model", since, until)}
            assert models == {"gemini-2.5-flash": 3, "gemini-3.8-flash": 1}
            # the whole day of 12-05 comes from usage_daily: it still counts once its rows are pruned
            assert await store.prune(datetime(2026, 12, 6, tzinfo=UTC)) == 3
            assert [(r["group"], r["requests"]) for r in await store.report("day", since, until)] == [
                ("2026-12-05", 2), ("2026-12-06", 1)]
            tokens, usd = await store.spent(key_id="key_a", since=datetime(2026, 12, 6, tzinfo=UTC))
            assert (tokens, usd) == (30, 14e-6)
            tokens, usd = await store.spent(team="t", since=datetime(2026, 12, 1, tzinfo=UTC))
            assert (tokens, usd) == (60, 21e-6)  # pruned 12-04 and 12-05 from the daily sums, 12-06 rows
        finally:
            await store.engine.dispose()

    asyncio.run(main())


def test_text_the_database_would_refuse_is_cut_to_fit(backend_url):
    async def main() -> None:
        store = await _store(backend_url)
        try:
            odd = record(1, NOW, model="m\x00" + "x" * 1000)
            odd["error_code"] = "e" * 200
            assert await store.write([from_dict(odd)]) == 1
            rows = await store.report("model", NOW - timedelta(hours=1), NOW + timedelta(hours=1))
            assert rows[0]["group"] == "m" + "x" * 255
        finally:
            await store.engine.dispose()

    asyncio.run(main())


def _with_store(url: str, body: Callable[[UsageStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await _store(url)
        try:
            await body(store)
        finally:
            await store.engine.dispose()

    asyncio.run(main())


def test_an_id_twice_in_a_batch_counts_once_in_rows_and_daily_sums(backend_url):
    async def body(store: UsageStore) -> None:
        day = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
        first = from_dict(record(1, day, prompt=10))
        assert await store.write([first, from_dict(record(2, day, prompt=20)), first]) == 2
        assert await store.write([from_dict(record(2, day, prompt=20)), from_dict(record(3, day, prompt=40))]) == 1
        # the rows (a range inside the day) and the daily sums (the whole day) say the same
        for since, until in ((day - timedelta(hours=1), day + timedelta(hours=1)),
                             (datetime(2026, 12, 5, tzinfo=UTC), datetime(2026, 12, 6, tzinfo=UTC))):
            (row,) = await store.report("key", since, until)
            assert (row["requests"], row["prompt_tokens"], row["cost_usd"]) == (3, 70, 21e-6)

    _with_store(backend_url, body)


def test_a_partly_replayed_batch_counts_only_its_new_rows_in_every_chunk(backend_url):
    """A replay that mixes rows already written with new ones, across insert chunks: the daily sums count the new
    rows once each, whichever chunk and place they are in."""
    async def body(store: UsageStore) -> None:
        day = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
        assert await store.write([from_dict(record(n, day, prompt=n)) for n in range(0, 900, 2)]) == 450
        mixed = [from_dict(record(n, day, prompt=n)) for n in range(500)]  # chunk 1: half new; chunk 2: half new
        assert await store.write(mixed) == 250
        assert await store.write(mixed[:CHUNK] + [from_dict(record(n, day, prompt=n)) for n in range(900, 903)]) == 3
        for since, until in ((day - timedelta(hours=1), day + timedelta(hours=1)),  # rows, and daily sums
                             (datetime(2026, 12, 5, tzinfo=UTC), datetime(2026, 12, 6, tzinfo=UTC))):
            (row,) = await store.report("key", since, until)
            expected = sum(range(0, 900, 2)) + sum(range(1, 500, 2)) + 900 + 901 + 902
            assert (row["requests"], row["prompt_tokens"]) == (703, expected)

    _with_store(backend_url, body)


def test_a_record_no_driver_can_take_is_refused_and_the_others_are_written(backend_url):
    async def body(store: UsageStore) -> None:
        good = from_dict(record(1, NOW))
        huge = from_dict(record(2, NOW, prompt=2**70))  # past 64 bits: no driver sends it
        wrong_id = from_dict({**record(3, NOW), "id": 3})
        for bad in (huge, wrong_id):
            with pytest.raises(RecordRefused):
                await store.write([good, bad])
        assert await store.write([good]) == 1
        (row,) = await store.report("key", NOW - timedelta(hours=1), NOW + timedelta(hours=1))
        assert row["requests"] == 1

    _with_store(backend_url, body)


def test_sqlite_times_are_written_as_sqlalchemy_writes_them():
    """`write` formats SQLite's DATETIME itself (cheaper): what SQLAlchemy reads and compares must be the same text."""
    from sqlalchemy.dialects.sqlite import aiosqlite

    from app.team.schema import usage_records

    dialect = aiosqlite.dialect()
    process = usage_records.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    for when in (NOW, datetime(1970, 1, 1, tzinfo=UTC), datetime(2026, 12, 7, 3, 4, 5, 60, tzinfo=UTC),
                 datetime.fromtimestamp(1796000000.123456, UTC)):
        assert sqlite_datetime(when) == process(when)


def test_sqlite_stamps_round_microseconds_as_fromtimestamp_does():
    """`sqlite_stamp` (a record's time, formatted once a second) says what `fromtimestamp` + `sqlite_datetime` say,
    halfway microseconds (rounded half to even), a carry into the next second and times before 1970 included."""
    whole = 1796000000
    stamps = [whole + (m + 0.5) / 1e6 for m in range(0, 1_000_000, 997)]  # halfway cases, one second after another
    stamps += [whole + 0.9999996, whole + 1.0000004, float(whole), 0.0, -0.5, -1.0000004, 1e-7, 4102444799.9999995]
    stamps += [whole + n * 0.123457 for n in range(100)]
    for ts in stamps:
        assert sqlite_stamp(ts) == sqlite_datetime(datetime.fromtimestamp(ts, UTC)), ts
    for bad in (float("nan"), float("inf"), 1e20):  # refused as `fromtimestamp` refuses them: the record is malformed
        with pytest.raises((ValueError, OverflowError)):
            sqlite_stamp(bad)


def test_a_record_reads_back_with_its_nulls_booleans_and_time(backend_url):
    """A row as SQLAlchemy reads it back: NULLs, booleans and the time to the microsecond as the record had them."""
    from sqlalchemy import select

    async def body(store: UsageStore) -> None:
        when = datetime(2026, 12, 5, 12, 0, 1, 500001, tzinfo=UTC)
        streamed = {**record(1, when, team=None, cost=None), "stream": True, "ttft_ms": 4}
        closed = {**record(2, when, status=499), "client_disconnected": True, "error_code": "client_closed"}
        assert await store.write([from_dict(streamed), from_dict(closed)]) == 2
        async with store.engine.connect() as conn:
            rows = {r.id: r for r in (await conn.execute(select(usage_records))).all()}
        first, second = rows["u00000001"], rows["u00000002"]
        assert (first.team, first.cost_micro_usd, first.error_code, first.ttft_ms) == (None, None, None, 4)
        assert (first.stream, first.client_disconnected, second.stream, second.client_disconnected) == (
            True, False, False, True)
        assert (second.team, second.error_code, second.ttft_ms, second.day) == ("t", "client_closed", None, "2026-12-05")
        assert first.created_at.replace(tzinfo=UTC) == when

    _with_store(backend_url, body)


# -- the writer -------------------------------------------------------------------------------------------------------


def test_retention_prunes_old_rows_in_the_background(database_url, tmp_path: Path):
    import sqlite3

    def ids() -> list[str]:
        with sqlite3.connect(database_url.split(":///", 1)[1]) as conn:
            return sorted(r[0] for r in conn.execute("SELECT id FROM usage_records"))

    async def main() -> None:
        store = await _store(database_url)
        now = datetime.now(UTC)
        await store.write([from_dict(record(1, now - timedelta(days=31))), from_dict(record(2, now - timedelta(days=29))),
                           from_dict(record(3, now))])
        writer = UsageWriter(store, tmp_path / "spool", retention_days=30, prune_interval=0.1, interval=0.05)
        await writer.start()
        try:
            await until(lambda: len(ids()) == 2)
            assert ids() == ["u00000002", "u00000003"]
            # the pruned request's day still adds up, from the daily sums
            days = await store.report("day", now - timedelta(days=40), now + timedelta(minutes=1))
            assert sum(r["requests"] for r in days) == 3
        finally:
            await writer.stop()
            await store.engine.dispose()

    asyncio.run(main())


def test_a_dead_process_spool_is_written_back_and_a_refused_record_is_dropped(database_url, tmp_path: Path, caplog):
    async def main() -> None:
        store = await _store(database_url)
        spool = tmp_path / "spool"
        spool.mkdir()
        now = datetime.now(UTC)
        lines = [json.dumps(record(n, now)) for n in (1, 2, 3)]
        # with a line that is no record (a file edited by hand) and a line torn by a crash
        (spool / "usage-99999-dead.jsonl").write_text("\n".join(lines) + "\n[1, 2]\n" + '{"torn": ')
        writer = UsageWriter(store, spool, interval=0.05)
        try:
            await writer.start()
            assert writer.pending == 3
            writer.add(from_dict(record(4, now)))
            bad = record(5, now)
            bad["status"] = "not a number"
            writer.add(from_dict(bad))
            await until(lambda: writer.pending == 0)
            assert writer.pending == 0
            rows = await store.report("key", now - timedelta(minutes=1), now + timedelta(minutes=1))
            assert rows[0]["requests"] == 4
            assert not list(spool.glob("usage-*.jsonl"))
        finally:
            await writer.stop()
            await store.engine.dispose()

    with caplog.at_level(logging.INFO, "gemini_proxy.usage"):
        asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert any("3 spooled records of an earlier process found" in m for m in messages)
    assert any("usage record u00000005 dropped" in m for m in messages)


def test_a_live_process_spool_is_left_alone(database_url, tmp_path: Path):
    import fcntl

    async def main() -> None:
        store = await _store(database_url)
        spool = tmp_path / "spool"
        spool.mkdir()
        path = spool / "usage-1-live.jsonl"
        path.write_text(json.dumps(record(1, datetime.now(UTC))) + "\n")
        fd = os.open(path, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)  # its owner is alive
        other = os.open(path, os.O_RDWR)  # flock is per open file: this one is refused like another process
        try:
            writer = UsageWriter(store, spool)
            await writer.start()
            assert writer.pending == 0
            await writer.stop()
            assert path.exists()
        finally:
            os.close(other)
            os.close(fd)
            await store.engine.dispose()

    asyncio.run(main())


def test_stop_while_the_database_hangs_spools_the_batch_in_flight(database_url, tmp_path: Path):
    """A write blocked by another connection's lock when shutdown comes: the batch goes to the spool, and the next
    process writes it."""
    import sqlite3

    path = database_url.split(":///", 1)[1]

    async def main() -> None:
        store = await _store(database_url)
        spool = tmp_path / "spool"
        writer = UsageWriter(store, spool, interval=0.05)
        writer.stop_timeout = 1.0
        await writer.start()
        blocker = sqlite3.connect(path, timeout=1)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            now = datetime.now(UTC)
            for n in range(3):
                writer.add(from_dict(record(n, now)))
            await until(lambda: not writer.queue, step=0.02)  # the writer has taken the batch and waits for the lock
            assert not writer.queue and writer._inflight
            await writer.stop()
        finally:
            blocker.rollback()
            blocker.close()
        spooled = [json.loads(line) for p in spool.glob("usage-*.jsonl") for line in p.read_text().splitlines()]
        assert sorted({r["id"] for r in spooled}) == ["u00000000", "u00000001", "u00000002"]
        following = UsageWriter(store, spool, interval=0.05)
        await following.start()
        try:
            await until(lambda: following.pending == 0, tries=400)
            assert following.pending == 0
            rows = await store.report("key", datetime.now(UTC) - timedelta(minutes=5), datetime.now(UTC) + timedelta(minutes=1))
            assert rows[0]["requests"] == 3
        finally:
            await following.stop()
            await store.engine.dispose()

    asyncio.run(main())


def test_a_full_queue_spills_to_the_spool(database_url, tmp_path: Path):
    async def main() -> None:
        store = await _store(database_url)
        writer = UsageWriter(store, tmp_path / "spool", queue_size=2, interval=30)
        await writer.start()
        try:
            now = datetime.now(UTC)
            for n in range(5):
                writer.add(from_dict(record(n, now)))
            assert len(writer.queue) == 2 and writer.spooled == 3 and writer.pending == 5
        finally:
            await writer.stop()  # the queue is written, then the spool on the next start
        following = UsageWriter(store, tmp_path / "spool", interval=0.05)
        await following.start()
        try:
            await until(lambda: following.pending == 0)
            rows = await store.report("key", now - timedelta(minutes=1), now + timedelta(minutes=1))
            assert rows[0]["requests"] == 5
        finally:
            await following.stop()
            await store.engine.dispose()

    asyncio.run(main())


def test_a_read_only_postgresql_loses_no_record(postgres, tmp_path: Path):
    """After a failover the database answers `SELECT 1` but refuses every INSERT: an outage (spooled, storage_up 0),
    not a reason to drop records; they are written back once it takes writes again."""
    import asyncpg

    url = postgres.new_database()
    name = url.rsplit("/", 1)[1]

    async def read_only(on: bool) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=postgres.port, user="postgres", database="postgres")
        try:
            await conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}')
        finally:
            await conn.close()

    async def main() -> None:
        store = await _store(url)
        health: list[bool] = []
        writer = UsageWriter(store, tmp_path / "spool", interval=0.05, on_health=health.append)
        await writer.start()
        try:
            await read_only(True)
            await store.engine.dispose()  # new sessions take the setting
            assert await store.ping()
            now = datetime.now(UTC)
            for n in range(3):
                writer.add(from_dict(record(n, now)))
            await until(lambda: writer.spooled == 3)
            assert writer.spooled == 3 and health == [False]
            assert await store.report("key", now - timedelta(minutes=1), now + timedelta(minutes=1)) == []
            await read_only(False)
            await store.engine.dispose()
            await until(lambda: writer.pending == 0)
            assert writer.pending == 0 and health == [False, True]
            rows = await store.report("key", now - timedelta(minutes=1), now + timedelta(minutes=1))
            assert rows[0]["requests"] == 3
        finally:
            await writer.stop()
            await store.engine.dispose()

    asyncio.run(main())


def test_a_write_slower_than_the_timeout_is_spooled_not_waited_for(database_url, tmp_path: Path):
    """SQLite `database is locked` (or any hang): the batch is spooled after `write_timeout`, nothing is dropped."""
    import sqlite3

    path = database_url.split(":///", 1)[1]

    async def main() -> None:
        store = await _store(database_url)
        writer = UsageWriter(store, tmp_path / "spool", interval=0.05, write_timeout=0.3)
        await writer.start()
        blocker = sqlite3.connect(path, timeout=1)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            now = datetime.now(UTC)
            for n in range(3):
                writer.add(from_dict(record(n, now)))
            await until(lambda: writer.spooled == 3)
            assert writer.spooled == 3 and not writer.healthy
        finally:
            blocker.rollback()
            blocker.close()
        try:
            await until(lambda: writer.pending == 0, tries=200)
            assert writer.pending == 0
            rows = await store.report("key", now - timedelta(minutes=1), now + timedelta(minutes=1))
            assert rows[0]["requests"] == 3
        finally:
            await writer.stop()
            await store.engine.dispose()

    asyncio.run(main())


def test_a_spool_directory_that_cannot_be_made_is_an_error_at_start(database_url, tmp_path: Path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    async def main() -> None:
        store = await _store(database_url)
        writer = UsageWriter(store, blocker / "spool")
        try:
            await writer.start()
        finally:
            await writer.stop()
            await store.engine.dispose()

    with caplog.at_level(logging.INFO, "gemini_proxy.usage"):
        asyncio.run(main())
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("spool directory" in m and "cannot be used" in m for m in errors), errors


def test_budget_seeds_find_the_records_of_a_long_named_config_key(database_url):
    """A config key's default id fits the key_id column: what is recorded under it is what its budget reads."""
    from app.settings import AuthSettings

    (key,) = AuthSettings(client_keys=[{"name": "n" * 100, "key": "long-named"}]).config_keys()
    assert key.id is not None

    async def main() -> None:
        store = await _store(database_url)
        try:
            await store.write([from_dict(record(1, NOW, key=key.id))])
            tokens, _ = await store.spent(key_id=key.id, since=NOW - timedelta(hours=1))
            assert tokens == 15
        finally:
            await store.engine.dispose()

    asyncio.run(main())
