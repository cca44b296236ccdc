"""The Responses API's stored responses in the team gateway's database, shared by replicas (docs/parameters.md).

`responses.store: database` (the default) keeps each stored response as one
row of the `responses` table (app/team/schema.py): its id, its owner
(`owner_of`: a key sees only its own), when it was made, and the record as one
JSON document (`StoredResponse.to_json`). So `previous_response_id`,
`GET /v1/responses/{id}`, its `input_items` and `DELETE` work on whichever
replica or worker the next request lands on.

* `put` returns once the row is committed: an answer never reaches its client
  before another replica can read it. Concurrent puts share one transaction (a
  writer task takes every row queued meanwhile); on SQLite the transaction runs
  wholly in a worker thread on a synchronous engine over the same file (one trip
  there and back).
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
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.gateway.responses_store import MemoryResponseStore, StoredResponse
from app.team.db import sqlite_twin
from app.team.schema import responses

log = logging.getLogger("gemini_proxy.storage")

PRUNE_INTERVAL = 3600.0  # seconds between two prunes of responses past `responses.store_days`
PRUNE_BATCH = 5000  # rows deleted per statement (a long delete never holds SQLite's write lock for long)

_Row = dict[str, Any]


class DatabaseResponseStore:
    """`ResponseStore` on the `responses` table, the bounded in-process store as its fallback (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, fallback: MemoryResponseStore, days: float,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.engine = engine
        self.fallback = fallback
        self.days = days
        self._clock = clock
        self._twin = sqlite_twin(engine)
        upsert = (postgresql_insert if engine.dialect.name == "postgresql" else sqlite_insert)(responses)
        self._upsert = upsert.on_conflict_do_update(  # the same id again (a retried put) replaces the record
            index_elements=["id"], set_={"owner": upsert.excluded.owner, "created_at": upsert.excluded.created_at,
                                         "record": upsert.excluded.record},
        )
        self._queue: list[tuple[_Row, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self._failing = False  # the log said the database cannot take responses (said once, until it can)

    async def start(self) -> None:
        self._pruner = asyncio.get_running_loop().create_task(self._prune_forever())

    async def stop(self) -> None:
        """The pruner stopped; the rows queued committed (or kept in memory) first."""
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.wait([self._pruner])
        if self._writer is not None:
            await asyncio.wait([self._writer])
        if self._twin is not None:
            self._twin.dispose()

    # --- the interface -------------------------------------------------------------------------

    async def put(self, record: StoredResponse) -> None:
        row = {"id": record.id, "owner": record.owner, "created_at": self._clock(), "record": record.to_json()}
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((row, done))
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_queued())
        try:
            await asyncio.shield(done)  # a client that leaves does not take the row out of the batch
        except Exception as exc:
            self._failed(exc)
            await self.fallback.put(record)
            return
        if self._failing:
            self._failing = False
            log.warning("the database takes stored responses again")

    async def get(self, response_id: str, owner: str) -> StoredResponse | None:
        try:
            found = await self._run(self._select, response_id)
        except Exception as exc:
            self._failed(exc)
            found = None
        if found is None:  # not there (or unreadable): one this process kept while the database was away?
            return await self.fallback.get(response_id, owner)
        if found[0] != owner or found[1] < self._clock() - timedelta(days=self.days):
            return None
        return StoredResponse(**orjson.loads(found[2]))

    async def delete(self, response_id: str, owner: str) -> bool:
        kept = await self.fallback.delete(response_id, owner)
        try:
            deleted = await self._run(self._delete, response_id, owner)
        except Exception as exc:
            self._failed(exc)
            deleted = False
        return kept or deleted

    # --- the database ----------------------------------------------------------------------------

    async def _run(self, work: Callable[..., Any], *args: Any) -> Any:
        """`work(conn, *args)` in one transaction: on SQLite wholly in a worker thread, else on the async engine."""
        twin = self._twin
        if twin is not None:
            def in_thread() -> Any:
                with twin.begin() as conn:
                    return work(conn, *args)

            return await asyncio.to_thread(in_thread)
        async with self.engine.begin() as conn:
            return await conn.run_sync(work, *args)

    def _select(self, conn: Connection, response_id: str) -> tuple[str, datetime, bytes] | None:
        row = conn.execute(select(responses.c.owner, responses.c.created_at, responses.c.record)
                           .where(responses.c.id == response_id)).first()
        if row is None:
            return None
        created = row[1] if row[1].tzinfo is not None else row[1].replace(tzinfo=UTC)  # SQLite keeps no zone
        return row[0], created, row[2]

    def _delete(self, conn: Connection, response_id: str, owner: str) -> bool:
        result = conn.execute(delete(responses).where(responses.c.id == response_id, responses.c.owner == owner))
        return bool(result.rowcount)

    def _insert(self, conn: Connection, rows: list[_Row]) -> None:
        conn.execute(self._upsert, rows)

    async def _write_queued(self) -> None:
        """Commit every row queued, in one transaction per turn, until none is left."""
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    await self._run(self._insert, [row for row, _ in batch])
                except Exception as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._writer = None

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning("the database cannot take or read stored responses (%s): this process keeps them in "
                        "memory meanwhile (other replicas will not find those)", type(exc).__name__)

    async def prune(self) -> int:
        """Delete the responses past `responses.store_days`; how many."""
        cutoff = self._clock() - timedelta(days=self.days)
        total = 0
        while True:
            count: int = await self._run(self._prune_batch, cutoff)
            total += count
            if count < PRUNE_BATCH:
                return total

    @staticmethod
    def _prune_batch(conn: Connection, cutoff: datetime) -> int:
        old = select(responses.c.id).where(responses.c.created_at < cutoff).limit(PRUNE_BATCH).scalar_subquery()
        return int(conn.execute(delete(responses).where(responses.c.id.in_(old))).rowcount or 0)

    async def _prune_forever(self) -> None:
        while True:
            try:
                pruned = await self.prune()
                if pruned:
                    log.info("pruned %d stored responses older than %g days", pruned, self.days)
            except Exception as exc:
                log.warning("pruning stored responses failed (%s); tried again in %g s", type(exc).__name__,
                            PRUNE_INTERVAL)
            await asyncio.sleep(PRUNE_INTERVAL)
