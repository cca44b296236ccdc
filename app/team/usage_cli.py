"""`gemini-proxy usage`: usage totals straight from the database (docs/team.md#usage-and-prices).

`gemini-proxy usage [--by key|team|model|day] [--since 7d] [--until TIME] [--json]`
reads the same configuration as `serve` (so the same database) and needs no
running gateway. `--json` prints exactly what `GET /admin/usage` answers;
otherwise a table. Exit codes: 0 done, 1 database error, 2 bad usage
(a bad `--since`, named) or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from app.errors import InvalidRequest
from app.settings import ENV_PREFIX, ConfigError, load_settings
from app.team.db import StorageError, open_database
from app.team.usage_store import GROUPS, UsageQuery, UsageStore

HEADER = ("REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "REASONING", "CACHED", "COST_USD")


def add_command(sub: Any) -> None:
    p = sub.add_parser("usage", help="usage totals by key, team, model or day (from the database)")
    p.add_argument("--by", default="key", help=f"group by: {', '.join(GROUPS)} (default key: the key's id)")
    p.add_argument("--since", default="7d", help="ISO-8601 time or date (UTC), or a span back from now: 7d, 24h (default 7d)")
    p.add_argument("--until", default=None, help="ISO-8601 time or date (UTC), or a span back from now (default: now)")
    p.add_argument("--json", action="store_true", help="print the JSON of GET /admin/usage")
    p.add_argument("--config", help=f"YAML config file (default: ${ENV_PREFIX}CONFIG); names the database")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"gemini-proxy: configuration error:\n{exc}", file=sys.stderr)
        return 2
    try:
        query = UsageQuery.parse(args.by, args.since, args.until)
    except InvalidRequest as exc:
        print(f"gemini-proxy: --{exc.param}: {exc.message}", file=sys.stderr)
        return 2

    async def main() -> list[dict[str, Any]]:
        engine = await open_database(settings.storage.url())
        try:
            return await UsageStore(engine).report(query.by, query.since, query.until)
        finally:
            await engine.dispose()

    try:
        rows = asyncio.run(main())
    except StorageError as exc:
        print(f"gemini-proxy: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the database failed while reading
        print(f"gemini-proxy: cannot read usage from the database: {type(exc).__name__}", file=sys.stderr)
        return 1
    data = query.to_json(rows)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"Usage by {query.by}, {data['since']} to {data['until']}")
    table([query.by.upper(), *HEADER], [_cells(r) for r in rows] + ([_total(rows)] if len(rows) > 1 else []))
    return 0


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        "-" if row["group"] is None else str(row["group"]), str(row["requests"]), str(row["errors"]),
        str(row["prompt_tokens"]), str(row["completion_tokens"]), str(row["reasoning_tokens"]),
        str(row["cached_tokens"]), f"{row['cost_usd']:.6f}",
    ]


def _total(rows: list[dict[str, Any]]) -> list[str]:
    names = ("requests", "errors", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
    micro = sum(round(r["cost_usd"] * 1_000_000) for r in rows)
    return ["TOTAL", *(str(sum(r[n] for r in rows)) for n in names), f"{micro / 1_000_000:.6f}"]


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))]
        print("  ".join(cells).rstrip())
