"""Prometheus metrics of the gateway, recorded from one `finally` per request.

`GatewayMetrics` owns every metric.  Single-process: each instance has its own
`CollectorRegistry` (tests build many apps in one process).  Multiprocess
(`PROMETHEUS_MULTIPROC_DIR` set before `prometheus_client` is imported, as
`gemini-proxy serve --workers N` does): values live in per-process files in
that directory, all instances of one process share the same metric objects,
and `render()` merges the files of every worker for each scrape.

Series (names and labels are fixed: dashboards and acceptance tests read them)

  gemini_proxy_requests_total{endpoint,model,status}            counter
  gemini_proxy_request_duration_seconds{endpoint,model}         histogram, DURATION_BUCKETS
  gemini_proxy_time_to_first_token_seconds{endpoint,model}      histogram, DURATION_BUCKETS (streams only;
                                                                thinking models often pass 10 s)
  gemini_proxy_tokens_total{model,type}                         counter, type = prompt|completion|reasoning|cached
  gemini_proxy_upstream_attempts_total{upstream,outcome}        counter, outcome = ok|retry|rate_limited|credentials|error
  gemini_proxy_credentials_available{upstream}                  gauge (multiprocess: livemax)
  gemini_proxy_active_streams                                   gauge (multiprocess: livesum)
  gemini_proxy_signatures_total{outcome}                        counter, outcome = passed|restored|bypass
  gemini_proxy_storage_up{backend}                              gauge 0/1 (multiprocess: livemin), backend = database|redis
  gemini_proxy_rate_limited_total{team,kind}                    counter, kind = rpm|tpm|concurrency|tokens_per_day|
                                                                tokens_per_month|usd_per_month (team "" = none)
  gemini_proxy_spend_usd_total{team,model}                      counter (USD, float); team "" = none, over
                                                                TEAM_LABEL_LIMIT teams: "other"
  gemini_proxy_usage_records_pending                            gauge (multiprocess: livesum): usage records
                                                                queued in memory + spooled to disk

and the OpenTelemetry GenAI equivalents (semantic conventions, Development
status), under their Prometheus names, attributes as labels (dots -> `_`):

  gen_ai_client_operation_duration_seconds      {gen_ai_operation_name, gen_ai_provider_name,
  gen_ai_server_request_duration_seconds         gen_ai_request_model, gen_ai_response_model, error_type}
      both: the request's duration, DURATION_BUCKETS (the OTel advice for both).  The gateway is a GenAI
      client of Gemini (client.operation.duration) and a GenAI server to its own clients
      (server.request.duration, the name the issue asks for); it measures one figure, exposed under both.
  gen_ai_server_time_to_first_token_seconds     {gen_ai_operation_name, gen_ai_provider_name,
                                                 gen_ai_request_model, gen_ai_response_model}
      streams only, SERVER_TTFT_BUCKETS (the OTel advice, 1 ms .. 10 s).
  gen_ai_client_token_usage                     {gen_ai_operation_name, gen_ai_provider_name,
                                                 gen_ai_request_model, gen_ai_response_model, gen_ai_token_type}
      gen_ai_token_type = input (prompt) | output (completion, which includes reasoning: the billable
      output); TOKEN_BUCKETS.  Embeddings record input only.
  Not emitted: gen_ai.client.operation.time_to_first_chunk (the TTFT figure is above under the server
  name), *.time_per_output_*, server.address/server.port (the upstream label says which upstream).

Label values (cardinality stays bounded)

* endpoint: a short route name chosen by the caller from a fixed set, e.g. "chat.completions"
  (`gen_ai_operation_name` is derived from it: see `operation_name`).
* model / gen_ai_request_model: the *public* model name the client asked for, as configured
  (an alias or a route name); pass a fixed placeholder for names not in the config.  As a last
  guard, after MODEL_LABEL_LIMIT distinct names per instance further new names become "_OTHER".
* gen_ai_response_model: the model that answered (Gemini `modelVersion`), "" (= no label) if unknown.
* status: the HTTP status as an integer string ("200", "429", "499" ...).
* gen_ai_provider_name: "gcp.gemini" (AI Studio), "gcp.vertex_ai", or "gcp.gen_ai" when not given;
  the upstream types "gemini" / "vertex" are accepted and mapped.
* error_type: the caller's low-cardinality error type when the request failed; when it is not
  given and status >= 400 the status code is used (as OTel's HTTP conventions do); "" otherwise.
* tokens: the OpenAI usage figures the gateway returned: prompt_tokens, completion_tokens
  (includes reasoning), completion_tokens_details.reasoning_tokens,
  prompt_tokens_details.cached_tokens.  So reasoning is part of completion and cached part of
  prompt: do not add the types together.  A type's series appears with its first non-zero count.

Cost.  prometheus_client takes a lock per value and checks arguments on every
call (about 2 us per counter increment, 3-6 us per histogram observation on
the reference machine: ~35 us for one request's figures).  So the recording
methods only add to plain per-label-set accumulators (a dict lookup, a
`bisect` and a few list additions, no locks, no prometheus_client call), and
`flush()` moves what was added since the last flush into the prometheus_client
metrics: `render()` flushes first (single-process figures are exact at every
scrape); in multiprocess mode a worker also flushes FLUSH_INTERVAL_S after its
first unflushed recording (asyncio timer; write-through when no loop runs)
and at exit, so other workers' figures in a scrape are at most that old.
Record from the event-loop thread only (the accumulators take no lock);
`flush()`/`render()` may run in any thread.
"""

