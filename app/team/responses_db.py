"""The Responses API's stored responses in the team gateway's database, shared by replicas (docs/parameters.md).

`responses.store: database` (the default) keeps each stored response as one
row of the `responses` table (app/team/schema.py): its id, its owner
(`owner_of`: a key sees only its own), when it was made, and the record as one
JSON document (`StoredResponse.to_json`). So `previous_response_id`,
`GET /v1/responses/{id}`, its `input_items` and `DELETE` work on whichever
replica or worker the next request lands on.

* `put` returns once the row is committed: an answer never reaches its client
  before another replica can read it. Concurrent puts share one transaction: a
  put queues its row, and a writer task, started on the event loop's next turn,
  takes every row queued until then (and those queued while it writes). A
  commit costs SQLite ~15 system calls whatever it holds (~60 us a row alone,
  ~25 us with 3 others: bench/README.md); streams that end within the same
  turn, as they do under load, share one. On SQLite a transaction runs at once
  on the loop's thread when the file is free (`_run`), else in a worker thread
  on the store's own sqlite3 connection (the driver's own SQL).
* A database that cannot take the row does not fail the request: the record is
  kept in the bounded in-process store (`MemoryResponseStore`, the `memory`
  mode's store) and the log says so once; reads look there when the database has
  nothing (or cannot answer).
* Responses older than `responses.store_days` (default 30, as OpenAI keeps
  them) are pruned in the background, and never served.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from app.gateway.responses_store import MemoryResponseStore, StoredResponse
from app.team.db import sqlite_path, sqlite_pragmas
from app.team.usage_store import sqlite_datetime

log = logging.getLogger("gemini_proxy.storage")

PRUNE_INTERVAL = 3600.0  # seconds between two prunes of responses past `responses.store_days`
PRUNE_BATCH = 1000  # rows deleted per statement (a long delete never holds SQLite's write lock for long)
CHECKPOINT_INTERVAL = 5.0  # seconds between two checkpoints of SQLite's write-ahead log (`_checkpoint`)
BUSY_TIMEOUT = 10.0  # seconds a statement in a worker thread keeps trying while another writer holds SQLite
AT_ONCE_ROWS = 16  # at most this many rows (and `AT_ONCE_BYTES`) are written on the loop's thread; more: a worker's
AT_ONCE_BYTES = 256 * 1024
_PARAMETERS = {"qmark": "?", "numeric_dollar": "${}", "format": "%s", "pyformat": "%s", "numeric": ":{}"}


class DatabaseResponseStore:
    """`ResponseStore` on the `responses` table, the bounded in-process store as its fallback (see the module docstring).

    The statements are the driver's own SQL (SQLAlchemy's statement building cost ~250 us an operation): on an
    SQLite file one sqlite3 connection of the store's own (`_run`); else the engine's.
    """

    def __init__(self, engine: AsyncEngine, fallback: MemoryResponseStore, days: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.fallback = fallback
        self.days = days
        self._clock = clock
        self._sqlite_text = engine.dialect.name == "sqlite"  # times as SQLAlchemy's SQLite DATETIME text
        path = sqlite_path(engine.url.render_as_string(hide_password=False)) if self._sqlite_text else None
        self._sqlite: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the sqlite3 connection: one thread at a time, never waited for on the loop
        if path is not None:
            self._sqlite = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            sqlite_pragmas(self._sqlite, None)
            self._sqlite.execute("PRAGMA busy_timeout=0")  # see `_run`
            self._sqlite.execute("PRAGMA wal_autocheckpoint=0")  # see `_checkpoint`
        style = "qmark" if self._sqlite is not None else engine.dialect.paramstyle
        a, b, c, d = (_PARAMETERS.get(style, "?").format(n) for n in range(1, 5))
        self._sql_put = (f"INSERT INTO responses (id, owner, created_at, record) VALUES ({a}, {b}, {c}, {d}) "
                         "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, created_at = excluded.created_at, "
                         "record = excluded.record")
        self._sql_get = f"SELECT owner, created_at, record FROM responses WHERE id = {a}"
        self._sql_delete = f"DELETE FROM responses WHERE id = {a} AND owner = {b}"
        self._sql_prune = (f"DELETE FROM responses WHERE id IN (SELECT id FROM responses WHERE created_at < {a} "
                           f"LIMIT {PRUNE_BATCH})")
        self._queue: list[tuple[StoredResponse, tuple[Any, ...], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._failing = False  # the log said the database cannot take responses (said once, until it can)

    async def start(self) -> None:
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever())

    async def stop(self) -> None:
        """The pruner stopped; the rows queued committed (or kept in memory) first; the connection closed once
        no worker thread uses it."""
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.wait([self._pruner])
        if self._writer is None and self._queue:  # left by a writer that was cancelled
            self._writer = asyncio.get_running_loop().create_task(self._write_queued())
        if self._writer is not None:
            await asyncio.wait([self._writer])
        connection = self._sqlite
        if connection is not None:
            def close() -> None:
                with self._lock:
                    connection.close()

            await asyncio.to_thread(close)

    # --- the interface -------------------------------------------------------------------------

    async def put(self, record: StoredResponse) -> None:
        row = (record.id, record.owner, self._when(self._clock()), record.to_json())
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((record, row, done))
        if self._writer is None:  # it starts on the loop's next turn: the puts made meanwhile share its commit
            self._writer = asyncio.get_running_loop().create_task(self._write_queued())
        await asyncio.shield(done)  # a client that leaves does not take the row out of the batch

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("the database takes stored responses again")

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        try:
            found = await self._run(self._sql_get, (response_id,), "one")
        except Exception as exc:
            self._failed(exc)
            found = None
        if found is None:  # not there (or unreadable): one this process kept while the database was away?
            return await self.fallback.get(response_id, owner)
        stored_owner, created, data = found
        if stored_owner != owner or self._datetime(created) < self._clock() - timedelta(days=self.days):
            return None
        return StoredResponse(**orjson.loads(data))

    async def delete(self, response_id: str, owner: str) -> bool:
        kept = await self.fallback.delete(response_id, owner)
        try:
            deleted = bool(await self._run(self._sql_delete, (response_id, owner), "count"))
        except Exception as exc:
            self._failed(exc)
            deleted = False
        return kept or deleted

    async def prune(self) -> int:
        """Delete the responses past `responses.store_days` (a batch at a time, in a worker thread on SQLite: a
        large delete walks every record's pages); how many."""
        cutoff = self._when(self._clock() - timedelta(days=self.days))
        total = 0
        while True:
            count: int = await self._run(self._sql_prune, (cutoff,), "count", at_once=False)
            total += count
            if count < PRUNE_BATCH:
                return total
            await asyncio.sleep(0)

    # --- the database ----------------------------------------------------------------------------

    def _when(self, when: datetime) -> Any:
        """A time as the column takes it: SQLAlchemy's SQLite DATETIME text, or the datetime (PostgreSQL)."""
        return sqlite_datetime(when.astimezone(UTC)) if self._sqlite_text else when

    @staticmethod
    def _datetime(value: Any) -> datetime:
        when = datetime.fromisoformat(value) if isinstance(value, str) else value
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)  # SQLite keeps no zone

    async def _run(self, sql: str, parameters: Any, want: str, at_once: bool = True) -> Any:
        """One statement in its own transaction: `want` "one" (the first row or None), "count" (rows changed) or
        "many" (`parameters` is a list of rows, inserted together).

        SQLite: tried at once on the event loop's thread, never waiting for a lock (an insert and its commit, or a
        read, take ~20-75 us, where a trip to a worker thread costs ~150 us); when another writer holds the
        database (SQLITE_BUSY) or a worker thread holds the connection, in a worker thread, which tries again every
        few milliseconds for up to `BUSY_TIMEOUT` and lets the connection go between tries (a read is never held up
        by a write waiting for another process). The loop's thread never checkpoints (`_checkpoint`)."""
        connection = self._sqlite
        if connection is None:
            async with self.engine.begin() as conn:
                result = await conn.exec_driver_sql(sql, parameters)
                return None if want == "many" else result.first() if want == "one" else result.rowcount
        if at_once:
            done, result = self._at_once(sql, parameters, want)
            if done:
                return result

        def in_thread() -> Any:
            deadline = time.monotonic() + BUSY_TIMEOUT
            pause = 0.002
            while True:
                with self._lock:
                    try:
                        return self._execute(connection, sql, parameters, want)
                    except sqlite3.OperationalError as exc:
                        if not _busy(exc) or time.monotonic() > deadline:
                            raise
                time.sleep(pause)
                pause = min(0.05, pause * 2)

        return await asyncio.to_thread(in_thread)

    def _at_once(self, sql: str, parameters: Any, want: str) -> tuple[bool, Any]:
        """(True, the result) when SQLite ran the statement at once on this thread; (False, None) when another writer
        holds the database, a worker thread holds the connection, or the rows are many (a worker's job)."""
        connection = self._sqlite
        if want == "many" and len(parameters) > AT_ONCE_ROWS:
            return False, None
        if connection is None or not self._lock.acquire(blocking=False):
            return False, None
        try:
            return True, self._execute(connection, sql, parameters, want)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
            return False, None
        finally:
            self._lock.release()

    @staticmethod
    def _execute(connection: sqlite3.Connection, sql: str, parameters: Any, want: str) -> Any:
        if want == "many" and len(parameters) == 1:  # one row (a put alone): its statement is its own transaction,
            connection.execute(sql, parameters[0])  # meeting a busy database as BEGIN IMMEDIATE would (~7 us less)
            return None
        if want == "many":  # one transaction; BEGIN IMMEDIATE meets a busy database before any row is written
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(sql, parameters)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return None
        cursor = connection.execute(sql, parameters)
        return cursor.fetchone() if want == "one" else cursor.rowcount

    async def _checkpoint(self) -> None:
        """Move the write-ahead log into the database file, in a worker thread (the store's connection does not
        checkpoint as it commits: that would be milliseconds on the loop's thread now and then)."""
        if self._sqlite is not None:
            await self._run("PRAGMA wal_checkpoint(PASSIVE)", (), "one", at_once=False)

    async def _write_queued(self) -> None:
        """Commit every row queued, in one transaction per turn, until none is left; a batch the database does
        not take is kept in memory (the puts waiting for it return as if it had). Cancelled (a loop torn down
        without `stop`), the puts of the batch in flight end cancelled instead of waiting for ever; rows still
        queued go with the next writer (the next put's, or `stop`'s)."""
        batch: list[tuple[StoredResponse, tuple[Any, ...], asyncio.Future[None]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self._run(self._sql_put, [row for _, row, _ in batch], "many",
                                    at_once=sum(len(row[3]) for _, row, _ in batch) <= AT_ONCE_BYTES)
                except Exception as exc:
                    self._failed(exc)
                    for record, _, _ in batch:
                        await self.fallback.put(record)
                else:
                    self._recovered()
                for _, _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._writer = None
            for _, _, done in batch:
                if not done.done():
                    done.cancel()

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning("the database cannot take or read stored responses (%s): this process keeps them in "
                        "memory meanwhile (other replicas will not find those)", type(exc).__name__)

    async def _prune_forever(self) -> None:
        next_prune = 0.0
        while True:
            try:
                await self._checkpoint()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_INTERVAL
                    pruned = await self.prune()
                    if pruned:
                        log.info("pruned %d stored responses older than %g days", pruned, self.days)
            except Exception as exc:
                log.warning("pruning stored responses failed (%s); tried again later", type(exc).__name__)
            await asyncio.sleep(CHECKPOINT_INTERVAL if self._sqlite is not None else PRUNE_INTERVAL)


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLite's "database is locked" / "busy": another writer holds the file."""
    text = str(exc)
    return "locked" in text or "busy" in text
