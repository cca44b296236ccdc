"""`GET /healthz` (the process answers) and `GET /readyz` (config loaded, upstream client ready)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api import json_response

router = APIRouter()


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    state = getattr(request.app.state, "gateway", None)
    if state is None or not state.ready:
        return json_response({"status": "starting"}, 503)
    return json_response({"status": "ready", "demo": state.settings.demo, "upstreams": [u.name for u in state.upstreams]})
