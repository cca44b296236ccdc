"""Recording one request's outcome: the access log line and the metrics (the pipeline's `finally`).

The team layer (limits, usage records) plugs in here as well. Figures only:
no key, prompt or answer ever reaches a record (docs/design.md#observability).
"""

from __future__ import annotations

from collections.abc import Iterable

from app.gateway.upstreams import Upstream
from app.observe.access_log import AccessLog
from app.observe.metrics import GatewayMetrics
from app.pipeline.context import RequestContext

# `endpoint` label of the routes outside the pipeline's endpoints
_ROUTE_ENDPOINTS = (
    ("/v1/models", "models"), ("/models", "models"), ("/healthz", "health"), ("/readyz", "health"), ("/metrics", "metrics"),
    ("/admin/", "admin"),
)


def endpoint_of(path: str) -> str:
    for prefix, name in _ROUTE_ENDPOINTS:
        if path.startswith(prefix):
            return name
    return "other"


class Recorder:
    def __init__(self, access_log: str, metrics: bool) -> None:
        self.access = AccessLog(access_log)
        self.metrics = GatewayMetrics(enabled=metrics)
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

    def record(self, ctx: RequestContext) -> None:
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
