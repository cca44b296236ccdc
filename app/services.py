"""The composition root: the services of one running gateway, built from `Settings`.

Lives on `app.state.gateway`; imports nothing from `api/` (the routes take
what they need from it). Owns start-up and shutdown order: the upstream HTTP
client, credentials and key pools, the router, the dispatcher, the signature
store, the Responses API's response store, the optional media fetcher, client limits and budgets
(gateway/ratelimit.py; shared through Redis by gateway/shared.py when `storage.redis_url` is set),
client authentication with the database's
keys (app/team/: the database is opened and migrated first, so a gateway that
cannot read its keys does not start), the recorder (access log and metrics)
and, in demo mode, the in-process fake Gemini the gateway talks to.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from app.errors import GatewayError
from app.gateway.dispatch import Dispatcher
from app.gateway.fetch import FetchGuard, fetch_all, fetch_chat_media, responses_urls_to_fetch
from app.gateway.ratelimit import WORKER_SLOTS_ENV, BudgetSource, Limiter, claim_worker_slot, estimate_prompt_tokens
from app.gateway.responses_store import MemoryResponseStore, ResponseStore
from app.gateway.routing import Router
from app.gateway.shared import RedisSignatureStore, SharedState
from app.gateway.signatures import MemorySignatureStore, SignatureStore
from app.gateway.upstreams import Credential, Upstream, build_upstream
from app.observe.record import Recorder
from app.pipeline.auth import ClientAuth
from app.pipeline.context import RequestContext
from app.schemas.openai import ChatCompletionRequest
from app.schemas.responses import InputItem
from app.settings import AdminKey, Settings
from app.team.cache import KeyCache
from app.team.db import open_database
from app.team.prices import Price, PriceTable
from app.team.responses_db import DatabaseResponseStore
from app.team.store import KeyStore
from app.team.usage_store import UsageStore
from app.team.usage_writer import UsageWriter
from app.translate import signatures
from app.translate.chat_request import TranslationEnv
from app.translate.responses_items import wanted_keys
from app.upstream.auth import ApiKeyAuth
from app.upstream.client import Endpoint, Timeouts, UpstreamClient

SLOT_RETRY = 1.0  # seconds between two tries for a worker slot when every slot was held at start

log = logging.getLogger("gemini_proxy")

DEMO_KEY = "demo-key"


class SignatureCounts(Protocol):
    """What a translated request says about its thought signatures (chat's `GeminiCall`, Responses' `ResponsesCall`)."""

    signatures_passed: int
    signatures_restored: int
    signature_bypasses: int


class BackendHealth:
    """One `storage_up` gauge fed by several watchers of the same backend (the key cache's refreshes and the usage
    writer both see the database): up only while every one of them last saw it answer, so neither hides the
    other's failure by reporting its own success."""

    def __init__(self, report: Callable[[bool], None]) -> None:
        self._report = report
        self._down: set[str] = set()

    def watcher(self, name: str) -> Callable[[bool], None]:
        def on_health(up: bool) -> None:
            if up:
                self._down.discard(name)
            else:
                self._down.add(name)
            self._report(not self._down)

        return on_health


class UsageBudgets:
    """The usage records as the limiter's `BudgetSource`: what a key or team spent since the start of a day or month.

    A budget counter is seeded from it the first time a process (or Redis)
    meets that key or team in that period (docs/team.md#limits).
    """

    def __init__(self, usage: UsageStore) -> None:
        self.usage = usage

    async def spent(self, subject: str, since: float) -> tuple[int, float]:
        kind, _, name = subject.partition(":")
        when = datetime.fromtimestamp(since, UTC)
        if kind == "team":
            return await self.usage.spent(team=name, since=when)
        return await self.usage.spent(key_id=name, since=when)


