"""`GET /v1/models` and `GET /v1/models/{id}` in OpenAI's list shape.

Lists what a client can call: the configured routes and aliases, then (with
passthrough on) the models each upstream offers for `generateContent`,
`embedContent` or `predict` (Imagen) (Gemini Developer API: `models.list`;
Vertex AI: the Gemini, Imagen and embedding models of `publishers.models.list`). Each entry says which
endpoints of the gateway serve it (`"endpoints": ["chat"]`, `["embeddings"]`,
from the capability table: translate/capabilities.py). In demo mode every
entry is owned by `gemini-proxy-demo` and the list says `"demo": true`.
The list keeps only the models the caller's key may use (`Principal.allows`;
retrieving another is a 403).

`ModelCatalog` owns the policy for those upstream listings, per upstream:

* a complete listing is kept as that upstream's last good list and refreshed
  after ten minutes;
* a listing that fails is never taken for the truth, whatever failed: no usable
  credential at that moment (`pick()` is None, or the auth headers could not
  be made), any page, an exception, or the time bound (`timeout`, a few seconds
  per upstream). The upstream's last good list stays in use (none before its
  first good listing), and the upstream is listed again after a back-off of
  2 s, doubling up to 60 s;
* due upstreams are listed concurrently, one listing at a time per catalog;
* an upstream with no credentials at all (bring-your-own-key mode) is not
  listed: there is nothing to list it with;
* the log names the upstream and the reason, never a key.

The clock is injected (`clock`), so tests need no sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api import authenticate_request, json_response
from app.errors import GatewayError, ModelNotFound, UpstreamError
from app.gateway.routing import gemini_model_id
from app.gateway.upstreams import Upstream
from app.pipeline.context import Principal
from app.services import Services

log = logging.getLogger("gemini_proxy.models")
router = APIRouter()

REFRESH_SECONDS = 600.0  # a good list is listed again after this long
LIST_TIMEOUT = 5.0  # bound of one upstream's whole listing (credential, every page)
BACKOFF_INITIAL = 2.0  # after a failed listing; doubles per failure in a row
BACKOFF_MAX = 60.0
MAX_PAGES = 20


class ListingFailed(Exception):
    """A listing that must not be taken for the truth; the message says why (never a key)."""


@dataclass
class UpstreamListing:
    """What the catalog knows of one upstream's models."""

    ids: list[str] | None = None  # the last good list (None: never listed completely)
    fetched_at: float = 0.0  # clock time of that list
    failures: int = 0  # failed listings in a row
    retry_at: float = 0.0  # clock time a failed upstream may be listed again

    def due(self, now: float, refresh: float) -> bool:
        if self.failures:
            return now >= self.retry_at
        return self.ids is None or now - self.fetched_at >= refresh


class ModelCatalog:
    """Upstream model ids, per upstream: last good list, refresh, failure back-off (see the module docstring)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        timeout: float = LIST_TIMEOUT,
        refresh: float = REFRESH_SECONDS,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        self.refresh = refresh
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.listings: dict[str, UpstreamListing] = {}
        self._lock = asyncio.Lock()

    def _listing(self, upstream: Upstream) -> UpstreamListing:
        return self.listings.setdefault(upstream.name, UpstreamListing())

    def _due(self, state: Services) -> list[Upstream]:
        now = self.clock()
        return [u for u in state.upstreams if u.credentials and self._listing(u).due(now, self.refresh)]

    async def upstream_ids(self, state: Services) -> list[str]:
        """Every upstream's last good list, merged in upstream order; due upstreams are listed first."""
        if self._due(state):
            async with self._lock:
                due = self._due(state)  # another request may have listed them while this one waited
                if due:
                    await asyncio.gather(*(self._refresh(state, u) for u in due))
        ids: list[str] = []
        for upstream in state.upstreams:
            ids.extend(self._listing(upstream).ids or ())
        return list(dict.fromkeys(ids))

    async def _refresh(self, state: Services, upstream: Upstream) -> None:
        listing = self._listing(upstream)
        try:
            async with asyncio.timeout(self.timeout):
                ids = await self._list_upstream(state, upstream)
        except Exception as exc:
            listing.failures += 1
            backoff = min(self.backoff_max, self.backoff_initial * 2 ** (listing.failures - 1))
            listing.retry_at = self.clock() + backoff
            kept = "no earlier list" if listing.ids is None else f"keeping the last good list ({len(listing.ids)} models)"
            log.warning(
                "listing the models of upstream %s failed: %s; %s; next try in %.0f s",
                upstream.name, _reason(exc, self.timeout), kept, backoff,
            )
            return
        if listing.failures:
            log.info("listing the models of upstream %s works again (%d models)", upstream.name, len(ids))
        listing.ids = ids
        listing.fetched_at = self.clock()
        listing.failures = 0

    @staticmethod
    async def _list_upstream(state: Services, upstream: Upstream) -> list[str]:
        cred = upstream.pick()
        if cred is None:
            raise ListingFailed("no usable credential (every one is cooling down or parked)")
        try:
            headers = await cred.auth.headers()
        except GatewayError as exc:
            raise ListingFailed(f"credential {cred.label} gave no auth headers: {exc.message[:200]}") from None
        except Exception as exc:
            raise ListingFailed(f"credential {cred.label} gave no auth headers ({type(exc).__name__})") from None
        return await ModelCatalog._list(state, upstream.endpoint.models_url(), headers)

    @staticmethod
    async def _list(state: Services, url: str, headers: dict[str, str]) -> list[str]:
        """Every page of one listing; any page failing raises (a partial list is no list)."""
        ids: list[str] = []
        token = ""
        for _ in range(MAX_PAGES):
            query = "?pageSize=1000" + (f"&pageToken={quote(token, safe='')}" if token else "")
            page = await state.client.get_json(url + query, headers)
            if not isinstance(page, dict):
                raise ListingFailed(f"a page of the listing is not a JSON object ({type(page).__name__})")
            for model in page.get("models") or ():  # Gemini Developer API
                methods = model.get("supportedGenerationMethods") or ()
                if "generateContent" in methods or "embedContent" in methods or "predict" in methods:  # predict: Imagen
                    ids.append(gemini_model_id(str(model.get("name", ""))))
            for model in page.get("publisherModels") or ():  # Vertex AI: every Google model; keep Gemini, Imagen, embeddings
                model_id = str(model.get("name", "")).rsplit("/", 1)[-1]
                if model_id.startswith(("gemini", "imagen")) or "embedding" in model_id:
                    ids.append(model_id)
            token = page.get("nextPageToken") or ""
            if not token:
                return list(dict.fromkeys(ids))
        log.warning("the model listing at %s has more than %d pages; the first %d are used", url, MAX_PAGES, MAX_PAGES)
        return list(dict.fromkeys(ids))


