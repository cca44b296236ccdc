"""`app/observe/metrics.py`: what `GatewayMetrics` records, read back from `render()` with
prometheus_client's own parser; the disabled no-op mode; and multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`) with recorder subprocesses and a third one rendering.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from app.observe import metrics as metrics_module
from app.observe.metrics import (
    DURATION_BUCKETS,
    SERVER_TTFT_BUCKETS,
    TOKEN_BUCKETS,
    GatewayMetrics,
    operation_name,
    provider_name,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(body: bytes) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for n, labels in samples if n == name]


def bucket(samples: Samples, name: str, le: float | str, **labels: str) -> float | None:
    le_text = le if isinstance(le, str) else _go_float(le)
    return value(samples, name + "_bucket", le=le_text, **labels)


def _go_float(v: float) -> str:
    return str(floatToGoString(v))  # how prometheus_client writes a bucket bound


CHAT = {"endpoint": "chat.completions", "model": "flash"}
GENAI_OK = {
    "gen_ai_operation_name": "chat",
    "gen_ai_provider_name": "gcp.gemini",
    "gen_ai_request_model": "flash",
    "gen_ai_response_model": "gemini-3.5-flash",
}


def record_mix(m: GatewayMetrics) -> None:
    """3 chat requests (1 stream) + 2 failures + 1 embeddings request, tokens, attempts, gauges."""
    m.request("chat.completions", "flash", 200, 0.5, None, provider="gemini", response_model="gemini-3.5-flash")
    m.request("chat.completions", "flash", 200, 3.0, 0.3, provider="gcp.gemini", response_model="gemini-3.5-flash")
    m.request("chat.completions", "flash", 200, 100.0, None, provider="gemini", response_model="gemini-3.5-flash")
    m.request("chat.completions", "flash", 429, 0.01, None, provider="vertex", error_type="rate_limited")
    m.request("chat.completions", "pro", 503, 1.0, None)
    m.request("embeddings", "embed", 200, 0.2, None, provider="gemini")
    m.tokens("flash", 100, 50, 20, 40, provider="gemini", response_model="gemini-3.5-flash")
    m.tokens("flash", 300, 10, 0, 0, provider="gemini", response_model="gemini-3.5-flash")
    m.tokens("embed", 7, 0, 0, 0, provider="gemini", operation="embeddings")
    m.tokens("flash", 0, 0, 0, 0)  # nothing known: nothing recorded
    for outcome in ("ok", "ok", "retry", "rate_limited"):
        m.upstream_attempt("studio", outcome)
    m.upstream_attempt("vertex", "credentials")
    m.credentials_available("studio", 4)
    m.credentials_available("studio", 3)
    m.credentials_available("vertex", 1)
    for _ in range(3):
        m.stream_started()
    m.stream_ended()
    m.signatures("passed", 3)
    m.signatures("restored")
    m.signatures("bypass", 0)  # zero: nothing


def test_known_mix_exact_counts_and_sums() -> None:
    m = GatewayMetrics()
    record_mix(m)
    body, content_type = m.render()
    assert content_type == CONTENT_TYPE_LATEST
    s = parse(body)

    # gemini_proxy_requests_total{endpoint,model,status}
    assert value(s, "gemini_proxy_requests_total", **CHAT, status="200") == 3
    assert value(s, "gemini_proxy_requests_total", **CHAT, status="429") == 1
    assert value(s, "gemini_proxy_requests_total", endpoint="chat.completions", model="pro", status="503") == 1
    assert value(s, "gemini_proxy_requests_total", endpoint="embeddings", model="embed", status="200") == 1
    assert len(series(s, "gemini_proxy_requests_total")) == 4

    # duration histogram, OTel duration buckets
    name = "gemini_proxy_request_duration_seconds"
    assert value(s, name + "_count", **CHAT) == 4
    assert value(s, name + "_sum", **CHAT) == pytest.approx(0.5 + 3.0 + 100.0 + 0.01)
    assert bucket(s, name, 0.01, **CHAT) == 1  # le is inclusive
    assert bucket(s, name, 0.64, **CHAT) == 2
    assert bucket(s, name, 5.12, **CHAT) == 3
    assert bucket(s, name, 81.92, **CHAT) == 3
    assert bucket(s, name, "+Inf", **CHAT) == 4
    les = {labels["le"] for labels in series(s, name + "_bucket")}
    assert les == {_go_float(b) for b in DURATION_BUCKETS} | {"+Inf"}

    # TTFT: only the stream
    name = "gemini_proxy_time_to_first_token_seconds"
    assert series(s, name + "_count") == [CHAT]
    assert value(s, name + "_count", **CHAT) == 1
    assert value(s, name + "_sum", **CHAT) == pytest.approx(0.3)
    assert bucket(s, name, 0.16, **CHAT) == 0
    assert bucket(s, name, 0.32, **CHAT) == 1

    # OTel duration under both names; error_type "" (absent) on success, given or the status on failure
    for name in ("gen_ai_client_operation_duration_seconds", "gen_ai_server_request_duration_seconds"):
        assert value(s, name + "_count", **GENAI_OK, error_type="") == 3
        assert value(s, name + "_sum", **GENAI_OK, error_type="") == pytest.approx(103.5)
        assert bucket(s, name, 1.28, **GENAI_OK, error_type="") == 1
        failed = dict(GENAI_OK, gen_ai_provider_name="gcp.vertex_ai", gen_ai_response_model="")
        assert value(s, name + "_count", **failed, error_type="rate_limited") == 1
        unknown = dict(failed, gen_ai_provider_name="gcp.gen_ai", gen_ai_request_model="pro")
        assert value(s, name + "_count", **unknown, error_type="503") == 1
        emb = dict(unknown, gen_ai_operation_name="embeddings", gen_ai_provider_name="gcp.gemini", gen_ai_request_model="embed")
        assert value(s, name + "_count", **emb, error_type="") == 1
        assert len(series(s, name + "_count")) == 4

    # OTel TTFT, server TTFT buckets
    name = "gen_ai_server_time_to_first_token_seconds"
    assert series(s, name + "_count") == [GENAI_OK]
    assert value(s, name + "_sum", **GENAI_OK) == pytest.approx(0.3)
    assert bucket(s, name, 0.25, **GENAI_OK) == 0
    assert bucket(s, name, 0.5, **GENAI_OK) == 1
    les = {labels["le"] for labels in series(s, name + "_bucket")}
    assert les == {_go_float(b) for b in SERVER_TTFT_BUCKETS} | {"+Inf"}

    # tokens_total{model,type}: zero increments leave no series
    tokens = "gemini_proxy_tokens_total"
    assert value(s, tokens, model="flash", type="prompt") == 400
    assert value(s, tokens, model="flash", type="completion") == 60
    assert value(s, tokens, model="flash", type="reasoning") == 20
    assert value(s, tokens, model="flash", type="cached") == 40
    assert value(s, tokens, model="embed", type="prompt") == 7
    assert len(series(s, tokens)) == 5

    # gen_ai_client_token_usage: input = prompt, output = completion; embeddings input only
    usage = "gen_ai_client_token_usage"
    assert value(s, usage + "_count", **GENAI_OK, gen_ai_token_type="input") == 2
    assert value(s, usage + "_sum", **GENAI_OK, gen_ai_token_type="input") == 400
    assert bucket(s, usage, 256, **GENAI_OK, gen_ai_token_type="input") == 1
    assert bucket(s, usage, 1024, **GENAI_OK, gen_ai_token_type="input") == 2
    assert value(s, usage + "_count", **GENAI_OK, gen_ai_token_type="output") == 2
    assert value(s, usage + "_sum", **GENAI_OK, gen_ai_token_type="output") == 60
    assert bucket(s, usage, 16, **GENAI_OK, gen_ai_token_type="output") == 1
    emb = dict(GENAI_OK, gen_ai_operation_name="embeddings", gen_ai_request_model="embed", gen_ai_response_model="")
    assert value(s, usage + "_sum", **emb, gen_ai_token_type="input") == 7
    assert value(s, usage + "_count", **emb, gen_ai_token_type="output") is None
    assert len(series(s, usage + "_count")) == 3
    les = {labels["le"] for labels in series(s, usage + "_bucket")}
    assert les == {_go_float(b) for b in TOKEN_BUCKETS} | {"+Inf"}

    attempts = "gemini_proxy_upstream_attempts_total"
    assert value(s, attempts, upstream="studio", outcome="ok") == 2
    assert value(s, attempts, upstream="studio", outcome="retry") == 1
    assert value(s, attempts, upstream="studio", outcome="rate_limited") == 1
    assert value(s, attempts, upstream="vertex", outcome="credentials") == 1
    assert len(series(s, attempts)) == 4

    assert value(s, "gemini_proxy_credentials_available", upstream="studio") == 3
    assert value(s, "gemini_proxy_credentials_available", upstream="vertex") == 1
    assert value(s, "gemini_proxy_active_streams") == 2
    assert value(s, "gemini_proxy_signatures_total", outcome="passed") == 3
    assert value(s, "gemini_proxy_signatures_total", outcome="restored") == 1
    assert value(s, "gemini_proxy_signatures_total", outcome="bypass") is None


def test_repeated_renders_are_cumulative_and_instances_independent() -> None:
    a, b = GatewayMetrics(), GatewayMetrics()
    record_mix(a)
    first = parse(a.render()[0])
    assert parse(a.render()[0]) == first  # a flush with nothing new changes nothing
    record_mix(a)
    b.request("chat.completions", "flash", 200, 1.0, None)
    s = parse(a.render()[0])
    for key, v in first.items():
        name = key[0]
        if name == "gemini_proxy_credentials_available":
            assert s[key] == v
        elif name == "gemini_proxy_active_streams":
            assert s[key] == 4
        else:
            assert s[key] == pytest.approx(2 * v), key
    other = parse(b.render()[0])
    assert value(other, "gemini_proxy_requests_total", **CHAT, status="200") == 1
    assert value(other, "gemini_proxy_active_streams") == 0
    assert len(series(other, "gemini_proxy_requests_total")) == 1


def _observations(bounds: tuple[float, ...], integers: bool) -> list[float]:
    """Every bound, just below and above it, zero and far beyond the last one."""
    if integers:
        return [0, *bounds, *(b + 1 for b in bounds), *(b - 1 for b in bounds if b > 1), 10**9]
    return [0.0, *bounds, *(math.nextafter(b, 0) for b in bounds), *(b * 1.5 for b in bounds), 1e9]


@pytest.mark.parametrize("kind", ["duration", "ttft", "tokens"])
def test_histograms_match_prometheus_observe(kind: str) -> None:
    """Accumulating then flushing must expose exactly what `Histogram.observe` would (buckets, count, sum)."""
    m = GatewayMetrics()
    registry = CollectorRegistry()
    if kind == "duration":
        name, bounds, labels = "gemini_proxy_request_duration_seconds", DURATION_BUCKETS, CHAT
    elif kind == "ttft":
        name, bounds, labels = "gen_ai_server_time_to_first_token_seconds", SERVER_TTFT_BUCKETS, GENAI_OK
    else:
        name, bounds = "gen_ai_client_token_usage", TOKEN_BUCKETS
        labels = dict(GENAI_OK, gen_ai_token_type="input")
    reference = Histogram(name, "x", tuple(labels), registry=registry, buckets=bounds).labels(**labels)
    for v in _observations(bounds, integers=kind == "tokens"):
        reference.observe(v)
        if kind == "duration":
            m.request("chat.completions", "flash", 200, v, None)
        elif kind == "ttft":
            m.request("chat.completions", "flash", 200, 1.0, v, provider="gemini", response_model="gemini-3.5-flash")
        else:
            m.tokens("flash", int(v), 1, 0, 0, provider="gemini", response_model="gemini-3.5-flash")
        if v == bounds[3]:
            m.flush()  # flushing in between changes nothing

    def pick(samples: Samples) -> Samples:
        return {k: v for k, v in samples.items() if k[0].startswith(name) and labels.items() <= dict(k[1]).items()}

    want, got = pick(parse(generate_latest(registry))), pick(parse(m.render()[0]))
    assert got.keys() == want.keys()
    for key, v in want.items():
        assert got[key] == pytest.approx(v), key


def test_disabled_is_a_no_op() -> None:
    m = GatewayMetrics(enabled=False)
    record_mix(m)
    m.upstream_attempt("studio", "not-an-outcome")  # not even validated
    m.flush()
    assert m.render() == (b"", CONTENT_TYPE_LATEST)
    assert m._f is None and m._registry is None
    assert not m._requests and not m._tokens and not m._attempts


def test_bad_outcomes_raise() -> None:
    m = GatewayMetrics()
    with pytest.raises(ValueError, match="upstream outcome"):
        m.upstream_attempt("studio", "timeout")
    with pytest.raises(ValueError, match="signature outcome"):
        m.signatures("dropped")


def test_model_label_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MODEL_LABEL_LIMIT", 3)
    m = GatewayMetrics()
    for i in range(10):
        m.request("chat.completions", f"m{i}", 404, 0.01, None)
        m.tokens(f"m{i}", 1, 1, 0, 0)
    s = parse(m.render()[0])
    models = sorted(labels["model"] for labels in series(s, "gemini_proxy_requests_total"))
    assert models == ["_OTHER", "m0", "m1", "m2"]
    assert value(s, "gemini_proxy_requests_total", endpoint="chat.completions", model="_OTHER", status="404") == 7
    assert value(s, "gemini_proxy_tokens_total", model="_OTHER", type="prompt") == 7
    assert len(m._requests) == 3 and len(m._tokens) == 3  # the argument caches stay bounded too


def test_label_helpers() -> None:
    assert operation_name("chat.completions") == "chat"
    assert operation_name("/v1/chat/completions") == "chat"
    assert operation_name("embeddings") == "embeddings"
    assert operation_name("/v1/completions") == "text_completion"
    assert operation_name("models/gemini:streamGenerateContent") == "generate_content"
    assert operation_name("generate_content") == "generate_content"
    assert operation_name("responses") == "chat"
    assert operation_name("models") == "models"
    assert provider_name(None) == "gcp.gen_ai"
    assert provider_name("gemini") == "gcp.gemini"
    assert provider_name("vertex") == "gcp.vertex_ai"
    assert provider_name("gcp.vertex_ai") == "gcp.vertex_ai"


def test_cli_metrics_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from app.cli import _shared_metrics_dir

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with _shared_metrics_dir():
        path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        assert os.path.isdir(path) and not os.listdir(path)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ and not os.path.exists(path)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # the operator's choice is kept
    with _shared_metrics_dir():
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path)
    assert tmp_path.is_dir()


# --- multiprocess mode ------------------------------------------------------------------------

RECORDER = textwrap.dedent(
    """
    import asyncio, sys
    from app.observe.metrics import GatewayMetrics, FLUSH_INTERVAL_S

    m = GatewayMetrics()
    assert m.multiprocess_dir, "not in multiprocess mode"
    requests, streams, credentials, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

    def record():
        for i in range(requests):
            m.request("chat.completions", "flash", 200, 0.5, 0.1 if i == 0 else None, provider="gemini")
            m.tokens("flash", 10, 5, 0, 0, provider="gemini")
        m.upstream_attempt("studio", "ok")
        m.credentials_available("studio", credentials)
        for _ in range(streams):
            m.stream_started()

    if mode == "async":  # flushed by the timer, as in a uvicorn worker
        async def main():
            record()
            await asyncio.sleep(FLUSH_INTERVAL_S + 0.3)
        asyncio.run(main())
    else:  # no event loop: written through
        record()
    print("ready", flush=True)
    sys.stdin.readline()  # exit normally (atexit marks this pid dead) when the test says so
    """
)

RENDERER = textwrap.dedent(
    """
    import sys
    from app.observe.metrics import GatewayMetrics
    sys.stdout.buffer.write(GatewayMetrics().render()[0])
    """
)


@pytest.fixture
def multiproc_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def recorders(multiproc_env: dict[str, str]) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                stream.close()


def start_recorder(env: dict[str, str], procs: list[subprocess.Popen[str]], *args: Any) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", RECORDER, *map(str, args)],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    procs.append(p)
    return p


def wait_ready(p: subprocess.Popen[str]) -> None:
    assert p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        _, err = p.communicate(timeout=10)
        raise AssertionError(f"recorder failed: {line!r}\n{err}")


def render_elsewhere(env: dict[str, str]) -> Samples:
    done = subprocess.run([sys.executable, "-c", RENDERER], env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return parse(done.stdout)


def test_multiprocess_sums_counters_and_live_gauges(multiproc_env: dict[str, str], recorders: list[subprocess.Popen[str]]) -> None:
    sync = start_recorder(multiproc_env, recorders, 3, 2, 5, "sync")
    timer = start_recorder(multiproc_env, recorders, 4, 1, 2, "async")
    wait_ready(sync)
    wait_ready(timer)

    s = render_elsewhere(multiproc_env)
    assert value(s, "gemini_proxy_requests_total", **CHAT, status="200") == 7
    assert value(s, "gemini_proxy_request_duration_seconds_count", **CHAT) == 7
    assert value(s, "gemini_proxy_request_duration_seconds_sum", **CHAT) == pytest.approx(3.5)
    assert bucket(s, "gemini_proxy_request_duration_seconds", 0.32, **CHAT) == 0
    assert bucket(s, "gemini_proxy_request_duration_seconds", 0.64, **CHAT) == 7
    assert value(s, "gemini_proxy_time_to_first_token_seconds_count", **CHAT) == 2
    genai = dict(GENAI_OK, gen_ai_response_model="")
    assert value(s, "gen_ai_server_request_duration_seconds_count", **genai, error_type="") == 7
    assert value(s, "gen_ai_server_time_to_first_token_seconds_count", **genai) == 2
    assert value(s, "gemini_proxy_tokens_total", model="flash", type="prompt") == 70
    assert value(s, "gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="output") == 35
    assert value(s, "gemini_proxy_upstream_attempts_total", upstream="studio", outcome="ok") == 2
    assert value(s, "gemini_proxy_active_streams") == 3  # livesum
    assert value(s, "gemini_proxy_credentials_available", upstream="studio") == 5  # livemax
    assert not any("pid" in dict(labels) for _, labels in s)

    # A worker that exits normally marks itself dead: its live gauges go, its counts stay.
    assert sync.stdin is not None
    sync.stdin.close()
    assert sync.wait(30) == 0
    directory = Path(multiproc_env["PROMETHEUS_MULTIPROC_DIR"])
    assert not list(directory.glob(f"gauge_live*_{sync.pid}.db"))  # by the worker itself, at exit
    assert list(directory.glob(f"counter_{sync.pid}.db"))
    s = render_elsewhere(multiproc_env)
    assert value(s, "gemini_proxy_active_streams") == 1
    assert value(s, "gemini_proxy_credentials_available", upstream="studio") == 2
    assert value(s, "gemini_proxy_requests_total", **CHAT, status="200") == 7

    # A worker that is killed is swept at the next scrape.
    timer.send_signal(signal.SIGKILL)
    timer.wait(30)
    s = render_elsewhere(multiproc_env)
    assert value(s, "gemini_proxy_active_streams") in (None, 0)
    assert value(s, "gemini_proxy_credentials_available", upstream="studio") is None
    assert value(s, "gemini_proxy_requests_total", **CHAT, status="200") == 7
    assert value(s, "gemini_proxy_tokens_total", model="flash", type="completion") == 35
    gauge_files = sorted(p.name for p in directory.glob("gauge_live*"))
    assert all(str(sync.pid) not in f and str(timer.pid) not in f for f in gauge_files), gauge_files
