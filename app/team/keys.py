"""Key secrets, ids and durations, and the JSON shapes of keys and teams.

A secret is `gp-` followed by 43 characters of URL-safe base64 (32 random
bytes), so secret scanners can spot it; only its SHA-256 digest is stored.
Key ids (`key_` + 16 hex digits) name a key everywhere else: logs, usage, the
CLI and the admin API. Money is kept as integer micro-USD and shown in USD.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from app.pipeline.auth import SECRET_PREFIX
from app.settings import Limits

LIMIT_NAMES = ("rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month", "usd_per_month")
MICRO = 1_000_000


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w|mo)?\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "mo": 30 * 86400}


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `3600s`, `2w` (a bare number is seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (examples: 30d, 12h, 90m, 3600s)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()])


def parse_expiry(text: str, now: datetime | None = None) -> datetime | None:
    """`--expires`: a duration from now (`30d`), an RFC 3339 time or date, or `never`."""
    if text.strip().lower() in ("never", "none", ""):
        return None
    try:
        return (now or utcnow()) + parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a duration or a time: {text!r} (examples: 30d, 12h, 2027-01-31T00:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """A time read back from the database (SQLite drops the zone; every stored time is UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def usd_to_micro(usd: float | None) -> int | None:
    return None if usd is None else round(usd * MICRO)


def micro_to_usd(micro: int | None) -> float | None:
    return None if micro is None else micro / MICRO


@dataclass(slots=True)
class KeyRecord:
    """A key of the database, as the CLI and the admin API show it (never its secret)."""

    id: str
    name: str
    team: str | None
    models: list[str]
    limits: Limits
    expires_at: datetime | None
    created_at: datetime
    digest: str = field(repr=False, default="")

    def to_json(self, secret: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if secret is not None:
            out["key"] = secret
        out.update(
            name=self.name, team=self.team, models=list(self.models), limits=self.limits.model_dump(),
            expires_at=rfc3339(self.expires_at), created_at=rfc3339(self.created_at),
        )
        return out


@dataclass(slots=True)
class TeamRecord:
    name: str
    limits: Limits
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "limits": self.limits.model_dump(), "created_at": rfc3339(self.created_at)}