def _reason(exc: Exception, timeout: float) -> str:
    """Why a listing failed, fit for the log: our own messages, else the exception's type only."""
    if isinstance(exc, TimeoutError):
        return f"no complete answer within {timeout:g} s"
    if isinstance(exc, ListingFailed):
        return str(exc)
    if isinstance(exc, UpstreamError) and exc.google_code:
        status = " ".join(str(part) for part in (exc.google_code, exc.google_status) if part)
        return f"Google answered {status}: {exc.message[:200]}"
    if isinstance(exc, GatewayError):
        return exc.message[:200]
    return type(exc).__name__


def _model(state: Services, model_id: str, owner: str, served: frozenset[str]) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": state.started_at,
        "owned_by": "gemini-proxy-demo" if state.settings.demo else owner,
        # Extension: the gateway endpoints this model serves (`chat`, `embeddings`, `images`).
        "endpoints": [e for e in state.router.endpoints_of(model_id) if e in served],
    }


async def _all(request: Request) -> list[dict[str, Any]]:
    state: Services = request.app.state.gateway
    assert state.router is not None
    served: frozenset[str] = request.app.pipeline.endpoints.names()
    out = {name: _model(state, name, "gemini-proxy", served) for name in state.router.public_names()}
    if state.router.passthrough:
        catalog: ModelCatalog = request.app.state.model_catalog
        for model_id in await catalog.upstream_ids(state):
            if model_id not in out:
                out[model_id] = _model(state, model_id, "google", served)
    return list(out.values())


@router.get("/v1/models")
@router.get("/models", include_in_schema=False)
async def list_models(request: Request) -> Response:
    state: Services = request.app.state.gateway
    principal = await authenticate_request(request)
    body: dict[str, Any] = {"object": "list", "data": [m for m in await _all(request) if principal.allows(m["id"])]}
    if state.settings.demo:
        body["demo"] = True
    return json_response(body, headers=await _limit_headers(state, principal))


async def _limit_headers(state: Services, principal: Principal) -> dict[str, str]:
    """A limited key's `x-ratelimit-*` headers, as on every answer to it (nothing is taken: a list is no request)."""
    if not principal.limited:
        return {}
    return {name.decode(): value.decode() for name, value in await state.limiter.peek_headers(principal)}


@router.get("/v1/models/{model_id:path}")
@router.get("/models/{model_id:path}", include_in_schema=False)
async def retrieve_model(model_id: str, request: Request) -> Response:
    principal = await authenticate_request(request)
    principal.check_model(model_id)
    for model in await _all(request):
        if model["id"] in (model_id, gemini_model_id(model_id)):
            return json_response({**model, "id": model_id}, headers=await _limit_headers(request.app.state.gateway, principal))
    raise ModelNotFound(model_id)
