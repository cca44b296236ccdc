"""`gemini-proxy keys ...` and `gemini-proxy teams ...`: keys and teams, straight in the database.

They read the same configuration as `serve` (`--config FILE`, `GEMINI_PROXY_CONFIG`,
`GEMINI_PROXY_STORAGE__DATABASE_URL`), so they reach the same database, and need
no running gateway. `--json` prints exactly what the admin API answers; otherwise a
table. Exit codes: 0 done, 1 refused (unknown id, bad value, database error),
2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.errors import GatewayError
from app.settings import ENV_PREFIX, ConfigError, Limits, load_settings
from app.team.db import StorageError, open_database
from app.team.keys import LIMIT_NAMES, KeyRecord, TeamRecord, parse_expiry
from app.team.store import KeyStore

CLEAR = "none"  # a limit flag's value that removes the limit (`keys update ID --rpm none`)


def _count(text: str) -> int | None:
    if text.strip().lower() in (CLEAR, "null"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r} (or `none` to remove the limit)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r} (or `none` to remove the limit)")
    return value


def _usd(text: str) -> float | None:
    if text.strip().lower() in (CLEAR, "null"):
        return None
    try:
        value = float(text.strip().lstrip("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r} (or `none` to remove the limit)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text!r} (or `none` to remove the limit)")
    return value


def _expires(text: str) -> Any:
    try:
        return parse_expiry(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _models(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def _add_limit_flags(p: argparse.ArgumentParser) -> None:
    unset = argparse.SUPPRESS  # a flag not given leaves the limit as it is
    p.add_argument("--rpm", type=_count, default=unset, help="requests per minute")
    p.add_argument("--tpm", type=_count, default=unset, help="tokens per minute")
    p.add_argument("--concurrency", type=_count, default=unset, help="requests at once")
    p.add_argument("--tokens-per-day", type=_count, default=unset, help="tokens per calendar day (UTC)")
    p.add_argument("--tokens-per-month", type=_count, default=unset, help="tokens per calendar month (UTC)")
    p.add_argument("--usd-per-month", type=_usd, default=unset, help="spend per calendar month (UTC), in USD")


def _common(p: argparse.ArgumentParser, json_flag: bool = True) -> None:
    p.add_argument("--config", help=f"YAML config file (default: ${ENV_PREFIX}CONFIG); names the database")
    if json_flag:
        p.add_argument("--json", action="store_true", help="print the admin API's JSON")


def _key_flags(p: argparse.ArgumentParser, create: bool) -> None:
    p.add_argument("--name", required=create, help="what the key is for (shown in logs and lists)")
    p.add_argument("--team", help="the team it belongs to (created when new)" + ("" if create else "; `none` to remove"))
    p.add_argument("--models", type=_models, help="comma-separated globs of the public model names it may use "
                                                  "(e.g. 'gemini-2.5-*,gpt-4o'); default: every model ('*')")
    p.add_argument("--expires", type=_expires, default=argparse.SUPPRESS,
                   help="when it stops working: a duration (30d, 12h), an RFC 3339 time, or `never`")
    _add_limit_flags(p)


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="client keys kept in the database (create, list, update, revoke, rotate)")
    ks = keys.add_subparsers(dest="keys_command", required=True)
    p = ks.add_parser("create", help="make a key; its secret is printed once")
    _key_flags(p, create=True)
    _common(p)
    p.set_defaults(func=_run(_keys_create))
    p = ks.add_parser("list", help="the keys in force (not revoked)")
    p.add_argument("--team", help="only this team's keys")
    _common(p)
    p.set_defaults(func=_run(_keys_list))
    p = ks.add_parser("get", help="one key")
    p.add_argument("id")
    _common(p)
    p.set_defaults(func=_run(_keys_get))
    p = ks.add_parser("update", help="change a key (only the flags given; `none` removes a limit)")
    p.add_argument("id")
    _key_flags(p, create=False)
    _common(p)
    p.set_defaults(func=_run(_keys_update))
    p = ks.add_parser("revoke", help="stop a key, on every replica within seconds")
    p.add_argument("id")
    _common(p, json_flag=False)
    p.set_defaults(func=_run(_keys_revoke))
    p = ks.add_parser("rotate", help="a new secret for a key; the old one stops working")
    p.add_argument("id")
    _common(p)
    p.set_defaults(func=_run(_keys_rotate))

    teams = sub.add_parser("teams", help="teams and their limits (create, list, update)")
    ts = teams.add_subparsers(dest="teams_command", required=True)
    for command, help_text in (("create", "make a team"), ("update", "change a team's limits (`none` removes one)")):
        p = ts.add_parser(command, help=help_text)
        p.add_argument("team", nargs="?", metavar="NAME")
        p.add_argument("--name", dest="team_flag", help="the team's name (or give it as NAME)")
        _add_limit_flags(p)
        _common(p)
        p.set_defaults(func=_run(_teams_create if command == "create" else _teams_update))
    p = ts.add_parser("list", help="the teams")
    _common(p)
    p.set_defaults(func=_run(_teams_list))
    p = ts.add_parser("get", help="one team")
    p.add_argument("team", metavar="NAME")
    _common(p)
    p.set_defaults(func=_run(_teams_get))

    from app.team.usage_cli import add_command

    add_command(sub)


# -- running a command ------------------------------------------------------------------------------------------


Command = Callable[[KeyStore, argparse.Namespace], Awaitable[Any]]


def _run(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            settings = load_settings(args.config)
        except ConfigError as exc:
            print(f"gemini-proxy: configuration error:\n{exc}", file=sys.stderr)
            return 2

        async def main() -> Any:
            engine = await open_database(settings.storage.url())
            try:
                return await command(KeyStore(engine), args)
            finally:
                await engine.dispose()

        try:
            asyncio.run(main())
        except StorageError as exc:
            print(f"gemini-proxy: {exc}", file=sys.stderr)
            return 1
        except GatewayError as exc:
            print(f"gemini-proxy: {exc.message}", file=sys.stderr)
            return 1
        return 0

    return run


def _limit_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The limits named on the command line (None: remove it); a flag not given is absent from `args`."""
    raw = vars(args)
    return {name: raw[name] for name in LIMIT_NAMES if name in raw}


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2))


