"""The admin API: keys and teams, guarded by `auth.admin_keys` (and `GEMINI_PROXY_ADMIN_KEY`).

* `POST /admin/keys` -> 201 with the secret (`key`), the only time it is shown;
  `GET /admin/keys`, `GET|PATCH|DELETE /admin/keys/{id}`, `POST /admin/keys/{id}/rotate`
  (a new secret; the old one stops working);
* `POST|GET /admin/teams`, `GET|PATCH /admin/teams/{name}`;
* `GET /admin/usage?by=key|team|model|day&since=7d&until=...`: usage totals (docs/team.md#usage-and-prices).

Bodies are validated by the pydantic models below (they are in the OpenAPI
document), unknown fields refused. `PATCH` is a merge: a field left out is
unchanged, `null` clears it (a limit, the expiry, the team; `models: null` =
every model). `DELETE` revokes (idempotent, 204); a revoked key is no longer
listed. Times are RFC 3339 in UTC. The admin key is checked before anything
else, in constant time; without any admin key configured every admin route
answers 401. A database failure is a 503 (`storage_unavailable`). Changes reach this process's key cache at once and the other
replicas' within `storage.keys_refresh_seconds`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.responses import Response

from app.api import json_response
from app.errors import AuthenticationFailed, GatewayError, InvalidRequest
from app.pipeline.auth import bearer_token
from app.pipeline.context import Principal
from app.pipeline.seam import CTX_KEY, error_body
from app.services import Services
from app.settings import MAX_COUNT, MAX_USD, Limits
from app.team.usage_store import UsageQuery

ADMIN = Principal(key_id="admin", name="admin")
log = logging.getLogger("gemini_proxy.admin")


class StorageUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "storage_unavailable"


async def storage_error(request: Request, exc: Exception) -> Response:
    """A database failure under an admin route: 503 (the log has the details, without secrets)."""
    log.warning("the database failed under %s %s: %s", request.method, request.url.path, type(exc).__name__)
    error = StorageUnavailable("The key database cannot be reached right now; please retry.", headers={"retry-after": "5"})
    ctx = request.scope.get(CTX_KEY)
    if ctx is not None:
        ctx.error_code, ctx.error_type = error.code, error.type
        return Response(error_body(error, ctx.request_id), 503, error.headers, media_type="application/json")
    return json_response(error.body(), 503, error.headers)


async def require_admin(request: Request) -> None:
    """401 unless the request carries one of the admin keys (every admin key is compared, in constant time)."""
    state: Services = request.app.state.gateway
    headers = request.headers
    token = bearer_token(headers.get("authorization"), headers.get("api-key") or headers.get("x-api-key"))
    digests = state.admin_digests
    if not digests:
        raise AuthenticationFailed(
            "The admin API is off: no admin key is configured (auth.admin_keys or GEMINI_PROXY_ADMIN_KEY)."
        )
    if token is None:
        raise AuthenticationFailed("This route needs an admin key: Authorization: Bearer ADMIN_KEY.")
    digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
    found = False
    for reference in digests:
        found |= hmac.compare_digest(digest, reference)
    if not found:
        raise AuthenticationFailed("Incorrect admin key provided.")
    ctx = request.scope.get(CTX_KEY)
    if ctx is not None:
        ctx.principal = ADMIN


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


# -- models ---------------------------------------------------------------------------------------------------


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsPatch(_Input):
    """Limits to change: a limit left out is unchanged, `null` removes it."""

    rpm: int | None = Field(None, ge=1, le=MAX_COUNT)
    tpm: int | None = Field(None, ge=1, le=MAX_COUNT)
    concurrency: int | None = Field(None, ge=1, le=MAX_COUNT)
    tokens_per_day: int | None = Field(None, ge=1, le=MAX_COUNT)
    tokens_per_month: int | None = Field(None, ge=1, le=MAX_COUNT)
    usd_per_month: float | None = Field(None, gt=0, le=MAX_USD)


PRINTABLE = r"^[^\x00-\x1f\x7f]+$"  # no control characters (PostgreSQL refuses NUL in text)
Name = Annotated[str, Field(min_length=1, max_length=256, pattern=PRINTABLE)]
TeamName = Annotated[str, Field(min_length=1, max_length=128, pattern=PRINTABLE)]
Glob = Annotated[str, Field(min_length=1, max_length=256, pattern=PRINTABLE)]
Globs = Annotated[list[Glob], Field(min_length=1, max_length=1000)]
MAX_EXPIRY = timedelta(days=365 * 100)


def _expiry(expires_at: datetime | None, expires_in_seconds: int | None) -> datetime | None:
    if expires_in_seconds is not None:
        return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expires_in_seconds)
    if expires_at is not None:
        when = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
        if abs(when - datetime.now(UTC)) > MAX_EXPIRY:
            raise InvalidRequest("`expires_at` is more than 100 years away.", param="expires_at")
        return when.astimezone(UTC)
    return None


class KeyCreate(_Input):
    name: Name
    team: TeamName | None = None
    models: Globs | None = Field(None, description="globs on the public model names; omitted or null: every model")
    limits: Limits = Limits()
    expires_at: datetime | None = Field(None, description="RFC 3339; omitted or null: never")
    expires_in_seconds: int | None = Field(None, ge=1, le=100 * 365 * 86400, description="instead of expires_at")

    @model_validator(mode="after")
    def _one_expiry(self) -> KeyCreate:
        if self.expires_at is not None and self.expires_in_seconds is not None:
            raise ValueError("give `expires_at` or `expires_in_seconds`, not both")
        return self


class KeyUpdate(_Input):
    name: Name | None = None
    team: TeamName | None = None
    models: Globs | None = None
    limits: LimitsPatch | None = None
    expires_at: datetime | None = None
    expires_in_seconds: int | None = Field(None, ge=1, le=100 * 365 * 86400)

    @model_validator(mode="after")
    def _one_expiry(self) -> KeyUpdate:
        if "expires_at" in self.model_fields_set and "expires_in_seconds" in self.model_fields_set:
            raise ValueError("give `expires_at` or `expires_in_seconds`, not both")
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("`name` cannot be null")
        return self


class KeyOut(BaseModel):
    id: str
    name: str
    team: str | None
    models: list[str]
    limits: Limits
    expires_at: str | None
    created_at: str


class KeyCreated(BaseModel):
    """A key with its secret: the answer of create and rotate, the only time the secret is shown."""

    id: str
    key: str = Field(description="the secret; shown only here")
    name: str
    team: str | None
    models: list[str]
    limits: Limits
    expires_at: str | None
    created_at: str


class KeyList(BaseModel):
    object: str = "list"
    data: list[KeyOut]


class TeamCreate(_Input):
    name: TeamName
    limits: Limits = Limits()


class TeamUpdate(_Input):
    limits: LimitsPatch = LimitsPatch()


class TeamOut(BaseModel):
    name: str
    limits: Limits
    created_at: str


class TeamList(BaseModel):
    object: str = "list"
    data: list[TeamOut]


# -- routes ---------------------------------------------------------------------------------------------------


def _state(request: Request) -> Services:
    state: Services = request.app.state.gateway
    return state


async def _changed(state: Services) -> None:
    if state.key_cache is not None:
        await state.key_cache.refresh_now()


KeyId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:#-]+$")]
TeamPath = Annotated[str, Path(min_length=1, max_length=128, pattern=PRINTABLE)]


@router.post("/keys", status_code=201, response_model=KeyCreated, summary="Create a key (its secret is shown once)")
async def create_key(body: KeyCreate, request: Request) -> Response:
    state = _state(request)
    record, secret = await state.keys.create_key(
        body.name, body.team, body.models, body.limits, _expiry(body.expires_at, body.expires_in_seconds)
    )
    await _changed(state)
    headers = {"location": "/admin/keys/" + quote(record.id, safe=""), "cache-control": "no-store"}
    return json_response(record.to_json(secret), 201, headers)


@router.get("/keys", response_model=KeyList, summary="List the keys (revoked ones are not listed)")
async def list_keys(
    request: Request, team: Annotated[str | None, Query(max_length=128, pattern=PRINTABLE, description="only this team's")] = None
) -> Response:
    records = await _state(request).keys.list_keys(team)
    return json_response({"object": "list", "data": [r.to_json() for r in records]})


@router.get("/keys/{key_id}", response_model=KeyOut, summary="One key")
async def get_key(key_id: KeyId, request: Request) -> Response:
    return json_response((await _state(request).keys.get_key(key_id)).to_json())


@router.patch("/keys/{key_id}", response_model=KeyOut, summary="Change a key (merge: null clears)")
async def update_key(key_id: KeyId, body: KeyUpdate, request: Request) -> Response:
    state = _state(request)
    changes: dict[str, Any] = {name: getattr(body, name) for name in body.model_fields_set if name != "limits"}
    if "expires_in_seconds" in changes or "expires_at" in changes:
        changes["expires_at"] = _expiry(changes.pop("expires_at", None), changes.pop("expires_in_seconds", None))
    if body.limits is not None:
        changes["limits"] = {name: getattr(body.limits, name) for name in body.limits.model_fields_set}
    record = await state.keys.update_key(key_id, changes)
    await _changed(state)
    return json_response(record.to_json())


@router.delete("/keys/{key_id}", status_code=204, response_class=Response, summary="Revoke a key (idempotent)")
async def revoke_key(key_id: KeyId, request: Request) -> Response:
    state = _state(request)
    await state.keys.revoke_key(key_id)
    await _changed(state)
    return Response(status_code=204)


@router.post("/keys/{key_id}/rotate", response_model=KeyCreated, summary="A new secret for a key; the old one stops working")
async def rotate_key(key_id: KeyId, request: Request) -> Response:
    state = _state(request)
    record, secret = await state.keys.rotate_key(key_id)
    await _changed(state)
    return json_response(record.to_json(secret), 200, {"cache-control": "no-store"})


@router.post("/teams", status_code=201, response_model=TeamOut, summary="Create a team")
async def create_team(body: TeamCreate, request: Request) -> Response:
    state = _state(request)
    record = await state.keys.create_team(body.name, body.limits)
    await _changed(state)
    return json_response(record.to_json(), 201, {"location": "/admin/teams/" + quote(record.name, safe="")})


@router.get("/teams", response_model=TeamList, summary="List the teams")
async def list_teams(request: Request) -> Response:
    records = await _state(request).keys.list_teams()
    return json_response({"object": "list", "data": [r.to_json() for r in records]})


@router.get("/teams/{name}", response_model=TeamOut, summary="One team")
async def get_team(name: TeamPath, request: Request) -> Response:
    return json_response((await _state(request).keys.get_team(name)).to_json())


@router.patch("/teams/{name}", response_model=TeamOut, summary="Change a team's limits (merge: null clears)")
async def update_team(name: TeamPath, body: TeamUpdate, request: Request) -> Response:
    state = _state(request)
    limits = {n: getattr(body.limits, n) for n in body.limits.model_fields_set}
    record = await state.keys.update_team(name, limits)
    await _changed(state)
    return json_response(record.to_json())


class UsageRow(BaseModel):
    group: str | None = Field(description="key id, team (null: none), served Gemini model, or UTC day YYYY-MM-DD")
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int = Field(description="includes reasoning tokens")
    reasoning_tokens: int
    cached_tokens: int = Field(description="part of prompt_tokens")
    cost_usd: float


class UsageReport(BaseModel):
    by: str
    since: str
    until: str
    rows: list[UsageRow]


@router.get("/usage", response_model=UsageReport, summary="Usage totals by key, team, model or day")
async def usage(
    request: Request,
    by: Annotated[str | None, Query(description="key (default), team, model or day")] = None,
    since: Annotated[str | None, Query(description="ISO-8601 time or date, or a span back (7d, 24h); default 7d")] = None,
    until: Annotated[str | None, Query(description="ISO-8601 time or date, or a span back from now; default now")] = None,
) -> Response:
    query = UsageQuery.parse(by, since, until)
    rows = await _state(request).usage.report(query.by, query.since, query.until)
    return json_response(query.to_json(rows))
