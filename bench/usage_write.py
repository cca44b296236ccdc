"""The CPU the gateway spends writing usage records: `UsageStore.write` of batches, per record (owns: write figures).

The usage writer runs off the request path but in the gateway's process, so
what it costs per record is CPU per request. This times `UsageStore.write` of
batches of fresh records (process CPU, every thread: aiosqlite's and the
worker threads included; not the PostgreSQL server's) and of one batch written
again (a spool replayed: every row already there), on a new database.

    .venv/bin/python bench/usage_write.py                        # SQLite file in a temporary directory
    .venv/bin/python bench/usage_write.py --batch 2000
    .venv/bin/python bench/usage_write.py --postgresql           # a throw-away PostgreSQL (tests/team/postgres.py)
    .venv/bin/python bench/usage_write.py --database-url postgresql://user@host/db

Run it from any checkout (it imports `app` from the working directory), so two
revisions compare with the same command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.getcwd())


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=500, help="records per write (storage.usage_batch_size)")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--database-url", help="a database to write into (default: a new SQLite file)")
    ap.add_argument("--postgresql", action="store_true", help="start a throw-away PostgreSQL server and write there")
    return ap.parse_args()


def records(first: int, n: int) -> list[tuple[Any, ...]]:
    """`n` records as the request path makes them (`record_of`: a tuple in `RECORD_FIELDS` order)."""
    now = time.time()
    return [
        (f"ubench{i:010x}", now, f"req-{i}", "cfg-bench-team", "bench-team", "team-a", "chat", "gemini-2.5-flash",
         "google", "gemini-2.5-flash", 200, None, 14, 59, 23, 0, 152, 41, None, 1, False, False)
        for i in range(first, first + n)
    ]


async def measure(url: str, batch: int, batches: int) -> tuple[list[float], float]:
    from app.settings import normalise_database_url
    from app.team import usage_store
    from app.team.db import open_database

    # a checkout whose `write` takes dicts (before records stayed tuples) gets dicts
    take: Any = (lambda r: r) if hasattr(usage_store, "from_dict") else usage_store.as_dict
    engine = await open_database(normalise_database_url(url))
    store = usage_store.UsageStore(engine)
    try:
        await store.write([take(r) for r in records(10**9, batch)])  # warm-up: statements prepared, caches filled
        figures = []
        for n in range(batches):
            fresh = records(n * batch, batch)
            start = time.process_time()
            await store.write([take(r) for r in fresh])
            figures.append((time.process_time() - start) * 1e6 / batch)
        start = time.process_time()
        await store.write([take(r) for r in records(0, batch)])
        replay = (time.process_time() - start) * 1e6 / batch
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
        await engine.dispose()
    return figures, replay


def main() -> None:
    args = parse_args()
    server = None
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='gp-usage-write-')}/gemini-proxy.db"
    if args.postgresql:
        sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
        from team.postgres import PostgresServer

        server = PostgresServer().start()
        url = server.new_database()
    try:
        figures, replay = asyncio.run(measure(url, args.batch, args.batches))
    finally:
        if server is not None:
            server.stop()
    backend = url.split(":", 1)[0].split("+", 1)[0]
    print(f"{os.getcwd()} {backend}: UsageStore.write CPU per record, batches of {args.batch}: min {min(figures):.1f} us, "
          f"median {statistics.median(figures):.1f} us ({args.batches} batches); a batch written again: {replay:.1f} us")


if __name__ == "__main__":
    main()