# -- keys -------------------------------------------------------------------------------------------------------


async def _keys_create(store: KeyStore, args: argparse.Namespace) -> None:
    limits = Limits(**{k: v for k, v in _limit_changes(args).items() if v is not None})
    team = args.team if args.team and args.team.lower() != CLEAR else None
    record, secret = await store.create_key(args.name, team, args.models, limits, getattr(args, "expires", None))
    if args.json:
        _print(record.to_json(secret))
        return
    print(f"Created key {record.id} ({record.name}{', team ' + record.team if record.team else ''}).")
    print("Its secret, shown only now (clients send it as `Authorization: Bearer ...`):")
    print(f"  {secret}")


async def _keys_list(store: KeyStore, args: argparse.Namespace) -> None:
    records = await store.list_keys(args.team)
    if args.json:
        _print({"object": "list", "data": [r.to_json() for r in records]})
        return
    _table(
        ["ID", "NAME", "TEAM", "MODELS", "RPM", "TPM", "CONC", "TOK/DAY", "TOK/MONTH", "USD/MONTH", "EXPIRES", "CREATED"],
        [_key_row(r) for r in records],
    )


async def _keys_get(store: KeyStore, args: argparse.Namespace) -> None:
    _show_key(await store.get_key(args.id), args.json)


async def _keys_update(store: KeyStore, args: argparse.Namespace) -> None:
    changes: dict[str, Any] = {}
    if args.name is not None:
        changes["name"] = args.name
    if args.team is not None:
        changes["team"] = None if args.team.lower() == CLEAR else args.team
    if args.models is not None:
        changes["models"] = args.models
    if hasattr(args, "expires"):
        changes["expires_at"] = args.expires
    limits = _limit_changes(args)
    if limits:
        changes["limits"] = limits
    if not changes:
        print("gemini-proxy: nothing to change: give at least one flag (see --help)", file=sys.stderr)
        raise SystemExit(2)
    _show_key(await store.update_key(args.id, changes), args.json)


async def _keys_revoke(store: KeyStore, args: argparse.Namespace) -> None:
    await store.revoke_key(args.id)
    print(f"Revoked key {args.id}; it stops working on every replica within seconds.")


async def _keys_rotate(store: KeyStore, args: argparse.Namespace) -> None:
    record, secret = await store.rotate_key(args.id)
    if args.json:
        _print(record.to_json(secret))
        return
    print(f"Rotated key {record.id} ({record.name}); the old secret stops working within seconds.")
    print("The new secret, shown only now:")
    print(f"  {secret}")


def _show_key(record: KeyRecord, as_json: bool) -> None:
    if as_json:
        _print(record.to_json())
        return
    _table(
        ["ID", "NAME", "TEAM", "MODELS", "RPM", "TPM", "CONC", "TOK/DAY", "TOK/MONTH", "USD/MONTH", "EXPIRES", "CREATED"],
        [_key_row(record)],
    )


def _key_row(r: KeyRecord) -> list[str]:
    data = r.to_json()
    return [r.id, r.name, r.team or "-", ",".join(r.models), *_limit_cells(r.limits),
            data["expires_at"] or "never", data["created_at"]]


def _limit_cells(limits: Limits) -> list[str]:
    values = limits.model_dump()
    cells = ["-" if values[n] is None else str(values[n]) for n in LIMIT_NAMES[:-1]]
    usd = values["usd_per_month"]
    return [*cells, "-" if usd is None else f"{usd:g}"]


# -- teams ------------------------------------------------------------------------------------------------------


def _team_name(args: argparse.Namespace) -> str:
    name = args.team or args.team_flag
    if not name:
        print("gemini-proxy: give the team's name (NAME or --name)", file=sys.stderr)
        raise SystemExit(2)
    return str(name)


async def _teams_create(store: KeyStore, args: argparse.Namespace) -> None:
    limits = Limits(**{k: v for k, v in _limit_changes(args).items() if v is not None})
    _show_team(await store.create_team(_team_name(args), limits), args.json)


async def _teams_update(store: KeyStore, args: argparse.Namespace) -> None:
    name = _team_name(args)
    limits = _limit_changes(args)
    if not limits:
        print("gemini-proxy: nothing to change: give at least one limit flag (see --help)", file=sys.stderr)
        raise SystemExit(2)
    _show_team(await store.update_team(name, limits), args.json)


async def _teams_list(store: KeyStore, args: argparse.Namespace) -> None:
    records = await store.list_teams()
    if args.json:
        _print({"object": "list", "data": [r.to_json() for r in records]})
        return
    _table(["NAME", "RPM", "TPM", "CONC", "TOK/DAY", "TOK/MONTH", "USD/MONTH", "CREATED"], [_team_row(r) for r in records])


async def _teams_get(store: KeyStore, args: argparse.Namespace) -> None:
    _show_team(await store.get_team(args.team), args.json)


def _show_team(record: TeamRecord, as_json: bool) -> None:
    if as_json:
        _print(record.to_json())
        return
    _table(["NAME", "RPM", "TPM", "CONC", "TOK/DAY", "TOK/MONTH", "USD/MONTH", "CREATED"], [_team_row(record)])


def _team_row(r: TeamRecord) -> list[str]:
    return [r.name, *_limit_cells(r.limits), r.to_json()["created_at"]]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