from __future__ import annotations

import asyncio
import atexit
import glob
import logging
import os
import threading
from bisect import bisect_left
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("gemini_proxy")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FLUSH_INTERVAL_S = 1.0

# OTel gen_ai.client.operation.duration / gen_ai.server.request.duration advice: 10 ms .. 82 s, x2 steps.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)  # fmt: skip
# OTel gen_ai.server.time_to_first_token advice: 1 ms .. 10 s.
SERVER_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)  # fmt: skip
# OTel gen_ai.client.token.usage advice: 1 .. 67M, x4 steps.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)  # fmt: skip

UPSTREAM_OUTCOMES = frozenset({"ok", "retry", "rate_limited", "credentials", "error"})
SIGNATURE_OUTCOMES = frozenset({"passed", "restored", "bypass"})
LIMIT_KINDS = frozenset({"rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month", "usd_per_month"})
TOKEN_TYPES = ("prompt", "completion", "reasoning", "cached")
PROVIDERS = {"gemini": "gcp.gemini", "vertex": "gcp.vertex_ai"}  # upstream type -> gen_ai.provider.name
DEFAULT_PROVIDER = "gcp.gen_ai"
OTHER = "_OTHER"
MODEL_LABEL_LIMIT = 1000
TEAM_LABEL_LIMIT = 100  # teams are curated by admins; past this many, "other"

_GENAI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model")

# An accumulated histogram is a list: one count per bucket of its bounds, one for +Inf, then the sum.
# The bucket of a value v is bisect_left(bounds, v): the first bound >= v (Prometheus "le").


def _histogram(bounds: tuple[float, ...]) -> list[float]:
    return [0.0] * (len(bounds) + 2)


def operation_name(endpoint: str) -> str:
    """`gen_ai.operation.name` for an endpoint name or path (unknown ones pass through)."""
    e = endpoint.lower().replace("_", "").replace("-", "")
    if "embed" in e:
        return "embeddings"
    if "generatecontent" in e:
        return "generate_content"
    if "chat" in e or "responses" in e:
        return "chat"
    if "completion" in e:
        return "text_completion"
    return endpoint


def provider_name(provider: str | None) -> str:
    """`gen_ai.provider.name`: as given, mapped from an upstream type, or "gcp.gen_ai"."""
    if not provider:
        return DEFAULT_PROVIDER
    return PROVIDERS.get(provider, provider)


