"""`GET /v1/models` and `GET /v1/models/{id}` in OpenAI's list shape.

Lists what a client can call: the configured routes and aliases, then (with
passthrough on) the models each upstream offers for `generateContent`
(Gemini Developer API: `models.list`; Vertex AI: the Gemini models of
`publishers.models.list`), cached for ten minutes. In
demo mode every entry is owned by `gemini-proxy-demo` and the list says
`"demo": true`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from app.api import authenticate, json_response

from app.errors import GatewayError, ModelNotFound
from app.gateway.routing import gemini_model_id
from app.services import Services as GatewayState

log = logging.getLogger("gemini_proxy.models")
router = APIRouter()

CACHE_SECONDS = 600.0


class ModelCatalog:
    """Upstream model ids, cached per process."""

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def upstream_ids(self, state: GatewayState) -> list[str]:
        if time.monotonic() - self._fetched_at < CACHE_SECONDS:
            return self._ids
        async with self._lock:
            if time.monotonic() - self._fetched_at < CACHE_SECONDS:
                return self._ids
            ids: list[str] = []
            for upstream in state.upstreams:
                cred = upstream.pick()
                if cred is None:
                    continue
                try:
                    ids.extend(await self._list(state, upstream.endpoint.models_url(), await cred.auth.headers()))
                except GatewayError as exc:
                    log.warning("listing models of upstream %s failed: %s", upstream.name, exc.message[:200])
            self._ids = list(dict.fromkeys(ids))
            self._fetched_at = time.monotonic()
            return self._ids

    @staticmethod
    async def _list(state: GatewayState, url: str, headers: dict[str, str]) -> list[str]:
        ids: list[str] = []
        token = ""
        for _ in range(20):  # pages
            page = await state.client.get_json(f"{url}?pageSize=1000" + (f"&pageToken={token}" if token else ""), headers)
            for model in page.get("models") or ():  # Gemini Developer API
                if "generateContent" in (model.get("supportedGenerationMethods") or ()):
                    ids.append(gemini_model_id(str(model.get("name", ""))))
            for model in page.get("publisherModels") or ():  # Vertex AI: every Google model; keep Gemini's
                model_id = str(model.get("name", "")).rsplit("/", 1)[-1]
                if model_id.startswith("gemini") and "embedding" not in model_id:
                    ids.append(model_id)
            token = page.get("nextPageToken") or ""
            if not token:
                break
        return ids


def _model(state: GatewayState, model_id: str, owner: str) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": state.started_at,
        "owned_by": "gemini-proxy-demo" if state.settings.demo else owner,
    }


async def _all(request: Request) -> list[dict[str, Any]]:
    state: GatewayState = request.app.state.gateway
    assert state.router is not None
    out = {name: _model(state, name, "gemini-proxy") for name in state.router.public_names()}
    if state.router.passthrough:
        catalog: ModelCatalog = request.app.state.model_catalog
        for model_id in await catalog.upstream_ids(state):
            out.setdefault(model_id, _model(state, model_id, "google"))
    return list(out.values())


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    authenticate(request)
    body: dict[str, Any] = {"object": "list", "data": await _all(request)}
    if state.settings.demo:
        body["demo"] = True
    return json_response(body)


@router.get("/v1/models/{model_id:path}")
@router.get("/models/{model_id:path}", include_in_schema=False)
async def retrieve_model(model_id: str, request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    authenticate(request)
    for model in await _all(request):
        if model["id"] in (model_id, gemini_model_id(model_id)):
            return json_response({**model, "id": model_id})
    raise ModelNotFound(model_id)
