"""Thin HTTP routes; see each module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from app.pipeline.auth import bearer_token
from app.pipeline.context import Principal
from app.pipeline.seam import CTX_KEY


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=dict(headers or {}), media_type="application/json")


def _token(request: Request) -> str | None:
    headers = request.headers
    return bearer_token(
        headers.get("authorization"), headers.get("api-key") or headers.get("x-api-key") or headers.get("x-goog-api-key")
    )


def _noted(request: Request, principal: Principal) -> Principal:
    ctx = request.scope.get(CTX_KEY)
    if ctx is not None:
        ctx.principal = principal
    return principal


def authenticate(request: Request) -> Principal:
    """The caller of a FastAPI route from the keys held now (401 when refused), noted in the request's context."""
    return _noted(request, request.app.state.gateway.auth.authenticate(_token(request)))


async def authenticate_request(request: Request) -> Principal:
    """`authenticate`, and a key not known yet is looked up in the database once (pipeline/auth.py `resolve`)."""
    return _noted(request, await request.app.state.gateway.auth.resolve(_token(request)))