def multiprocess_dir() -> str | None:
    """The directory prometheus_client shares values through, or None in single-process mode.

    The mode is fixed when prometheus_client is first imported; a directory set
    later is ignored here (with a warning), since this process keeps its values in memory.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if not path:
        return None
    if not getattr(values.ValueClass, "_multiprocess", False):
        log.warning("%s is set but prometheus_client was imported before it: metrics stay per-process", MULTIPROC_ENV)
        return None
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_processes(path: str) -> list[int]:
    """`mark_process_dead` every pid that left `live*` gauge files but no longer runs.

    uvicorn restarts crashed workers and has no exit hook, so this runs when a
    worker starts and before every multiprocess scrape (a worker that exits
    normally marks itself dead at exit).
    """
    dead: set[int] = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid = os.path.basename(name)[:-3].rsplit("_", 1)[1]
        if pid.isdigit() and int(pid) not in dead and not _alive(int(pid)):
            dead.add(int(pid))
    for pid_ in dead:
        multiprocess.mark_process_dead(pid_, path)  # type: ignore[no-untyped-call]
    return sorted(dead)


class _Families:
    """The metric objects: per `GatewayMetrics` in single-process mode, per process in multiprocess mode."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.requests = Counter(
            "gemini_proxy_requests_total", "Requests served, by endpoint, public model and HTTP status.",
            ("endpoint", "model", "status"), registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "gemini_proxy_request_duration_seconds", "Request duration until the last byte, in seconds.",
            ("endpoint", "model"), registry=r, buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.ttft = Histogram(
            "gemini_proxy_time_to_first_token_seconds", "Streams: time until the first content token, in seconds.",
            ("endpoint", "model"), registry=r, buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.tokens = Counter(
            "gemini_proxy_tokens_total", "Tokens by type (OpenAI usage: reasoning is part of completion, cached of prompt).",
            ("model", "type"), registry=r,
        )  # fmt: skip
        self.attempts = Counter(
            "gemini_proxy_upstream_attempts_total", "Upstream attempts by outcome.",
            ("upstream", "outcome"), registry=r,
        )  # fmt: skip
        # livemax: each worker keeps its own key pool; a key Google rate-limits cools in every worker that
        # uses it, so the views agree, and the max answers "how many keys can the gateway still use" (0 =
        # none in any worker).  live*: a dead worker's value disappears instead of lingering.  (liveall would
        # add a pid label, unlike single-process mode; livesum would count each key once per worker.)
        self.credentials = Gauge(
            "gemini_proxy_credentials_available", "Upstream credentials not cooling down (max over workers).",
            ("upstream",), registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.streams = Gauge(
            "gemini_proxy_active_streams", "Streams being served (sum over live workers).",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        # livemin: 0 as soon as one live worker cannot reach it
        self.storage = Gauge(
            "gemini_proxy_storage_up", "1 while the backend answers (min over live workers).",
            ("backend",), registry=r, multiprocess_mode="livemin",
        )  # fmt: skip
        self.signatures = Counter(
            "gemini_proxy_signatures_total", "Thought signatures by outcome.", ("outcome",), registry=r,
        )  # fmt: skip
        self.spend = Counter(
            "gemini_proxy_spend_usd_total", "Cost of the requests of client keys, in USD, by team and public model.",
            ("team", "model"), registry=r,
        )  # fmt: skip
        self.pending = Gauge(
            "gemini_proxy_usage_records_pending", "Usage records not in the database yet: queued + spooled.",
            registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.rate_limited = Counter(
            "gemini_proxy_rate_limited_total", "Requests refused by a key's or team's limit or budget, by kind.",
            ("team", "kind"), registry=r,
        )  # fmt: skip
        self.genai_client_duration = Histogram(
            "gen_ai_client_operation_duration_seconds", "GenAI operation duration (OTel gen_ai.client.operation.duration).",
            (*_GENAI, "error_type"), registry=r, buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.genai_server_duration = Histogram(
            "gen_ai_server_request_duration_seconds", "GenAI request duration (OTel gen_ai.server.request.duration).",
            (*_GENAI, "error_type"), registry=r, buckets=DURATION_BUCKETS,
        )  # fmt: skip
        self.genai_server_ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds", "Time to first token (OTel gen_ai.server.time_to_first_token).",
            _GENAI, registry=r, buckets=SERVER_TTFT_BUCKETS,
        )  # fmt: skip
        self.genai_tokens = Histogram(
            "gen_ai_client_token_usage", "Tokens per operation (OTel gen_ai.client.token.usage).",
            (*_GENAI, "gen_ai_token_type"), registry=r, buckets=TOKEN_BUCKETS,
        )  # fmt: skip


_process_families: _Families | None = None  # multiprocess mode: one set per process (values are per-process files)
_prepared_pid: int | None = None


def _shared_families(path: str) -> _Families:
    global _process_families, _prepared_pid
    if _prepared_pid != os.getpid():
        _prepared_pid = os.getpid()
        sweep_dead_processes(path)
        atexit.register(multiprocess.mark_process_dead, _prepared_pid, path)
    if _process_families is None:
        _process_families = _Families(None)
    return _process_families


def _delta(now: list[float], before: list[float]) -> list[float] | None:
    """What a histogram accumulated since `before` (None: nothing)."""
    if now == before:
        return None
    return [a - b for a, b in zip(now, before, strict=True)]


def _add(child: Any, delta: list[float], total: float) -> None:
    """Add accumulated bucket counts and a sum to a prometheus_client histogram child.

    Uses the child's value objects (`_buckets`: per-bucket, non-cumulative
    counts, `_sum`), as `Histogram.observe` does; tests/observe compare the
    output with `observe()` so a change in prometheus_client shows up there.
    """
    buckets = child._buckets
    for i in range(len(buckets)):
        if delta[i]:
            buckets[i].inc(delta[i])
    child._sum.inc(total)


class _RequestAcc:
    """One request label set: durations (their count is the request count) and stream TTFTs."""

    __slots__ = (
        "children", "dur", "dur_flushed", "labels", "srv", "srv_flushed", "ttft", "ttft_children", "ttft_flushed",
    )

    def __init__(self, labels: tuple[str, str, str, str, str, str, str]) -> None:
        self.labels = labels  # endpoint, model, status, operation, provider, response model, error type
        self.dur = _histogram(DURATION_BUCKETS)
        self.ttft = _histogram(DURATION_BUCKETS)
        self.srv = _histogram(SERVER_TTFT_BUCKETS)  # its sum stays 0: the TTFT sum is `ttft`'s
        self.dur_flushed, self.ttft_flushed, self.srv_flushed = self.dur.copy(), self.ttft.copy(), self.srv.copy()
        self.children: tuple[Any, ...] = ()
        self.ttft_children: tuple[Any, ...] = ()


class _TokenAcc:
    """One token label set: totals per type and the input/output token-usage histograms."""

    __slots__ = ("children", "flushed", "input", "labels", "output", "totals")

    def __init__(self, labels: tuple[str, str, str, str]) -> None:
        self.labels = labels  # model, operation, provider, response model
        self.totals: list[float] = [0, 0, 0, 0]  # prompt, completion, reasoning, cached
        self.input = _histogram(TOKEN_BUCKETS)
        self.output: list[float] | None = None if labels[1] == "embeddings" else _histogram(TOKEN_BUCKETS)
        self.flushed: dict[str, list[float]] = {"totals": [0, 0, 0, 0], "input": self.input.copy()}
        if self.output is not None:
            self.flushed["output"] = self.output.copy()
        self.children: dict[str, Any] = {}


class _Count:
    __slots__ = ("child", "flushed", "labels", "n")

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.n = 0
        self.flushed = 0
        self.child: Any = None


class GatewayMetrics:
    """The gateway's metrics; every method is a cheap no-op when `enabled` is false."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.multiprocess_dir = multiprocess_dir() if enabled else None
        self._registry: CollectorRegistry | None = None
        self._f: _Families | None = None
        # Caches keyed by the call's arguments -> accumulators (shared by argument sets with the same labels).
        self._requests: dict[tuple[str, str, int, str | None, str | None, str | None], _RequestAcc] = {}
        self._tokens: dict[tuple[str, str | None, str | None, str], _TokenAcc] = {}
        self._attempts: dict[tuple[str, str], _Count] = {}
        self._signatures: dict[str, _Count] = {}
        self._rate_limited: dict[tuple[str, str], _Count] = {}
        # Accumulators by label values (what flush() walks).
        self._request_accs: dict[tuple[str, str, str, str, str, str, str], _RequestAcc] = {}
        self._token_accs: dict[tuple[str, str, str, str], _TokenAcc] = {}
        self._credentials: dict[str, int] = {}
        self._credentials_flushed: dict[str, int] = {}
        self._storage: dict[str, int] = {}
        self._storage_flushed: dict[str, int] = {}
        self._streams = 0
        self._streams_flushed = 0
        self._spend: dict[tuple[str, str], list[Any]] = {}  # (team, model) asked -> its accumulator
        self._spend_accs: dict[tuple[str, str], list[Any]] = {}  # labels -> [usd, flushed usd, child, labels]
        self._teams: set[str] = set()
        self._pending = 0
        self._pending_flushed: int | None = None
        self._models: set[str] = set()
        self._lock = threading.Lock()  # flush() only
        self._idle = False  # multiprocess: True while no flush timer is armed
        if not enabled:
            return
        if self.multiprocess_dir:
            self._f = _shared_families(self.multiprocess_dir)
            self._idle = True
            atexit.register(self.flush)
        else:
            self._registry = CollectorRegistry(auto_describe=False)
            self._f = _Families(self._registry)

    # --- recording (hot path) ------------------------------------------------------------------

    def request(
        self,
        endpoint: str,
        model: str,
        status: int,
        duration_s: float,
        ttft_s: float | None,
        *,
        provider: str | None = None,
        response_model: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """One finished request: count, duration, and for streams (`ttft_s` given) the time to first token."""
        if not self.enabled:
            return
        a = self._requests.get((endpoint, model, status, provider, response_model, error_type))
        if a is None:
            a = self._request_acc(endpoint, model, status, provider, response_model, error_type)
        h = a.dur
        h[bisect_left(DURATION_BUCKETS, duration_s)] += 1
        h[-1] += duration_s
        if ttft_s is not None:
            h = a.ttft
            h[bisect_left(DURATION_BUCKETS, ttft_s)] += 1
            h[-1] += ttft_s
            a.srv[bisect_left(SERVER_TTFT_BUCKETS, ttft_s)] += 1
        if self._idle:
            self._arm()

    def tokens(
        self,
        model: str,
        prompt: int,
        completion: int,
        reasoning: int,
        cached: int,
        *,
        provider: str | None = None,
        response_model: str | None = None,
        operation: str = "chat",
    ) -> None:
        """The OpenAI usage figures of one answer (all zero: nothing recorded)."""
        if not self.enabled or not (prompt or completion or reasoning or cached):
            return
        a = self._tokens.get((model, provider, response_model, operation))
        if a is None:
            a = self._token_acc(model, provider, response_model, operation)
        t = a.totals
        t[0] += prompt
        t[1] += completion
        t[2] += reasoning
        t[3] += cached
        h = a.input
        h[bisect_left(TOKEN_BUCKETS, prompt)] += 1
        h[-1] += prompt
        h2 = a.output
        if h2 is not None:
            h2[bisect_left(TOKEN_BUCKETS, completion)] += 1
            h2[-1] += completion
        if self._idle:
            self._arm()

    def upstream_attempt(self, upstream: str, outcome: str) -> None:
        """One call to an upstream; outcome in ok|retry|rate_limited|credentials|error (else ValueError)."""
        if not self.enabled:
            return
        c = self._attempts.get((upstream, outcome))
        if c is None:
            if outcome not in UPSTREAM_OUTCOMES:
                raise ValueError(f"upstream outcome {outcome!r} is not one of {sorted(UPSTREAM_OUTCOMES)}")
            c = self._attempts[(upstream, outcome)] = _Count((upstream, outcome))
        c.n += 1
        if self._idle:
            self._arm()

    def credentials_available(self, upstream: str, count: int) -> None:
        """How many of an upstream's credentials are usable now (not cooling down)."""
        if not self.enabled:
            return
        self._credentials[upstream] = count
        if self._idle:
            self._arm()

    def storage_up(self, backend: str, up: bool) -> None:
        """Whether a storage backend (`database`) answers now."""
        if not self.enabled:
            return
        self._storage[backend] = int(up)
        if self._idle:
            self._arm()

    def spend(self, team: str | None, model: str, usd: float) -> None:
        """The cost of one request of a client key (USD > 0)."""
        if not self.enabled or usd <= 0:
            return
        key = (team or "", model)
        entry = self._spend.get(key)
        if entry is None:
            entry = self._spend_entry(key)
        entry[0] += usd
        if self._idle:
            self._arm()

    def usage_pending(self, count: int) -> None:
        """Usage records not yet in the database (queued + spooled)."""
        if not self.enabled:
            return
        self._pending = count
        if self._idle:
            self._arm()

    def stream_started(self) -> None:
        if self.enabled:
            self._streams += 1
            if self._idle:
                self._arm()

    def stream_ended(self) -> None:
        if self.enabled:
            self._streams -= 1
            if self._idle:
                self._arm()

    def signatures(self, outcome: str, count: int = 1) -> None:
        """Thought signatures handled; outcome in passed|restored|bypass (else ValueError); count 0: nothing."""
        if not self.enabled or count <= 0:
            return
        c = self._signatures.get(outcome)
        if c is None:
            if outcome not in SIGNATURE_OUTCOMES:
                raise ValueError(f"signature outcome {outcome!r} is not one of {sorted(SIGNATURE_OUTCOMES)}")
            c = self._signatures[outcome] = _Count((outcome,))
        c.n += count
        if self._idle:
            self._arm()

    def rate_limited(self, team: str, kind: str) -> None:
        """A request refused by a limit; kind in LIMIT_KINDS (else ValueError); team "" for a key without one."""
        if not self.enabled:
            return
        c = self._rate_limited.get((team, kind))
        if c is None:
            if kind not in LIMIT_KINDS:
                raise ValueError(f"limit kind {kind!r} is not one of {sorted(LIMIT_KINDS)}")
            c = self._rate_limited[(team, kind)] = _Count((team, kind))
        c.n += 1
        if self._idle:
            self._arm()

    # --- exposition ---------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The body and content type for `GET /metrics` (disabled: an empty body)."""
        if not self.enabled:
            return b"", CONTENT_TYPE_LATEST
        self.flush()
        if self.multiprocess_dir:
            sweep_dead_processes(self.multiprocess_dir)
            registry = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        assert self._registry is not None
        return generate_latest(self._registry), CONTENT_TYPE_LATEST

    def flush(self) -> None:
        """Move what was recorded since the last flush into the prometheus_client metrics."""
        f = self._f
        if f is None:
            return
        with self._lock:
            for a in list(self._request_accs.values()):
                self._flush_request(f, a)
            for t in list(self._token_accs.values()):
                self._flush_tokens(f, t)
            for counts, family in (
                (self._attempts, f.attempts), (self._signatures, f.signatures), (self._rate_limited, f.rate_limited)
            ):
                for c in list(counts.values()):
                    n = c.n
                    if n != c.flushed:
                        if c.child is None:
                            c.child = family.labels(*c.labels)
                        c.child.inc(n - c.flushed)
                        c.flushed = n
            for upstream, count in list(self._credentials.items()):
                if self._credentials_flushed.get(upstream) != count:
                    f.credentials.labels(upstream).set(count)
                    self._credentials_flushed[upstream] = count
            for backend, up in list(self._storage.items()):
                if self._storage_flushed.get(backend) != up:
                    f.storage.labels(backend).set(up)
                    self._storage_flushed[backend] = up
            for entry in list(self._spend_accs.values()):
                usd = entry[0]
                if usd != entry[1]:
                    if entry[2] is None:
                        entry[2] = f.spend.labels(*entry[3])
                    entry[2].inc(usd - entry[1])
                    entry[1] = usd
            pending = self._pending
            if pending != self._pending_flushed:
                f.pending.set(pending)
                self._pending_flushed = pending
            streams = self._streams
            if streams != self._streams_flushed:
                f.streams.inc(streams - self._streams_flushed)
                self._streams_flushed = streams

    # --- internals ----------------------------------------------------------------------------

    def _arm(self) -> None:
        """Multiprocess: flush soon, so that other workers' scrapes see this one's figures."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no event loop: write through
            return
        self._idle = False
        loop.call_later(FLUSH_INTERVAL_S, self._timer)

    def _timer(self) -> None:
        self._idle = True
        self.flush()

    def _model(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) >= MODEL_LABEL_LIMIT:
            return OTHER
        self._models.add(model)
        return model

    def _spend_entry(self, key: tuple[str, str]) -> list[Any]:
        team, model = key
        if team and team not in self._teams:
            if len(self._teams) >= TEAM_LABEL_LIMIT:
                team = "other"
            else:
                self._teams.add(team)
        labels = (team, self._model(model))
        entry = self._spend_accs.get(labels)
        if entry is None:
            entry = self._spend_accs[labels] = [0.0, 0.0, None, labels]
        if labels == key:  # else over a label limit: not cached, memory stays bounded
            self._spend[key] = entry
        return entry

    def _request_acc(
        self, endpoint: str, model: str, status: int, provider: str | None, response_model: str | None, error_type: str | None
    ) -> _RequestAcc:
        m, rm = self._model(model), self._model(response_model) if response_model else ""
        err = error_type or (str(status) if status >= 400 else "")
        labels = (endpoint, m, str(status), operation_name(endpoint), provider_name(provider), rm, err)
        a = self._request_accs.get(labels)
        if a is None:
            a = self._request_accs[labels] = _RequestAcc(labels)
        if m == model and rm == (response_model or ""):  # else over the model limit: not cached, memory stays bounded
            self._requests[(endpoint, model, status, provider, response_model, error_type)] = a
        return a

    def _token_acc(self, model: str, provider: str | None, response_model: str | None, operation: str) -> _TokenAcc:
        m, rm = self._model(model), self._model(response_model) if response_model else ""
        labels = (m, operation, provider_name(provider), rm)
        a = self._token_accs.get(labels)
        if a is None:
            a = self._token_accs[labels] = _TokenAcc(labels)
        if m == model and rm == (response_model or ""):
            self._tokens[(model, provider, response_model, operation)] = a
        return a

    @staticmethod
    def _flush_request(f: _Families, a: _RequestAcc) -> None:
        endpoint, m, status, op, prov, rm, err = a.labels
        now = a.dur.copy()
        delta = _delta(now, a.dur_flushed)
        if delta is not None:
            if not a.children:
                a.children = (
                    f.requests.labels(endpoint, m, status),
                    f.duration.labels(endpoint, m),
                    f.genai_client_duration.labels(op, prov, m, rm, err),
                    f.genai_server_duration.labels(op, prov, m, rm, err),
                )
            count, *histograms = a.children
            count.inc(sum(delta[:-1]))
            for child in histograms:
                _add(child, delta, delta[-1])
            a.dur_flushed = now
        now, srv = a.ttft.copy(), a.srv.copy()
        delta = _delta(now, a.ttft_flushed)
        srv_delta = _delta(srv, a.srv_flushed)
        if delta is not None and srv_delta is not None:
            if not a.ttft_children:
                a.ttft_children = (f.ttft.labels(endpoint, m), f.genai_server_ttft.labels(op, prov, m, rm))
            _add(a.ttft_children[0], delta, delta[-1])
            _add(a.ttft_children[1], srv_delta, delta[-1])
            a.ttft_flushed, a.srv_flushed = now, srv

    @staticmethod
    def _flush_tokens(f: _Families, a: _TokenAcc) -> None:
        m, op, prov, rm = a.labels
        flushed, children = a.flushed, a.children
        totals = a.totals.copy()
        if totals != flushed["totals"]:
            for kind, n, before in zip(TOKEN_TYPES, totals, flushed["totals"], strict=True):
                if n != before:
                    if kind not in children:
                        children[kind] = f.tokens.labels(m, kind)
                    children[kind].inc(n - before)
            flushed["totals"] = totals
        for kind, h in (("input", a.input), ("output", a.output)):
            if h is None:
                continue
            now = h.copy()
            delta = _delta(now, flushed[kind])
            if delta is not None:
                if kind not in children:
                    children[kind] = f.genai_tokens.labels(op, prov, m, rm, kind)
                _add(children[kind], delta, delta[-1])
                flushed[kind] = now
