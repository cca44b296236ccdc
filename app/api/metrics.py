"""`GET /metrics`: Prometheus exposition of the gateway's metrics (`server.metrics`; observe/metrics.py)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.errors import NotFound

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    services = request.app.state.gateway
    if not services.metrics.enabled:
        raise NotFound(f"Unknown request URL: GET {request.url.path}.", code="unknown_url")
    services.recorder.refresh_credentials()
    body, content_type = await asyncio.to_thread(services.metrics.render)  # milliseconds: off the event loop
    return Response(body, media_type=content_type)
