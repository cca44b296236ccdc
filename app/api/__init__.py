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


def authenticate(request: Request) -> Principal:
    """The caller of a FastAPI route (401 when refused), noted in the request's context."""
    headers = request.headers
    token = bearer_token(headers.get("authorization"), headers.get("api-key") or headers.get("x-api-key"))
    principal: Principal = request.app.state.gateway.auth.authenticate(token)
    ctx = request.scope.get(CTX_KEY)
    if ctx is not None:
        ctx.principal = principal
    return principal
