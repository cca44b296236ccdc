"""Stored responses in the database (app/team/responses_db.py), on a real SQLite file and a real PostgreSQL.

The store itself: owners, replace, delete, retention, concurrent puts in one transaction, and a database that
cannot take a row (kept in memory, the request never fails). Then two gateway processes sharing one database,
driven with the openai SDK: a response made on one is retrieved, continued with `previous_response_id`, listed and
deleted through the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.gateway.responses_store import MemoryResponseStore, StoredResponse
from app.settings import normalise_database_url
from app.team.db import open_database
from app.team.responses_db import DatabaseResponseStore
from gateway_harness import FakeGemini

from .team_support import MODEL, GatewayProcess, clean_env, sdk

KEY_A = "sk-responses-db-a-0123456789"
KEY_B = "sk-responses-db-b-0123456789"


def record(rid: str, owner: str = "key:a", text: str = "hello", previous: str | None = None) -> StoredResponse:
    answer = {"id": rid, "object": "response", "status": "completed",
              "output": [{"type": "message", "id": "msg_" + rid, "role": "assistant",
                          "content": [{"type": "output_text", "text": text, "annotations": []}]}]}
    return StoredResponse(rid, owner, answer, [{"type": "message", "id": "in_" + rid, "role": "user",
                                                 "content": [{"type": "input_text", "text": "q"}]}], previous)


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@contextlib.asynccontextmanager
async def opened_store(url: str, **options: Any) -> AsyncIterator[DatabaseResponseStore]:
    """A store on the database at `url` (migrated), stopped and its engine disposed afterwards."""
    engine = await open_database(normalise_database_url(url))
    store = DatabaseResponseStore(engine, MemoryResponseStore(), days=30, **options)
    try:
        yield store
    finally:
        await store.stop()
        await engine.dispose()


def other_writer(tmp_path: Path) -> contextlib.closing[sqlite3.Connection]:
    """Another process's connection to the test's SQLite file (to hold its write lock)."""
    return contextlib.closing(sqlite3.connect(tmp_path / "gemini-proxy.db", isolation_level=None))


@pytest.mark.anyio
async def test_the_store_on_a_real_database(backend_url):
    clock = Clock()
    async with opened_store(backend_url, clock=clock) as store:
        await store.start()
        await store.put(record("resp_1"))
        got = await store.get("resp_1", "key:a")
        assert got == record("resp_1")  # the whole record, as put
        assert await store.get("resp_1", "key:b") is None  # another key's: unknown
        assert await store.get("resp_none", "key:a") is None
        await store.put(record("resp_1", text="again"))  # the same id: replaced
        assert (await store.get("resp_1", "key:a")).response["output"][0]["content"][0]["text"] == "again"
        await asyncio.gather(*(store.put(record(f"resp_c{i}")) for i in range(20)))  # one transaction or a few
        assert all([await store.get(f"resp_c{i}", "key:a") for i in range(20)])
        assert not await store.delete("resp_1", "key:b") and await store.get("resp_1", "key:a") is not None
        assert await store.delete("resp_1", "key:a") and await store.get("resp_1", "key:a") is None
        assert not await store.delete("resp_1", "key:a")
        assert len(store.fallback) == 0  # nothing fell back to memory
        clock.now += timedelta(days=31)  # past store_days: never served, then pruned
        await store.put(record("resp_new"))
        assert await store.get("resp_c0", "key:a") is None
        assert await store.prune() == 20
        assert await store.get("resp_new", "key:a") is not None


@pytest.mark.anyio
async def test_a_database_that_cannot_take_a_row_keeps_it_in_memory(database_url, caplog):
    async with opened_store(database_url) as store:
        async with store.engine.begin() as conn:  # the table is gone: every write and read fails
            await conn.exec_driver_sql("DROP TABLE responses")
        await store.put(record("resp_kept"))  # no exception: the request goes on
        assert len(store.fallback) == 1
        assert await store.get("resp_kept", "key:a") == record("resp_kept")
        assert await store.get("resp_kept", "key:b") is None
        assert await store.delete("resp_kept", "key:a") and await store.get("resp_kept", "key:a") is None
        assert sum("cannot take or read stored responses" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.anyio
async def test_on_sqlite_a_writer_holding_the_file_never_blocks_the_event_loop(database_url, tmp_path):
    """Statements run at once on the loop's thread only when SQLite takes them without waiting; while another
    process writes (holds the lock), the put waits in a worker thread and the loop goes on."""
    async with opened_store(database_url) as store:
        with other_writer(tmp_path) as other:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the database
            put = asyncio.ensure_future(store.put(record("resp_w")))
            ticks = 0
            for _ in range(20):  # the loop keeps turning while the put waits
                await asyncio.sleep(0.01)
                ticks += 1
            assert not put.done() and ticks == 20
            other.execute("COMMIT")
            await asyncio.wait_for(put, 10)
        assert await store.get("resp_w", "key:a") == record("resp_w") and len(store.fallback) == 0


@pytest.mark.anyio
async def test_on_sqlite_reads_are_not_held_up_by_a_write_waiting_for_the_file(database_url, tmp_path):
    """A put waiting for another process's write lock lets the connection go between tries: a read of a stored
    response answers meanwhile. The put goes in once the lock is free."""
    async with opened_store(database_url) as store:
        with other_writer(tmp_path) as other:
            await store.put(record("resp_old"))
            other.execute("BEGIN IMMEDIATE")
            put = asyncio.ensure_future(store.put(record("resp_new")))
            await asyncio.sleep(0.05)
            assert await store.get("resp_old", "key:a") == record("resp_old")
            assert not put.done()
            other.execute("COMMIT")
            await asyncio.wait_for(put, 10)
        assert await store.get("resp_new", "key:a") == record("resp_new") and len(store.fallback) == 0


@pytest.mark.anyio
async def test_a_batch_the_database_refuses_is_kept_in_memory_even_when_its_client_left(database_url, tmp_path):
    async with opened_store(database_url) as store:
        with other_writer(tmp_path) as other:
            other.execute("BEGIN IMMEDIATE")
            put = asyncio.ensure_future(store.put(record("resp_left")))
            await asyncio.sleep(0.05)
            put.cancel()  # the client went away while its row waited
            other.execute("DROP TABLE responses")  # and the database will not take it
            other.execute("COMMIT")
        for _ in range(200):
            if len(store.fallback):
                break
            await asyncio.sleep(0.02)
        assert await store.get("resp_left", "key:a") == record("resp_left")


@pytest.mark.anyio
async def test_puts_made_in_one_turn_share_one_commit(backend_url, monkeypatch):
    async with opened_store(backend_url) as store:
        transactions: list[int] = []
        run = store._run

        async def counted(sql: str, parameters: Any, want: str, at_once: bool = True) -> Any:
            if want == "many":
                transactions.append(len(parameters))
            return await run(sql, parameters, want, at_once)

        monkeypatch.setattr(store, "_run", counted)
        await asyncio.gather(*(store.put(record(f"resp_t{i}")) for i in range(5)))
        await store.put(record("resp_alone"))
        assert transactions == [5, 1]
        assert all([await store.get(f"resp_t{i}", "key:a") for i in range(5)])


@pytest.mark.anyio
async def test_a_writer_cancelled_ends_its_puts_and_stop_writes_the_rows_left(database_url, tmp_path):
    """A writer cancelled (a loop torn down without `stop`): the puts of its batch end instead of waiting for ever,
    and a row queued behind it is written by `stop`."""
    async with opened_store(database_url) as store:
        with other_writer(tmp_path) as other:
            other.execute("BEGIN IMMEDIATE")
            first = asyncio.ensure_future(store.put(record("resp_first")))
            await asyncio.sleep(0.05)  # its batch waits for the lock in a worker thread
            second = asyncio.ensure_future(store.put(record("resp_second")))
            await asyncio.sleep(0.01)  # queued behind it
            assert store._writer is not None
            store._writer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(first, 5)
            assert not second.done()
            other.execute("COMMIT")
        await store.stop()
        await asyncio.wait_for(second, 5)
    with contextlib.closing(sqlite3.connect(tmp_path / "gemini-proxy.db")) as check:
        ids = {row[0] for row in check.execute("SELECT id FROM responses")}
    assert "resp_second" in ids


@pytest.mark.anyio
async def test_the_store_on_an_in_memory_sqlite_engine():
    """No file: the engine's own connection, with its driver's parameter style."""
    from app.team.db import create_engine
    from app.team.schema import metadata

    engine = create_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    store = DatabaseResponseStore(engine, MemoryResponseStore(), days=30)
    try:
        await store.put(record("resp_m"))
        assert await store.get("resp_m", "key:a") == record("resp_m") and len(store.fallback) == 0
        assert await store.delete("resp_m", "key:a")
    finally:
        await store.stop()
        await engine.dispose()


@pytest.fixture
def two_gateways(tmp_path: Path, fake_gemini: FakeGemini, backend_url: str) -> Iterator[list[GatewayProcess]]:
    keys = f'[{{"name": "a", "key": "{KEY_A}"}}, {{"name": "b", "key": "{KEY_B}"}}]'
    env = clean_env(GEMINI_API_KEY="test-key", GEMINI_BASE_URL=fake_gemini.url,
                    GEMINI_PROXY_STORAGE__DATABASE_URL=backend_url, GEMINI_PROXY_AUTH__CLIENT_KEYS=keys)
    started = [GatewayProcess(env, tmp_path / f"gateway-{n}.log") for n in range(2)]
    yield started
    for process in started:
        process.stop()


def test_a_response_made_on_one_replica_is_continued_on_the_other(two_gateways, fake):
    one, two = (sdk(g.url, KEY_A) for g in two_gateways)
    first = one.responses.create(model=MODEL, input="Remember the word: tangerine.")
    assert two.responses.retrieve(first.id).output_text == first.output_text
    items = two.responses.input_items.list(first.id)
    assert [i.content[0].text for i in items.data] == ["Remember the word: tangerine."]
    second = two.responses.create(model=MODEL, input="Which word?", previous_response_id=first.id)
    sent = fake.last_body()["contents"]  # the whole conversation reached Google from the other replica
    assert [c["role"] for c in sent] == ["user", "model", "user"]
    assert sent[0]["parts"][0]["text"] == "Remember the word: tangerine."
    assert one.responses.retrieve(second.id).previous_response_id == first.id
    other_key = sdk(two_gateways[0].url, KEY_B)
    with pytest.raises(Exception) as refused:
        other_key.responses.retrieve(first.id)
    assert getattr(refused.value, "status_code", None) == 404
    one.responses.delete(first.id)
    for client in (one, two):
        with pytest.raises(Exception) as gone:
            client.responses.retrieve(first.id)
        assert getattr(gone.value, "status_code", None) == 404



def test_a_streamed_response_is_stored_before_its_completed_event(two_gateways, fake):
    """The row is committed before `response.completed` goes out: a client that reads that event and at once asks
    another replica for the response (or continues it) finds it."""
    one, two = (sdk(g.url, KEY_A) for g in two_gateways)
    for _ in range(3):
        with one.responses.stream(model=MODEL, input="Say something.") as stream:
            for event in stream:
                if event.type == "response.completed":
                    found = two.responses.retrieve(event.response.id)  # the stream is still open here
                    assert found.output_text == event.response.output_text
