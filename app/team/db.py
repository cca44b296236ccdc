"""The database: an async SQLAlchemy engine, and the Alembic migrations run at start.

`storage.database_url` names it: an SQLite file (default `gemini-proxy.db` in
the working directory; WAL journal, so several processes on one host can share
it) or PostgreSQL (asyncpg). Migrations run whenever the gateway or the CLI
opens the database, serialised between processes: a PostgreSQL advisory lock,
or a lock file beside the SQLite file. The URL is shown without its password.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger("gemini_proxy.storage")

MIGRATIONS = "app.team:migrations"
HEAD = "0003"  # the newest revision in migrations/versions (a test checks it): at HEAD, Alembic is not even imported
_ADVISORY_LOCK = 0x67656D70  # "gemp": one number the gateway's replicas agree on


class StorageError(Exception):
    """The database cannot be opened or migrated; the message is fit for the operator (no password)."""


def shown(url: str) -> str:
    """The URL without its password, for logs and messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparseable database URL)"


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None for PostgreSQL or an in-memory database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_engine(url: str) -> AsyncEngine:
    try:
        parsed = make_url(url)
    except Exception:
        raise StorageError("storage.database_url: not a database URL (e.g. sqlite:///gemini-proxy.db)") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StorageError(f"storage.database_url: {shown(url)}: only SQLite and PostgreSQL are supported")
    try:
        if backend == "sqlite":
            bind_none_directly()
            engine = create_async_engine(url, connect_args={"timeout": 30})
            event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        else:
            engine = create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"storage.database_url: {shown(url)}: {exc}") from None
    return engine


def sqlite_twin(engine: AsyncEngine) -> Engine | None:
    """A synchronous engine (stdlib sqlite3) on the SQLite file of `engine`, with its settings: for work done wholly
    in a worker thread (one trip there and back, where aiosqlite makes one per driver call). None: not a file."""
    if engine.dialect.name != "sqlite" or sqlite_path(engine.url.render_as_string(hide_password=False)) is None:
        return None
    bind_none_directly()
    twin = sqlalchemy.create_engine(engine.url.set(drivername="sqlite"), connect_args={"timeout": 30})
    event.listen(twin, "connect", sqlite_pragmas)
    return twin


def bind_none_directly() -> None:
    """Let the sqlite3 module bind None (NULL) from its adapter table. Without an adapter for NoneType, every None
    parameter goes through its whole adapter search, an AttributeError formatted and dropped included (~2,000
    instructions, 0.5 us; a usage record has 2-4 of them). The adapter returns None, bound as NULL as before. The
    table is the module's (every sqlite3 connection of the process, aiosqlite's too): set when an SQLite engine is
    made, never by import; setting it again changes nothing."""
    sqlite3.register_adapter(type(None), _NONE.get)


_NONE: dict[Any, Any] = {}  # `_NONE.get(None)` is None: the cheapest callable that returns its argument when it is None


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer; kept in the file
    cursor.execute("PRAGMA synchronous=NORMAL")  # consistent in WAL; the last commits may go on power loss
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".migrate-lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's Alembic revision (None: not migrated yet, or unreadable)."""
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    except SQLAlchemyError:
        return None


async def migrate(engine: AsyncEngine) -> None:
    """Bring the database to the newest schema (idempotent; one process at a time)."""
    url = engine.url.render_as_string(hide_password=False)
    path = sqlite_path(url)
    if path is not None and not path.parent.exists():
        raise StorageError(f"storage.database_url: {shown(url)}: the directory {path.parent} does not exist")
    if await current_revision(engine) == HEAD:
        return
    try:
        if path is not None:
            with _file_lock(path):
                async with engine.begin() as conn:
                    await conn.run_sync(_upgrade)
        else:
            async with engine.connect() as conn:
                if engine.dialect.name == "postgresql":
                    await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _ADVISORY_LOCK})
                    await conn.commit()
                try:
                    await conn.run_sync(_upgrade)
                    await conn.commit()
                finally:
                    if engine.dialect.name == "postgresql":
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_LOCK})
                        await conn.commit()
    except StorageError:
        raise
    except (SQLAlchemyError, OSError) as exc:
        raise StorageError(f"storage.database_url: {shown(url)}: cannot open or migrate the database: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    return f"{type(original).__name__}: {original}"[:300]


async def open_database(url: str) -> AsyncEngine:
    """An engine on a migrated database; `StorageError` when that fails."""
    engine = create_engine(url)
    try:
        await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine
