"""Fixtures of the team gateway's tests (tests/team/).

* `database_url`: a fresh SQLite file in the test's tmp_path;
* `team_gateway`: the real gateway (in-process, real HTTP) on that database, with an admin key,
  in front of the session's fake Gemini; the CLI (`team_support.cli`) reaches the same file;
* `admin`: an httpx client of its admin API, with the admin key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_harness import FakeGemini, GatewayServer

from .team_support import ADMIN_KEY


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/gemini-proxy.db"


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
