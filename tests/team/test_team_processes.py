"""Gateway processes as operators run them (`python -m app serve`), sharing one database (an SQLite file, or
PostgreSQL) with the CLI:
keys made by the CLI are honoured by both, a revocation reaches both within 5 s, `--workers 2` works
on the same file, no secret reaches their output, and a database that cannot be opened stops the start
with a message (exit 2, no traceback).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_gateway import free_port

from gateway_harness import FakeGemini

from .team_support import (
    ADMIN_KEY,
    REVOCATION_BOUND,
    ROOT,
    GatewayProcess,
    chat,
    clean_env,
    cli,
    cli_json,
    wait_until,
)

CONFIG_KEY = "sk-config-secret-for-processes"


@pytest.fixture
def start_gateway(tmp_path: Path, fake_gemini: FakeGemini) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(database_url: str, *args: str) -> GatewayProcess:
        env = clean_env(
            GEMINI_API_KEY="test-key", GEMINI_BASE_URL=fake_gemini.url, GEMINI_PROXY_STORAGE__DATABASE_URL=database_url,
            GEMINI_PROXY_ADMIN_KEY=ADMIN_KEY, GEMINI_PROXY_AUTH__CLIENT_KEYS=f'[{{"name": "cfg", "key": "{CONFIG_KEY}"}}]',
        )
        process = GatewayProcess(env, tmp_path / f"gateway-{len(started)}.log", *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def test_two_gateways_share_keys_made_by_the_cli(start_gateway, backend_url, fake):
    """On SQLite and on PostgreSQL: the CLI's keys work on both gateways; revoked and rotated ones stop on both within 5 s."""
    database_url = backend_url
    one, two = start_gateway(database_url), start_gateway(database_url)
    created = cli_json(database_url, "keys", "create", "--name", "shared", "--models", "gemini-2.5-*")
    other = cli_json(database_url, "keys", "create", "--name", "other")
    for gateway in (one, two):
        assert chat(gateway.url, created["key"]).status_code == 200
        assert chat(gateway.url, created["key"], model="gemini-3-pro-preview").status_code == 403
        assert chat(gateway.url, CONFIG_KEY).status_code == 200
    cli(database_url, "keys", "revoke", created["id"])
    for gateway in (one, two):
        wait_until(lambda g=gateway: chat(g.url, created["key"]).status_code == 401, REVOCATION_BOUND)
        assert chat(gateway.url, other["key"]).status_code == 200
    rotated = cli_json(database_url, "keys", "rotate", other["id"])
    for gateway in (one, two):
        assert chat(gateway.url, rotated["key"]).status_code == 200
        wait_until(lambda g=gateway: chat(g.url, other["key"]).status_code == 401, REVOCATION_BOUND)
    output = one.output() + two.output()
    for secret in (created["key"], other["key"], rotated["key"], CONFIG_KEY, ADMIN_KEY):
        assert secret not in output
    assert "shared" in output  # the access log names the key


def test_workers_share_the_database(start_gateway, database_url, fake):
    gateway = start_gateway(database_url, "--workers", "2")
    created = cli_json(database_url, "keys", "create", "--name", "w")
    for _ in range(6):  # requests land on both workers
        assert chat(gateway.url, created["key"]).status_code == 200
    cli(database_url, "keys", "revoke", created["id"])
    wait_until(lambda: all(chat(gateway.url, created["key"]).status_code == 401 for _ in range(4)), REVOCATION_BOUND)


def test_database_that_cannot_be_opened_stops_the_start(tmp_path: Path):
    env = clean_env(GEMINI_PROXY_STORAGE__DATABASE_URL=f"sqlite:///{tmp_path}/absent/dir/x.db")
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", str(free_port())], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "storage.database_url" in result.stderr and "absent" in result.stderr and "Traceback" not in result.stderr


def test_default_database_is_in_the_working_directory(tmp_path: Path, fake_gemini: FakeGemini):
    env = clean_env(GEMINI_API_KEY="test-key", GEMINI_BASE_URL=fake_gemini.url)
    gateway = GatewayProcess(env, tmp_path / "default.log")
    try:
        assert "gemini-proxy.db" in gateway.output()
        assert (tmp_path / "gemini-proxy.db").exists()
        created = cli_json(f"sqlite:///{tmp_path}/gemini-proxy.db", "keys", "create", "--name", "here")
        assert chat(gateway.url, created["key"]).status_code == 200
    finally:
        gateway.stop()
