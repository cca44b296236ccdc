"""Recording one request's outcome: cost, the access log line, the metrics, the usage record (the pipeline's `finally`).

`record` first prices the request (`settle`: `ctx.cost_usd`, from the price
table, by the model that served it), so that whatever reads the cost later in
the same `finally` (budgets) finds it. Then the access log, the metrics, and
for a request of a client key (one with a key id: config or database keys;
not anonymous, BYOK or refused callers) a usage record handed to the usage
writer's queue (app/team/usage_writer.py; no I/O here). Figures only: no key,
prompt or answer ever reaches a record (docs/design.md#observability).
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Iterable
from typing import Any, Protocol

from app.gateway.upstreams import Upstream
from app.observe.access_log import AccessLog
from app.observe.metrics import GatewayMetrics
from app.pipeline.context import RequestContext
from app.team.prices import PriceTable
from app.team.usage_store import record_of

# `endpoint` label of the routes outside the pipeline's endpoints
_ROUTE_ENDPOINTS = (
    ("/v1/models", "models"), ("/models", "models"), ("/healthz", "health"), ("/readyz", "health"), ("/metrics", "metrics"),
    ("/admin/", "admin"),
)


class UsageSink(Protocol):
    def add(self, record: tuple[Any, ...]) -> None: ...


class _RecordIds:
    """Record ids: unique, not secret: a random prefix per process (reset in a forked child) and a counter."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = "u" + secrets.token_hex(6)
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter):x}"


_ids = _RecordIds()


def endpoint_of(path: str) -> str:
    for prefix, name in _ROUTE_ENDPOINTS:
        if path.startswith(prefix):
            return name
    return "other"


class Recorder:
    def __init__(self, access_log: str, metrics: bool, prices: PriceTable | None = None) -> None:
        self.access = AccessLog(access_log)
        self.metrics = GatewayMetrics(enabled=metrics)
        self.prices = prices or PriceTable()
        self.usage: UsageSink | None = None  # the usage writer, once the database is open
        self._upstreams: list[Upstream] = []

    def watch_upstreams(self, upstreams: Iterable[Upstream]) -> None:
        self._upstreams = list(upstreams)
        self.refresh_credentials()

    def refresh_credentials(self) -> None:
        for upstream in self._upstreams:
            self.metrics.credentials_available(upstream.name, upstream.available())

    def flush(self) -> None:
        """At shutdown: nothing recorded is left unwritten."""
        self.access.flush()
        self.metrics.flush()

    def stream_started(self) -> None:
        self.metrics.stream_started()

    def stream_ended(self) -> None:
        self.metrics.stream_ended()

    def price(self, ctx: RequestContext) -> None:
        """`ctx.cost_usd` from the price table (priced by the served model); the pipeline's `finally` calls it
        first, before the limiter settles a usd budget and before `record`."""
        micro = self.prices.cost_micro(ctx.usage, ctx.response_model, ctx.served_model)
        ctx.cost_usd = None if micro is None else micro / 1_000_000

    def record(self, ctx: RequestContext) -> None:
        principal = ctx.principal
        if principal.key_id is not None and ctx.endpoint:
            if ctx.cost_usd and self.metrics.enabled:
                model = (ctx.model or "") if ctx.error_code != "model_not_found" else ""
                self.metrics.spend(principal.team, model, ctx.cost_usd)
            sink = self.usage
            if sink is not None:
                sink.add(record_of(ctx, _ids.next()))
        self.access.write(ctx)
        metrics = self.metrics
        if not metrics.enabled:
            return
        endpoint = ctx.endpoint or endpoint_of(ctx.path)
        # A model name that routed nowhere is the client's text: not a label (bounded cardinality).
        model = (ctx.model or "") if ctx.error_code != "model_not_found" else ""
        metrics.request(
            endpoint, model, ctx.status, ctx.elapsed(), ctx.ttft(),
            provider=ctx.provider, response_model=ctx.response_model or ctx.served_model, error_type=ctx.error_type,
        )
        usage = ctx.usage
        if usage is not None:
            metrics.tokens(
                model, usage.prompt, usage.completion, usage.reasoning, usage.cached,
                provider=ctx.provider, response_model=ctx.response_model or ctx.served_model, operation=endpoint,
            )
        for upstream, outcome in ctx.attempt_outcomes:
            metrics.upstream_attempt(upstream, outcome)
        if ctx.credentials_changed:
            self.refresh_credentials()
