"""Reading and changing keys and teams in the database; the CLI and the admin API both call this.

Every change bumps `keys_state.version` in the same transaction, which is how
the replicas' caches (app/team/cache.py) notice it. Revoking is soft: the row
stays (its id names the key in past records), no longer listed or accepted.
A key's team is created (without limits) when a key first names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.errors import GatewayError, InvalidRequest, NotFound
from app.settings import Limits
from app.team.keys import (
    KeyRecord,
    TeamRecord,
    as_utc,
    micro_to_usd,
    new_key_id,
    new_secret,
    secret_digest,
    usd_to_micro,
    utcnow,
)
from app.team.schema import api_keys, keys_state, teams

ALL_MODELS = ["*"]


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


def _limit_values(limits: Limits) -> dict[str, Any]:
    return {
        "rpm": limits.rpm, "tpm": limits.tpm, "concurrency": limits.concurrency,
        "tokens_per_day": limits.tokens_per_day, "tokens_per_month": limits.tokens_per_month,
        "usd_per_month_micro": usd_to_micro(limits.usd_per_month),
    }


def _limits(row: RowMapping) -> Limits:
    return Limits(
        rpm=row["rpm"], tpm=row["tpm"], concurrency=row["concurrency"], tokens_per_day=row["tokens_per_day"],
        tokens_per_month=row["tokens_per_month"], usd_per_month=micro_to_usd(row["usd_per_month_micro"]),
    )


def key_record(row: RowMapping) -> KeyRecord:
    created = as_utc(row["created_at"])
    assert created is not None
    models = row["models"]
    return KeyRecord(
        id=row["id"], name=row["name"], team=row["team"], models=list(models) if models is not None else list(ALL_MODELS),
        limits=_limits(row), expires_at=as_utc(row["expires_at"]), created_at=created, digest=row["secret_sha256"],
    )


def team_record(row: RowMapping) -> TeamRecord:
    created = as_utc(row["created_at"])
    assert created is not None
    return TeamRecord(name=row["name"], limits=_limits(row), created_at=created)


def _models_value(models: Iterable[str] | None) -> list[str] | None:
    """What is stored: None for every model."""
    if models is None:
        return None
    globs = [m.strip() for m in models if m.strip()]
    if not globs:
        raise InvalidRequest("`models` is empty: give at least one model name or glob (`*` for every model).", param="models")
    return None if "*" in globs else globs


def _check_name(name: str, what: str) -> str:
    name = name.strip()
    if not name or len(name) > (128 if what == "team" else 256):
        raise InvalidRequest(f"The {what} name must be 1 to {128 if what == 'team' else 256} characters.", param="name")
    return name


def key_not_found(key_id: str) -> NotFound:
    return NotFound(f"No key with id `{key_id}`.", code="key_not_found", param="id")


def team_not_found(name: str) -> NotFound:
    return NotFound(f"No team named `{name}`.", code="team_not_found", param="name")


@dataclass(slots=True)
class Snapshot:
    """Everything the request path needs: the live keys, the teams' limits, and whether any key was ever made."""

    version: int
    keys: list[KeyRecord]
    teams: dict[str, Limits]
    any_key: bool


class KeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- the request path's view ------------------------------------------------------------------------

    async def version(self) -> int:
        async with self.engine.connect() as conn:
            value = (await conn.execute(select(keys_state.c.version).where(keys_state.c.id == 1))).scalar()
        return int(value or 0)

    async def snapshot(self) -> Snapshot:
        async with self.engine.connect() as conn:
            version = (await conn.execute(select(keys_state.c.version).where(keys_state.c.id == 1))).scalar()
            rows = (await conn.execute(select(api_keys).where(api_keys.c.revoked_at.is_(None)))).mappings().all()
            team_rows = (await conn.execute(select(teams))).mappings().all()
            any_key = bool(rows) or (await conn.execute(select(func.count()).select_from(api_keys))).scalar_one() > 0
        return Snapshot(int(version or 0), [key_record(r) for r in rows],
                        {r["name"]: _limits(r) for r in team_rows}, any_key)

    # -- keys ------------------------------------------------------------------------------------------------

    async def create_key(
        self, name: str, team: str | None = None, models: Iterable[str] | None = None,
        limits: Limits | None = None, expires_at: datetime | None = None,
    ) -> tuple[KeyRecord, str]:
        """A new key and its secret (the only time the secret exists outside the caller)."""
        secret = new_secret()
        now = utcnow()
        if expires_at is not None and expires_at <= now:  # (an update may expire a key at once: not a new one)
            raise InvalidRequest("`expires_at` is in the past: the key would never work.", param="expires_at")
        values = {
            "id": new_key_id(), "name": _check_name(name, "key"), "team": team.strip() if team else None,
            "models": _models_value(models), "secret_sha256": secret_digest(secret),
            **_limit_values(limits or Limits()), "expires_at": expires_at, "created_at": now, "updated_at": now,
            "revoked_at": None,
        }
        async with self.engine.begin() as conn:
            if values["team"]:
                await self._ensure_team(conn, values["team"], now)
            await conn.execute(insert(api_keys).values(**values))
            await self._bump(conn, now)
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == values["id"]))).mappings().one()
        return key_record(row), secret

    async def list_keys(self, team: str | None = None) -> list[KeyRecord]:
        query = select(api_keys).where(api_keys.c.revoked_at.is_(None)).order_by(api_keys.c.created_at, api_keys.c.id)
        if team is not None:
            query = query.where(api_keys.c.team == team)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [key_record(r) for r in rows]

    async def get_key(self, key_id: str) -> KeyRecord:
        async with self.engine.connect() as conn:
            row = await self._live_key(conn, key_id)
        return key_record(row)

    async def update_key(self, key_id: str, changes: Mapping[str, Any]) -> KeyRecord:
        """Change some of `name`, `team`, `models`, `limits` (a dict: only the limits named), `expires_at`."""
        now = utcnow()
        async with self.engine.begin() as conn:
            await self._live_key(conn, key_id)
            values: dict[str, Any] = {"updated_at": now}
            if "name" in changes:
                values["name"] = _check_name(changes["name"] or "", "key")
            if "team" in changes:
                team = (changes["team"] or "").strip() or None
                if team:
                    await self._ensure_team(conn, team, now)
                values["team"] = team
            if "models" in changes:
                values["models"] = _models_value(changes["models"])
            if "expires_at" in changes:
                values["expires_at"] = changes["expires_at"]
            values.update(_limit_changes(changes.get("limits") or {}))
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(**values))
            await self._bump(conn, now)
            row = await self._live_key(conn, key_id)
        return key_record(row)

    async def revoke_key(self, key_id: str) -> None:
        """Revoke (idempotent); 404 only for an id that never existed."""
        now = utcnow()
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(api_keys.c.revoked_at).where(api_keys.c.id == key_id))).first()
            if row is None:
                raise key_not_found(key_id)
            if row[0] is None:
                await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now, updated_at=now))
                await self._bump(conn, now)

    async def rotate_key(self, key_id: str) -> tuple[KeyRecord, str]:
        """A new secret for the key; the old one stops working."""
        secret = new_secret()
        now = utcnow()
        async with self.engine.begin() as conn:
            await self._live_key(conn, key_id)
            await conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(secret_sha256=secret_digest(secret), updated_at=now)
            )
            await self._bump(conn, now)
            row = await self._live_key(conn, key_id)
        return key_record(row), secret

    # -- teams -----------------------------------------------------------------------------------------------

    async def create_team(self, name: str, limits: Limits | None = None) -> TeamRecord:
        name = _check_name(name, "team")
        now = utcnow()
        try:
            async with self.engine.begin() as conn:
                exists = (await conn.execute(select(teams.c.name).where(teams.c.name == name))).first()
                if exists is not None:
                    raise Conflict(f"A team named `{name}` exists already.", param="name")
                await conn.execute(
                    insert(teams).values(name=name, **_limit_values(limits or Limits()), created_at=now, updated_at=now)
                )
                await self._bump(conn, now)
        except IntegrityError:
            raise Conflict(f"A team named `{name}` exists already.", param="name") from None
        return await self.get_team(name)

    async def list_teams(self) -> list[TeamRecord]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(teams).order_by(teams.c.created_at, teams.c.name))).mappings().all()
        return [team_record(r) for r in rows]

    async def get_team(self, name: str) -> TeamRecord:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(teams).where(teams.c.name == name))).mappings().first()
        if row is None:
            raise team_not_found(name)
        return team_record(row)

    async def update_team(self, name: str, limits: Mapping[str, Any]) -> TeamRecord:
        now = utcnow()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(teams).where(teams.c.name == name).values(updated_at=now, **_limit_changes(limits))
            )
            if result.rowcount == 0:
                raise team_not_found(name)
            await self._bump(conn, now)
        return await self.get_team(name)

    # -- helpers ---------------------------------------------------------------------------------------------

    @staticmethod
    async def _live_key(conn: AsyncConnection, key_id: str) -> RowMapping:
        row = (
            await conn.execute(select(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)))
        ).mappings().first()
        if row is None:
            raise key_not_found(key_id)
        return row

    @staticmethod
    async def _ensure_team(conn: AsyncConnection, name: str, now: datetime) -> None:
        _check_name(name, "team")
        dialect_insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
        statement = dialect_insert(teams).values(name=name, **_limit_values(Limits()), created_at=now, updated_at=now)
        await conn.execute(statement.on_conflict_do_nothing(index_elements=["name"]))

    @staticmethod
    async def _bump(conn: AsyncConnection, now: datetime) -> None:
        bump = update(keys_state).where(keys_state.c.id == 1).values(version=keys_state.c.version + 1, updated_at=now)
        await conn.execute(bump)


def _limit_changes(limits: Mapping[str, Any]) -> dict[str, Any]:
    """The columns for the limits named in `limits` (None clears one)."""
    out: dict[str, Any] = {}
    for name, value in limits.items():
        if name == "usd_per_month":
            out["usd_per_month_micro"] = usd_to_micro(value)
        elif name in ("rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month"):
            out[name] = value
        else:
            raise InvalidRequest(f"Unknown limit `{name}`.", param=f"limits.{name}")
    return out