class Services:
    def __init__(
        self,
        settings: Settings,
        signature_store: SignatureStore | None = None,
        response_store: ResponseStore | None = None,
        budget_source: BudgetSource | None = None,
    ) -> None:
        self.settings = settings
        self.started_at = int(time.time())
        t = settings.timeouts
        self.client = UpstreamClient(
            Timeouts(t.connect, t.first_byte, t.total, t.stream_idle), pool_size=settings.server.upstream_connections
        )
        self.auth = ClientAuth(settings.auth)
        self.admin_digests = [
            (k if isinstance(k, AdminKey) else AdminKey(key=k)).digest() for k in settings.auth.admin_keys
        ]
        self._keys: KeyStore | None = None
        self._usage: UsageStore | None = None
        self.usage_writer: UsageWriter | None = None
        self._budget_source_given = budget_source is not None
        self.key_cache: KeyCache | None = None
        redis_url = settings.storage.redis_url
        self.shared: SharedState | None = None
        if redis_url is not None:
            self.shared = SharedState(
                redis_url.get_secret_value(), on_health=lambda up: self.metrics.storage_up("redis", up),
                workers=settings.server.workers,  # Redis down at start: each worker enforces at most its share
            )
        local_signatures = MemorySignatureStore(settings.signatures.cache_size)
        self.signatures: SignatureStore = signature_store or (
            RedisSignatureStore(self.shared, local_signatures) if self.shared is not None else local_signatures
        )
        r = settings.responses
        self._response_store_given = response_store is not None
        self.responses: ResponseStore = response_store or MemoryResponseStore(r.store_size, r.store_max_bytes)
        self._responses_db: DatabaseResponseStore | None = None
        m = settings.media
        self.fetcher = FetchGuard(m.fetch_max_bytes, m.fetch_timeout, m.allow_hosts) if m.fetch_urls else None
        self.recorder = Recorder(settings.server.access_log, settings.server.metrics, PriceTable(settings.pricing))
        self.metrics = self.recorder.metrics
        shared = self.shared
        self.limiter = Limiter(
            local_share=settings.server.workers, metrics=self.metrics, budget_source=budget_source,
            shared=shared.backend() if shared is not None else None,
            shared_up=(lambda: shared.up) if shared is not None else None,
            shared_failed=shared.failed if shared is not None else None,
            replicas=(lambda: shared.replicas) if shared is not None else None,
            price_of=self._price_of,
        )
        self._slot_file: int | None = None  # the open lock file of this worker's slot (`_claim_worker_slot`)
        self._slot_task: asyncio.Task[None] | None = None  # trying for a slot (every slot was held at start)
        self.upstreams: list[Upstream] = []
        self._router: Router | None = None
        self._dispatcher: Dispatcher | None = None
        self.demo_fake: Any = None
        self._default_env = TranslationEnv(images=settings.output.images)

    @property
    def ready(self) -> bool:
        return self._router is not None and self.client.ready

    @property
    def router(self) -> Router:
        assert self._router is not None, "Services.start() was not awaited"
        return self._router

    @property
    def keys(self) -> KeyStore:
        """The database's keys and teams (the admin API)."""
        assert self._keys is not None, "Services.start() was not awaited"
        return self._keys

    @property
    def usage(self) -> UsageStore:
        """The usage records (/admin/usage; `spent()` for budgets)."""
        assert self._usage is not None, "Services.start() was not awaited"
        return self._usage

    @property
    def dispatcher(self) -> Dispatcher:
        assert self._dispatcher is not None, "Services.start() was not awaited"
        return self._dispatcher

    async def start(self) -> None:
        engine = await open_database(self.settings.storage.url())
        self._keys = KeyStore(engine)
        self._database_health = BackendHealth(lambda up: self.metrics.storage_up("database", up))
        self.key_cache = KeyCache(
            self._keys, self.auth, self.settings.storage.keys_refresh_seconds,
            on_health=self._database_health.watcher("keys"),
        )
        self._usage = UsageStore(engine)
        if not self._budget_source_given and self.settings.storage.usage_records:
            self.limiter.budget_source = UsageBudgets(self._usage)
        try:
            await self.key_cache.start()
            if self.settings.storage.usage_records:
                await self._start_usage()
            r = self.settings.responses
            if r.store == "database" and not self._response_store_given:
                assert isinstance(self.responses, MemoryResponseStore)
                self._responses_db = DatabaseResponseStore(engine, self.responses, r.store_days)
                await self._responses_db.start()
                self.responses = self._responses_db
        except BaseException:
            await engine.dispose()
            raise
        if self.settings.demo:
            from app.testing.fake_gemini import start_fake

            self.demo_fake = await start_fake(host="127.0.0.1", port=0)
            endpoint = Endpoint.gemini(self.demo_fake.url)
            self.upstreams = [Upstream("demo", "gemini", endpoint, [Credential(ApiKeyAuth(DEMO_KEY), "demo#1", "demo")])]
        else:
            # Loading Google credentials may touch the disk or the metadata server.
            t = self.settings.timeouts
            token_timeout = t.connect + min(t.first_byte, 30.0)  # a token endpoint answers fast or not at all
            self.upstreams = await asyncio.to_thread(
                lambda: [build_upstream(u, token_timeout) for u in self.settings.upstreams]
            )
        await self.client.start()
        if self.fetcher is not None:
            await self.fetcher.start()
        self._router = Router(self.settings, self.upstreams)
        self._dispatcher = Dispatcher(self.client, self.settings.retry)
        self.recorder.watch_upstreams(self.upstreams)
        if self.shared is not None:
            self.shared.watch_upstreams(self.upstreams)
            await self.shared.start()
            log.info("limits, upstream rests and thought signatures are shared through Redis")
        elif self.settings.server.workers > 1:
            self._claim_worker_slot(self.settings.server.workers)

    def _claim_worker_slot(self, n: int) -> None:
        """Without Redis, which of the run's `n` workers this is: its exact share of every limit (the shares add up
        to the limit, never more; a limit below `n` leaves some workers none). The slot directory is the run's
        (`WORKER_SLOTS_ENV`, made by `gemini-proxy serve --workers`)."""
        directory = os.environ.get(WORKER_SLOTS_ENV)
        claimed = claim_worker_slot(directory, n) if directory else None
        if claimed is None:
            log.warning(
                "no storage.redis_url: each of the %d workers enforces its share of every key's and team's limits "
                "(limit // %d, at least 1 until this worker has a slot: a limit below %d is enforced looser; USD / %d)",
                n, n, n, n,
            )
            if directory:  # every slot held: a restart starts the new workers before it stops the old ones
                self._slot_task = asyncio.get_running_loop().create_task(self._claim_later(directory, n))
            return
        self._took_slot(claimed, n)

    async def _claim_later(self, directory: str, n: int) -> None:
        """Try for a slot every `SLOT_RETRY` seconds until one is free (the worker it belonged to has stopped)."""
        while True:
            await asyncio.sleep(SLOT_RETRY)
            claimed = claim_worker_slot(directory, n)
            if claimed is not None:
                self._took_slot(claimed, n)
                return

    def _took_slot(self, claimed: tuple[int, int], n: int) -> None:
        self._slot_file = claimed[1]
        self.limiter.set_slot(claimed[0])
        log.warning(
            "no storage.redis_url: each of the %d workers enforces its share of every key's and team's limits "
            "(limit // %d, one more for the first limit %% %d workers; USD / %d): never looser than configured, and a "
            "limit below %d leaves some workers none (they refuse it; use Redis for such limits). This is worker %d.",
            n, n, n, n, n, claimed[0] + 1,
        )

    async def _start_usage(self) -> None:
        st = self.settings.storage
        metrics = self.metrics
        assert self._usage is not None
        self.usage_writer = UsageWriter(
            self._usage, st.spool_dir(), batch_size=st.usage_batch_size, interval=st.usage_flush_seconds,
            queue_size=st.usage_queue_size, retention_days=st.usage_retention_days, prune_interval=st.usage_prune_seconds,
            on_health=self._database_health.watcher("usage"), on_pending=metrics.usage_pending,
            write_timeout=st.usage_write_timeout,
        )
        await self.usage_writer.start()
        self.recorder.usage = self.usage_writer

    async def stop(self) -> None:
        if self._slot_task is not None:
            self._slot_task.cancel()
        if self._slot_file is not None:
            os.close(self._slot_file)  # (its lock goes with it: the slot is free for a worker started in its place)
            self._slot_file = None
        if self.usage_writer is not None:
            self.recorder.usage = None
            await self.usage_writer.stop()
        self.recorder.flush()
        if self._responses_db is not None:
            await self._responses_db.stop()
        if self.shared is not None:
            await self.shared.stop()
        if self.key_cache is not None:
            await self.key_cache.stop()
        if self._usage is not None:
            self._usage.close()
        if self._keys is not None:
            await self._keys.engine.dispose()
        await self.client.close()
        if self.fetcher is not None:
            await self.fetcher.close()
        if self.demo_fake is not None:
            await self.demo_fake.close()
            self.demo_fake = None

    async def admit(
        self, ctx: RequestContext, model: str, max_output: int | None = None, prompt_tokens: int | None = None
    ) -> None:
        """Before Google: 403 unless the key may use `model`; then its limits (429, reservations in ctx.admission).

        The prompt is estimated from the body's text (bytes / 4; inline media a fixed count each, see
        `estimate_prompt_tokens`), never parsed again, unless the endpoint
        gives its own `prompt_tokens` (images: the prompt's length / 4 and `MEDIA_TOKENS` per input image);
        `max_output` is the request's `max_tokens` / `max_completion_tokens` / `max_output_tokens` /
        `maxOutputTokens`, if any.
        """
        principal = ctx.principal
        body, ctx.body = ctx.body, b""  # not held for the rest of a long stream
        principal.check_model(model)
        if principal.limited:
            prompt = estimate_prompt_tokens(body) if prompt_tokens is None else prompt_tokens
            await self.limiter.admit(ctx, prompt, max_output, model)

    def _price_of(self, model: str) -> Price | None:
        """The price of the model a name asked for serves first (a USD budget's reservation); None if unknown."""
        try:
            targets = self.router.resolve(model)
        except GatewayError:
            return None
        return self.recorder.prices.lookup(targets[0].model) if targets else None

    def count_signatures(self, call: SignatureCounts) -> None:
        """Thought signatures of one translated request, by where they came from (metrics)."""
        metrics = self.metrics
        if call.signatures_passed:
            metrics.signatures("passed", call.signatures_passed)
        if call.signatures_restored:
            metrics.signatures("restored", call.signatures_restored)
        if call.signature_bypasses:
            metrics.signatures("bypass", call.signature_bypasses)

    async def translation_env(self, req: ChatCompletionRequest) -> TranslationEnv:
        """Look up what the pure translator needs: stored signatures, fetched media."""
        keys = signatures.wanted_keys(req.messages)
        found = await self.signatures.get_many(keys) if keys else {}
        fetched = await fetch_chat_media(self.fetcher, req) if self.fetcher is not None else {}
        return self._env(found, fetched)

    async def signatures_env(self, keys: list[str]) -> TranslationEnv:
        """`translation_env` of a request with nothing to fetch (translate/chat_simple.py): the stored signatures."""
        return self._env(await self.signatures.get_many(keys) if keys else {}, {})

    def _env(self, found: Mapping[str, str], fetched: Mapping[str, dict[str, str]]) -> TranslationEnv:
        if not found and not fetched:
            return self._default_env
        return TranslationEnv(signatures=found, fetched=fetched, images=self.settings.output.images)

    async def responses_env(self, items: list[tuple[InputItem, str]]) -> TranslationEnv:
        """The same look-ups for a Responses request: its items (history first) with the parameters naming them."""
        keys = wanted_keys(item for item, _ in items)
        found = await self.signatures.get_many(keys) if keys else {}
        fetched = await fetch_all(self.fetcher, responses_urls_to_fetch(items)) if self.fetcher is not None else {}
        return self._env(found, fetched)
