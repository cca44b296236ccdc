"""The tables of the team gateway (SQLAlchemy Core); their history is in migrations/versions/.

* `teams`: a team's limits, by name;
* `api_keys`: keys made at run time: the SHA-256 digest of the secret (never the secret), name,
  team, allowed model globs (JSON; NULL = every model), limits, expiry, revocation;
* `keys_state`: one row whose `version` every change to keys or teams increments in the same
  transaction; replicas poll it (app/team/cache.py) and re-read the keys when it moved.

Money is integer micro-USD (`usd_per_month_micro`); times are UTC.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table

metadata = MetaData()


def _limit_columns() -> list[Column[int]]:
    return [
        Column("rpm", BigInteger, nullable=True),
        Column("tpm", BigInteger, nullable=True),
        Column("concurrency", BigInteger, nullable=True),
        Column("tokens_per_day", BigInteger, nullable=True),
        Column("tokens_per_month", BigInteger, nullable=True),
        Column("usd_per_month_micro", BigInteger, nullable=True),
    ]


teams = Table(
    "teams",
    metadata,
    Column("name", String(128), primary_key=True),
    *_limit_columns(),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("team", String(128), nullable=True),
    Column("models", JSON, nullable=True),
    Column("secret_sha256", String(64), nullable=False),
    *_limit_columns(),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("ix_api_keys_secret_sha256", "secret_sha256", unique=True),
    Index("ix_api_keys_team", "team"),
)

keys_state = Table(
    "keys_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
