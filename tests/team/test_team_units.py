"""Units of the team layer: model globs, durations, settings, the migrations, the key cache and the auth lookup."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.errors import AuthenticationFailed, ModelNotAllowed
from app.pipeline.auth import ClientAuth
from app.pipeline.context import ANONYMOUS, Principal
from app.settings import AuthSettings, ConfigError, Limits, load_settings, normalise_database_url
from app.team import db
from app.team.cache import KeyCache
from app.team.keys import parse_duration, parse_expiry, secret_digest
from app.team.store import KeyStore

# -- globs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "globs,model,allowed",
    [
        (None, "anything", True),
        (["*"], "anything", True),
        (["gemini-2.5-*"], "gemini-2.5-flash", True),
        (["gemini-2.5-*"], "gemini-2.0-flash", False),
        (["gemini-2.5-*"], "models/gemini-2.5-pro", True),  # Google's spelling of the same model
        (["gemini-2.5-*"], "google/gemini-2.5-pro", True),
        (["gpt-4o"], "gpt-4o", True),
        (["gpt-4o"], "gpt-4o-mini", False),  # a glob matches the whole name
        (["gpt-4o"], "GPT-4O", False),  # case-sensitive
        (["gemini-?.5-pro", "gpt-[45]o"], "gemini-3.5-pro", True),
        (["gemini-?.5-pro", "gpt-[45]o"], "gpt-5o", True),
        (["gemini-2.5-flash"], "gemini-2.5-flash\n", False),
        (["gemini-2.5-flash"], "x/gemini-2.5-flashy", False),
        ([], "gemini-2.5-flash", False),
    ],
)
def test_model_globs(globs, model, allowed):
    principal = Principal.of_key("key_1", "k", models=globs)
    assert principal.allows(model) is allowed
    if allowed:
        principal.check_model(model)
    else:
        with pytest.raises(ModelNotAllowed) as info:
            principal.check_model(model)
        assert info.value.status == 403 and info.value.code == "model_not_allowed" and f"`{model}`" in info.value.message


def test_anonymous_and_byok_may_use_every_model():
    assert ANONYMOUS.allows("whatever")
    assert Principal(google_key="g").allows("whatever")


# -- durations and expiry ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("3600s", 3600), ("45", 45),
                                          ("2w", 14 * 86400), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_expiry():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now) == datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_expiry("never") is None
    assert parse_expiry("2027-02-03T04:05:06Z") == datetime(2027, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert parse_expiry("2027-02-03") == datetime(2027, 2, 3, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_expiry("soon")


# -- settings -------------------------------------------------------------------------------------------------


def test_database_url_setting():
    assert load_settings(environ={}).storage.url() == "sqlite+aiosqlite:///gemini-proxy.db"
    env = {"GEMINI_PROXY_STORAGE__DATABASE_URL": "postgresql://gw:pw@db:5432/gw"}
    settings = load_settings(environ=env)
    assert settings.storage.url() == "postgresql+asyncpg://gw:pw@db:5432/gw"
    assert "pw" in settings.secrets()  # scrubbed from logs
    assert normalise_database_url("sqlite:////data/gemini-proxy.db") == "sqlite+aiosqlite:////data/gemini-proxy.db"
    assert normalise_database_url("postgresql+asyncpg://h/d") == "postgresql+asyncpg://h/d"


def test_client_key_settings():
    auth = AuthSettings(client_keys=["k1", {"name": "ci", "key": "k2", "team": "t", "models": ["a*"], "limits": {"rpm": 5}}])
    ids = [k.id for k in auth.config_keys()]
    assert ids == ["cfg-" + hashlib.sha256(b"k1").hexdigest()[:16], "cfg-ci"]
    with pytest.raises(ConfigError, match="unique"):
        load_settings(overrides={"auth": {"client_keys": [{"name": "a", "key": "1"}, {"name": "a", "key": "2"}]}}, environ={})
    with pytest.raises(ConfigError, match=r"auth.client_keys\[0\].limits.rpms"):
        load_settings(overrides={"auth": {"client_keys": [{"key": "1", "limits": {"rpms": 5}}]}}, environ={})
    with pytest.raises(ConfigError, match="keys_refresh_seconds"):
        load_settings(overrides={"storage": {"keys_refresh_seconds": 10}}, environ={})


def test_admin_key_env_is_added_and_scrubbed():
    settings = load_settings(overrides={"auth": {"admin_keys": ["file-admin"]}}, environ={"GEMINI_PROXY_ADMIN_KEY": "env-admin"})
    assert [k.get_secret_value() for k in settings.auth.admin_keys] == ["file-admin", "env-admin"]
    assert {"file-admin", "env-admin"} <= set(settings.secrets())


# -- the database -------------------------------------------------------------------------------------------------


def test_head_constant_is_the_newest_migration():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", db.MIGRATIONS)
    assert ScriptDirectory.from_config(config).get_heads() == [db.HEAD]


def test_migrations_make_a_wal_sqlite_file(tmp_path: Path):
    path = tmp_path / "gemini-proxy.db"

    async def run() -> None:
        engine = await db.open_database(f"sqlite+aiosqlite:///{path}")
        await engine.dispose()
        engine = await db.open_database(f"sqlite:///{path}".replace("sqlite://", "sqlite+aiosqlite://"))  # again: a no-op
        await engine.dispose()

    asyncio.run(run())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(db.HEAD,)]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"api_keys", "teams", "keys_state", "alembic_version"} <= tables
        assert conn.execute("SELECT version FROM keys_state").fetchall() == [(0,)]


def test_storage_errors_name_the_setting_without_the_password(tmp_path: Path):
    with pytest.raises(db.StorageError, match="does not exist"):
        asyncio.run(db.open_database(f"sqlite+aiosqlite:///{tmp_path}/no/such/dir.db"))
    with pytest.raises(db.StorageError, match="only SQLite and PostgreSQL") as info:
        asyncio.run(db.open_database("mysql+aiomysql://u:hunter2@h/d"))
    assert "hunter2" not in str(info.value)


# -- the key cache and the lookup ---------------------------------------------------------------------------------


def test_cache_follows_the_database(tmp_path: Path):
    async def run() -> None:
        engine = await db.open_database(f"sqlite+aiosqlite:///{tmp_path}/k.db")
        store = KeyStore(engine)
        auth = ClientAuth(AuthSettings())
        cache = KeyCache(store, auth, interval=60)  # no poll during the test: only explicit looks
        await cache.start()
        try:
            assert not auth.enabled and auth.authenticate("x") is ANONYMOUS
            record, secret = await store.create_key("a", models=["gemini-*"], limits=Limits(rpm=3))
            assert auth.authenticate("x") is ANONYMOUS  # not seen yet
            principal = await auth.resolve(secret)  # a gp- key makes it look at once
            assert principal.key_id == record.id and principal.limits.rpm == 3 and principal.models == ("gemini-*",)
            with pytest.raises(AuthenticationFailed):
                auth.authenticate("x")  # keys exist now: required
            # concurrent misses share looks
            versions_read = 0
            original = store.version

            async def counting() -> int:
                nonlocal versions_read
                versions_read += 1
                await asyncio.sleep(0.05)
                return await original()

            store.version = counting  # type: ignore[method-assign]
            results = await asyncio.gather(*(auth.resolve(f"gp-wrong-{i}") for i in range(50)), return_exceptions=True)
            assert all(isinstance(r, AuthenticationFailed) for r in results)
            assert versions_read <= 2
            store.version = original  # type: ignore[method-assign]
            # revoke: seen at the next look
            await store.revoke_key(record.id)
            assert auth.authenticate(secret).key_id == record.id
            await cache.refresh_now()
            with pytest.raises(AuthenticationFailed):
                auth.authenticate(secret)
            # expiry is checked on every request, whatever the cache holds
            record, secret = await store.create_key("b", expires_at=datetime.now(UTC) + timedelta(seconds=0.3))
            assert (await auth.resolve(secret)).name == "b"
            await asyncio.sleep(0.35)
            with pytest.raises(AuthenticationFailed, match="expired"):
                auth.authenticate(secret)
        finally:
            await cache.stop()
            await engine.dispose()

    asyncio.run(run())


def test_database_outage_keeps_the_keys_read_last(tmp_path: Path):
    async def run() -> None:
        engine = await db.open_database(f"sqlite+aiosqlite:///{tmp_path}/k.db")
        store = KeyStore(engine)
        auth = ClientAuth(AuthSettings())
        cache = KeyCache(store, auth, interval=60)
        record, secret = await store.create_key("a")
        await cache.start()
        try:

            async def broken() -> int:
                raise OSError("database down")

            store.version = broken  # type: ignore[method-assign]
            await cache.refresh_now()
            assert not cache.healthy
            assert auth.authenticate(secret).key_id == record.id
            with pytest.raises(AuthenticationFailed):
                await auth.resolve("gp-unknown")
        finally:
            await cache.stop()
            await engine.dispose()

    asyncio.run(run())


def test_lookup_uses_digests():
    auth = ClientAuth(AuthSettings(client_keys=[{"key_sha256": hashlib.sha256(b"s3cret").hexdigest(), "name": "n"}]))
    assert auth.authenticate("s3cret").name == "n"
    with pytest.raises(AuthenticationFailed):
        auth.authenticate(hashlib.sha256(b"s3cret").hexdigest())
    assert secret_digest("s3cret") == hashlib.sha256(b"s3cret").hexdigest()


# -- PostgreSQL ---------------------------------------------------------------------------------------------------


def test_postgres_migrations_race_and_store(postgres):
    url = postgres.new_database().replace("postgresql://", "postgresql+asyncpg://")

    async def run() -> None:
        # three processes' worth of engines migrating at once: the advisory lock serialises them
        engines = await asyncio.gather(*(db.open_database(url) for _ in range(3)))
        try:
            assert await db.current_revision(engines[0]) == db.HEAD
            store = KeyStore(engines[0])
            record, secret = await store.create_key("pg", team="t", models=["gemini-*"], limits=Limits(usd_per_month=1.25))
            other = KeyStore(engines[1])
            snapshot = await other.snapshot()
            assert [k.id for k in snapshot.keys] == [record.id] and snapshot.any_key and snapshot.version == 1
            assert snapshot.keys[0].limits.usd_per_month == 1.25 and snapshot.keys[0].models == ["gemini-*"]
            assert snapshot.keys[0].digest == secret_digest(secret)
            await other.revoke_key(record.id)
            assert await store.version() == 2 and (await store.snapshot()).keys == []
            # concurrent keys naming one new team: the team is made once
            await asyncio.gather(*(KeyStore(e).create_key(f"k{i}", team="new") for i, e in enumerate(engines)))
            assert [t.name for t in await store.list_teams()] == ["t", "new"]
        finally:
            for engine in engines:
                await engine.dispose()

    asyncio.run(run())


@pytest.mark.parametrize("url", ["redis//:hunter2@redis:6379/0", "http://:hunter2@redis:6379/0"])
def test_a_bad_redis_url_is_named_but_never_echoed(url):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"GEMINI_PROXY_STORAGE__REDIS_URL": url, "GEMINI_API_KEY": "x"})
    message = str(caught.value)
    assert "storage.redis_url" in message and "redis://" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:hunter2@redis:6379/0", "redis://***@redis:6379/0"),
    ("redis://user:hunter2@redis:6379/0?password=hunter2", "redis://***@redis:6379/0?password=***"),
    ("redis://redis:6379/0?db=1&password=hunter2&ssl=false", "redis://redis:6379/0?db=1&password=***&ssl=false"),
    ("redis://redis:6379/0?PASSWORD=hunter2", "redis://redis:6379/0?PASSWORD=***"),
    ("redis://redis:6379/0", "redis://redis:6379/0"),
])
def test_the_redis_url_in_logs_hides_its_password(url, shown):
    from app.gateway.shared import _shown

    assert _shown(url) == shown


def test_config_key_ids_follow_the_key_not_its_place():
    """Reordering auth.client_keys keeps each key's id (its usage history and budget counters)."""
    first = AuthSettings(client_keys=["k1", "k2", {"key": "k3", "team": "t"}]).config_keys()
    digest = hashlib.sha256(b"k2").hexdigest()
    moved = AuthSettings(client_keys=[{"key_sha256": digest}, {"key": "k3", "team": "t"}, "k1"]).config_keys()
    assert {k.digest(): k.id for k in first} == {k.digest(): k.id for k in moved}
    assert next(k.id for k in moved if k.key_sha256) == f"cfg-{digest[:16]}"


def test_a_long_name_gives_an_id_that_fits_the_records():
    name = "a-very-long-service-name-" * 4
    (key,) = AuthSettings(client_keys=[{"name": name, "key": "k9"}]).config_keys()
    assert key.id is not None and len(key.id) == 64
    assert key.id == f"cfg-{name[:43]}-{hashlib.sha256(b'k9').hexdigest()[:16]}"
    (short,) = AuthSettings(client_keys=[{"name": "ci", "key": "k9"}]).config_keys()
    assert short.id == "cfg-ci"


def test_database_health_is_down_while_any_watcher_last_saw_it_down():
    """The key cache and the usage writer both report the database: one's success never hides the other's failure."""
    from app.services import BackendHealth

    seen: list[bool] = []
    health = BackendHealth(seen.append)
    keys, usage = health.watcher("keys"), health.watcher("usage")
    keys(True)
    usage(False)  # the writer's INSERT failed
    keys(True)  # the next key refresh succeeds: still down
    assert seen == [True, False, False]
    usage(True)
    assert seen[-1] is True
    keys(False)
    assert seen[-1] is False
