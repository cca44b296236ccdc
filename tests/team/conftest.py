"""Fixtures of the team gateway's tests (tests/team/).

* `database_url`: a fresh SQLite file in the test's tmp_path;
* `team_gateway`: the real gateway (in-process, real HTTP) on that database, with an admin key,
  in front of the session's fake Gemini; the CLI (`team_support.cli`) reaches the same file;
* `admin`: an httpx client of its admin API, with the admin key;
* `postgres` (session): a throw-away PostgreSQL cluster (tests/team/postgres.py), installed from
  Debian's packages when missing; `backend_url` gives a test a fresh SQLite file or PostgreSQL database.
  Without PostgreSQL (and no way to install it) those tests are skipped, except under CI, where they fail.
* `redis_server` (session): a throw-away Redis (tests/team/redis_server.py), installed from Debian's packages
  when missing; `redis` empties it for each test. Skipped without it, except under CI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_harness import FakeGemini, GatewayServer

from .postgres import PostgresServer, PostgresUnavailable
from .redis_server import RedisServer, RedisUnavailable
from .team_support import ADMIN_KEY


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/gemini-proxy.db"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
        server.start()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer().start()
    except RedisUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    if redis_server.proc is None:  # a test killed it
        redis_server.start()
    assert redis_server.command("FLUSHALL").startswith(b"+OK")
    return redis_server


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, database_url: str) -> str:
    if request.param == "sqlite":
        return database_url
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def team_gateway(make_gateway: Callable[..., GatewayServer], database_url: str, fake: FakeGemini) -> GatewayServer:
    return make_gateway(storage={"database_url": database_url}, auth={"admin_keys": [ADMIN_KEY]})


@pytest.fixture
def admin(team_gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=team_gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as client:
        yield client


def limits(**values: Any) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(("rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month", "usd_per_month"))
    out.update(values)
    return out
