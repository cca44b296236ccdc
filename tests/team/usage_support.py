"""Helpers of the usage tests: waiting for records to reach the database, reading them from the SQLite file."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx

SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")


def usage(admin: httpx.Client, by: str = "key", **params: str) -> dict[str, Any]:
    response = admin.get("/admin/usage", params={"by": by, **params})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def wait_for_requests(admin: httpx.Client, count: int, bound: float = 10.0) -> dict[str, Any]:
    """/admin/usage by key once it counts `count` requests in all (fails after `bound` seconds)."""
    deadline = time.monotonic() + bound
    while True:
        data = usage(admin)
        total = sum(r["requests"] for r in data["rows"])
        if total >= count:
            assert total == count, data
            return data
        assert time.monotonic() < deadline, f"{total} of {count} records after {bound} s: {data}"
        time.sleep(0.1)


def by_group(data: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {row["group"]: row for row in data["rows"]}


def records(database_url: str) -> list[dict[str, Any]]:
    """Every row of usage_records in an SQLite database file."""
    path = database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM usage_records ORDER BY created_at")]
