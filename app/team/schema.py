"""The tables of the team gateway (SQLAlchemy Core); their history is in migrations/versions/.

* `teams`: a team's limits, by name;
* `api_keys`: keys made at run time: the SHA-256 digest of the secret (never the secret), name,
  team, allowed model globs (JSON; NULL = every model), limits, expiry, revocation;
* `keys_state`: one row whose `version` every change to keys or teams increments in the same
  transaction; replicas poll it (app/team/cache.py) and re-read the keys when it moved;
* `usage_records`: one row per request of a client key (app/team/usage_store.py), pruned after
  `storage.usage_retention_days`;
* `responses`: the Responses API's stored responses (app/team/responses_db.py), each one JSON document
  (`record`, as `StoredResponse.to_json` writes it) with its owner; pruned after `responses.store_days`;
* `usage_daily`: the records' sums per UTC day, key, team and served model, updated in the
  same transaction as the rows they sum; kept when the rows are pruned. Its grouping columns
  are NOT NULL ('' for none): PostgreSQL's ON CONFLICT never matches NULLs.

Money is integer micro-USD (`usd_per_month_micro`); times are UTC.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)

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


def _sum_columns() -> list[Column[int]]:
    return [
        Column("prompt_tokens", BigInteger, nullable=False),
        Column("completion_tokens", BigInteger, nullable=False),  # includes reasoning (OpenAI's usage)
        Column("reasoning_tokens", BigInteger, nullable=False),
        Column("cached_tokens", BigInteger, nullable=False),  # part of prompt
    ]


usage_records = Table(
    "usage_records",
    metadata,
    Column("id", String(32), primary_key=True),  # the record's own id: replays of a spool cannot count twice
    Column("created_at", DateTime(timezone=True), nullable=False),  # when the request arrived (UTC)
    Column("day", String(10), nullable=False),  # its UTC day, YYYY-MM-DD
    Column("request_id", String(128), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("key_name", String(256), nullable=True),
    Column("team", String(128), nullable=True),
    Column("endpoint", String(32), nullable=False),
    Column("model", String(256), nullable=True),  # as the client asked
    Column("upstream", String(128), nullable=True),
    Column("served_model", String(256), nullable=True),  # Gemini's modelVersion, else the routed Gemini model
    Column("status", Integer, nullable=False),
    Column("error_code", String(64), nullable=True),
    *_sum_columns(),
    Column("cost_micro_usd", BigInteger, nullable=True),  # NULL: a model without a price
    Column("latency_ms", Integer, nullable=False),
    Column("ttft_ms", Integer, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("client_disconnected", Boolean, nullable=False),
    Index("ix_usage_records_created_at", "created_at"),
    Index("ix_usage_records_key_created", "key_id", "created_at"),
    Index("ix_usage_records_team_created", "team", "created_at"),
)

usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("key_id", String(64), primary_key=True),
    Column("team", String(128), primary_key=True, server_default=""),
    Column("model", String(256), primary_key=True, server_default=""),  # served model, else the model asked
    Column("requests", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    *_sum_columns(),
    Column("cost_micro_usd", BigInteger, nullable=False),
)

responses = Table(
    "responses",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("owner", String(320), nullable=False),  # owner_of(principal): key:<id>, byok:<digest>, name:<name>, anonymous
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("record", LargeBinary, nullable=False),
    Index("ix_responses_created_at", "created_at"),
)
