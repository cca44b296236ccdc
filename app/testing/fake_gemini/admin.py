"""Admin endpoints for tests (no auth, under `/_fake/`).

Owns: `GET /_fake/requests`, `POST /_fake/reset`, `GET /_fake/stats`,
`POST /_fake/script`, `GET|POST /_fake/config` and
`POST /_fake/tokens/expire`. Answers are plain JSON; bad input is a 400 in
Google's error shape.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from app.testing.fake_gemini.delivery import json_response
from app.testing.fake_gemini.directives import check_script
from app.testing.fake_gemini.state import STATE
from app.testing.google_errors import GoogleError


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise GoogleError(400, f"fake-gemini: body is not JSON: {exc}") from None


async def requests(request: web.Request) -> web.Response:
    """Recorded API requests, oldest first; `?since=<seq>` keeps later ones only."""
    state = request.app[STATE]
    try:
        since = int(request.query.get("since") or 0)
    except ValueError:
        raise GoogleError(400, "fake-gemini: since must be an integer") from None
    return json_response({"requests": [r for r in state.requests if r["seq"] > since]})


async def reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    # The caller's own connection is not counted among the open ones.
    return json_response(request.app[STATE].stats(exclude=request.transport))


async def script(request: web.Request) -> web.Response:
    state = request.app[STATE]
    items = check_script(await _json_body(request))
    state.scripts.extend(items)
    return json_response({"queued": len(state.scripts)})


async def config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "POST":
        changes = await _json_body(request)
        if not isinstance(changes, dict):
            raise GoogleError(400, "fake-gemini: config body must be a JSON object")
        try:
            state.update_config(changes)
        except ValueError as exc:
            raise GoogleError(400, f"fake-gemini: {exc}") from None
    return json_response(state.config())


async def expire_tokens(request: web.Request) -> web.Response:
    return json_response({"expired": request.app[STATE].expire_tokens()})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_fake/requests", requests)
    app.router.add_post("/_fake/reset", reset)
    app.router.add_get("/_fake/stats", stats)
    app.router.add_post("/_fake/script", script)
    app.router.add_get("/_fake/config", config)
    app.router.add_post("/_fake/config", config)
    app.router.add_post("/_fake/tokens/expire", expire_tokens)
