"""Observability of the request pipeline: request ids, 405s, metrics, the access log.

* `x-request-id` on every answer (generated `req_...`, or the client's when sane),
  in every error message, and in every log line written for the request;
* `GET` on a POST-only route: 405 in OpenAI's error shape with `allow: POST`;
* `/metrics` after a known mix of requests: exact counts (a fresh gateway);
  `server.metrics: false` turns the route off;
* the access log of the real CLI (`python -m app serve` in a subprocess, in
  front of the fake Gemini): one JSON (or `text`) line per request with the
  documented fields, the principal's name and never a secret; `off` writes none.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cli_gateway import CliGateway, clean_env
from prometheus_client.parser import text_string_to_metric_families

from app.observe.access_log import RequestIdFilter
from gateway_harness import FakeGemini, GatewayServer, gateway_settings

from .api_helpers import assert_openai_error, data_events, say

GENERATED_ID = re.compile(r"^req_[0-9a-f]{30}$")
CLIENT_KEY = "sk-obs-client-secret-3141"
FAST_RETRY = {"max_attempts": 3, "backoff_initial": 0.01, "backoff_max": 0.05, "max_retry_delay": 2}
ACCESS_FIELDS = {
    "time", "request_id", "method", "path", "status", "model", "upstream", "served_model", "attempts", "latency_ms",
    "ttft_ms", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens", "principal", "error_code",
}


def _auth(key: str = CLIENT_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _chat(text: str, model: str = "gemini-2.5-flash", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


# -- x-request-id ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_gateway(fake_gemini: FakeGemini) -> Iterator[GatewayServer]:
    """A gateway that wants a client key (named), retries fast, passthrough on."""
    server = GatewayServer(
        gateway_settings(fake_gemini.url, auth={"client_keys": [{"name": "team-obs", "key": CLIENT_KEY}]}, retry=FAST_RETRY)
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def keyed(keyed_gateway: GatewayServer, fake: FakeGemini) -> GatewayServer:
    return keyed_gateway


def test_every_answer_carries_a_generated_request_id(keyed) -> None:
    answers: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=keyed.url, timeout=30) as http:
        answers["chat"] = http.post("/v1/chat/completions", json=_chat("hi"), headers=_auth())
        answers["stream"] = http.post("/v1/chat/completions", json=_chat("hi", stream=True), headers=_auth())
        answers["400"] = http.post("/v1/chat/completions", content=b"{", headers=_auth())
        answers["401"] = http.post("/v1/chat/completions", json=_chat("hi"), headers=_auth("sk-wrong"))
        answers["404-model"] = http.post("/v1/chat/completions", json=_chat("hi", model="no-such-model"), headers=_auth())
        answers["404-url"] = http.get("/v1/no-such-route", headers=_auth())
        answers["405"] = http.get("/v1/chat/completions", headers=_auth())
        answers["models"] = http.get("/v1/models", headers=_auth())
        answers["models-401"] = http.get("/v1/models")
        answers["healthz"] = http.get("/healthz")
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {"chat": 200, "stream": 200, "400": 400, "401": 401, "404-model": 404, "404-url": 404,
                        "405": 405, "models": 200, "models-401": 401, "healthz": 200}
    assert answers["stream"].headers["content-type"].startswith("text/event-stream")
    assert data_events(answers["stream"].content)[-1] == "[DONE]"
    ids = {name: r.headers.get("x-request-id", "") for name, r in answers.items()}
    for name, request_id in ids.items():
        assert GENERATED_ID.match(request_id), (name, request_id)
    assert len(set(ids.values())) == len(ids), "a new id for every request"
    for name, response in answers.items():
        if response.status_code >= 400:
            err = assert_openai_error(response, response.status_code)
            assert err["message"].endswith(f"(request id {ids[name]})"), (name, err["message"])


@pytest.mark.parametrize(
    "sent", ["trace-42", "a.b:c/d+e=f_g-H9", "x" * 128, "0af7651916cd43dd8448eb211c80319c"],
    ids=["simple", "every-allowed-char", "128-chars", "hex"],
)
def test_a_sane_client_request_id_is_echoed(keyed, sent: str) -> None:
    with httpx.Client(base_url=keyed.url, timeout=30) as http:
        ok = http.post("/v1/chat/completions", json=_chat("hi"), headers={**_auth(), "x-request-id": sent})
        bad = http.post("/v1/chat/completions", content=b"{", headers={**_auth(), "x-request-id": sent})
        health = http.get("/healthz", headers={"x-request-id": sent})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == sent
    assert health.headers["x-request-id"] == sent
    assert bad.headers["x-request-id"] == sent
    assert bad.json()["error"]["message"].endswith(f"(request id {sent})")


@pytest.mark.parametrize(
    "sent", ["x" * 129, "has space", "semi;colon", "quote\"d", "<script>", "new\tline", "caf\xc3\xa9".encode("latin-1"), ""],
    ids=["too-long", "space", "semicolon", "quote", "angle-brackets", "tab", "non-ascii", "empty"],
)
def test_an_insane_client_request_id_is_replaced(keyed, sent: str | bytes) -> None:
    raw = sent if isinstance(sent, bytes) else sent.encode("latin-1")
    with httpx.Client(base_url=keyed.url, timeout=30) as http:
        ok = http.post("/v1/chat/completions", json=_chat("hi"), headers=[("authorization", f"Bearer {CLIENT_KEY}"),
                                                                           ("x-request-id", raw)])
        bad = http.post("/v1/chat/completions", content=b"{", headers=[("authorization", f"Bearer {CLIENT_KEY}"),
                                                                        ("x-request-id", raw)])
        models = http.get("/v1/models", headers=[("authorization", f"Bearer {CLIENT_KEY}"), ("x-request-id", raw)])
    for response in (ok, bad, models):
        request_id = response.headers["x-request-id"]
        assert GENERATED_ID.match(request_id), request_id
        assert request_id.encode() != raw
    assert bad.json()["error"]["message"].endswith(f"(request id {bad.headers['x-request-id']})")
    assert ok.status_code == 200 and models.status_code == 200


class _Collect(logging.Handler):
    """A handler with the gateway's `RequestIdFilter`, as `configure_logging` installs it on its handler."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_log_lines_carry_the_request_id_of_their_request(keyed, fake, caplog) -> None:
    """Two requests with retries, at the same time: each log line names its own request."""
    caplog.set_level(logging.INFO)
    collect = _Collect()
    logging.getLogger().addHandler(collect)

    def ask(model: str, request_id: str) -> httpx.Response:
        prompt = "slow retry\n#fake " + json.dumps(
            {"fail_times": 1, "fail_key": f"log-{model}", "error": {"status": 503, "retry_delay": "0.5s"}})
        with httpx.Client(base_url=keyed.url, timeout=30) as http:
            return http.post("/v1/chat/completions", json=_chat(prompt, model=model),
                             headers={**_auth(), "x-request-id": request_id})

    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            one = pool.submit(ask, "gemini-2.5-flash", "trace-one")
            two = pool.submit(ask, "gemini-2.0-flash", "trace-two")
            responses = [one.result(), two.result()]
        logging.getLogger("gemini_proxy.test").info("outside any request")
    finally:
        logging.getLogger().removeHandler(collect)
    assert [r.status_code for r in responses] == [200, 200]
    assert [r.headers["x-gemini-proxy-attempts"] for r in responses] == ["2", "2"]
    times = sorted(r["time"] for r in fake.requests() if r.get("model"))
    assert times[1] - times[0] < 0.45, "the second request started before the first one's retry: they overlapped"
    by_target: dict[str, set[str]] = {"fake/gemini-2.5-flash": set(), "fake/gemini-2.0-flash": set()}
    for record in collect.records:
        message = record.getMessage()
        for target, seen in by_target.items():
            if target in message:
                seen.add(record.request_id)  # type: ignore[attr-defined]
    assert by_target == {"fake/gemini-2.5-flash": {"trace-one"}, "fake/gemini-2.0-flash": {"trace-two"}}
    outside = [r for r in collect.records if r.getMessage() == "outside any request"]
    assert outside and outside[0].request_id == "-"  # type: ignore[attr-defined]


# -- 405 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_non_post_method_on_chat_is_405_in_openais_shape(keyed, path: str, method: str) -> None:
    response = httpx.request(method, keyed.url + path, headers=_auth(), timeout=30)
    err = assert_openai_error(response, 405, code="method_not_allowed", type="invalid_request_error", param=None)
    assert response.headers["allow"] == "POST"
    assert method in err["message"] and "POST" in err["message"]
    assert err["message"].endswith(f"(request id {response.headers['x-request-id']})")


# -- metrics ----------------------------------------------------------------------------------------------


class Scrape:
    """One `GET /metrics`, parsed with prometheus_client's own parser."""

    def __init__(self, url: str) -> None:
        response = httpx.get(url + "/metrics", timeout=10)
        assert response.status_code == 200, response.text
        self.samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]
        self.names = {s.name for s in self.samples}

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` with these labels (0 when none)."""
        return sum(s.value for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def series(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [(s.labels, s.value) for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def test_metrics_count_a_known_mix_of_requests_exactly(make_gateway, fake) -> None:
    gw = make_gateway(
        auth={"client_keys": [{"name": "team-metrics", "key": CLIENT_KEY}]},
        retry=FAST_RETRY,
        passthrough=False,
        models=[{"name": "gemini-2.5-flash", "targets": [{"model": "gemini-2.5-flash"}]}],
    )
    model = "gemini-2.5-flash"
    usages = []
    with openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30) as client:
        for i in range(3):
            usages.append(client.chat.completions.create(model=model, messages=say(f"plain answer number {i}")).usage)
        for i in range(2):
            chunks = list(client.chat.completions.create(
                model=model, messages=say(f"a streamed answer with a few more words {i}"), stream=True,
                stream_options={"include_usage": True}))
            assert chunks[-1].usage is not None and not chunks[-1].choices
            usages.append(chunks[-1].usage)
        with pytest.raises(openai.InternalServerError) as unavailable:
            client.chat.completions.create(model=model, messages=say("x", error={"status": 503}))
        assert unavailable.value.status_code == 503
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="no-such-model", messages=say("x"))
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-not-a-client-key", max_retries=0, timeout=30) as wrong:
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model=model, messages=say("x"))

    prompt = sum(u.prompt_tokens for u in usages)
    completion = sum(u.completion_tokens for u in usages)
    reasoning = sum((u.completion_tokens_details.reasoning_tokens or 0) if u.completion_tokens_details else 0 for u in usages)
    assert prompt > 0 and completion > 0 and reasoning > 0  # gemini-2.5-flash thinks by default

    m = Scrape(gw.url)
    # requests, by endpoint, model and status
    assert m.value("gemini_proxy_requests_total", endpoint="chat", model=model, status="200") == 5
    assert m.value("gemini_proxy_requests_total", endpoint="chat", model=model, status="503") == 1
    assert m.value("gemini_proxy_requests_total", endpoint="chat", status="404") == 1
    assert m.value("gemini_proxy_requests_total", endpoint="chat", model="", status="401") == 1  # refused before the body
    assert m.value("gemini_proxy_requests_total", endpoint="chat") == 8
    assert m.value("gemini_proxy_request_duration_seconds_count", endpoint="chat") == 8
    # tokens: exactly what the SDK was told
    assert m.value("gemini_proxy_tokens_total", model=model, type="prompt") == prompt
    assert m.value("gemini_proxy_tokens_total", model=model, type="completion") == completion
    assert m.value("gemini_proxy_tokens_total", model=model, type="reasoning") == reasoning
    assert m.value("gemini_proxy_tokens_total", model=model, type="cached") == 0
    assert m.value("gemini_proxy_tokens_total") == prompt + completion + reasoning
    # upstream attempts: 5 ok; the 503 was tried 3 times (2 retries, then given up); nothing else called Google
    attempts = {labels["outcome"]: value for labels, value in m.series("gemini_proxy_upstream_attempts_total", upstream="fake")}
    assert {k: v for k, v in attempts.items() if v} == {"ok": 5, "retry": 2, "error": 1}
    assert len([r for r in fake.requests() if r.get("model")]) == 8
    # streams
    assert m.value("gemini_proxy_time_to_first_token_seconds_count", endpoint="chat", model=model) == 2
    assert m.value("gemini_proxy_time_to_first_token_seconds_count") == 2
    assert "gemini_proxy_active_streams" in m.names and m.value("gemini_proxy_active_streams") == 0
    assert m.value("gemini_proxy_credentials_available", upstream="fake") == 1
    # the OpenTelemetry GenAI names
    for name in ("gen_ai_client_token_usage_count", "gen_ai_server_request_duration_seconds_count",
                 "gen_ai_client_operation_duration_seconds_count", "gen_ai_server_time_to_first_token_seconds_count"):
        assert name in m.names, name
    assert m.value("gen_ai_server_request_duration_seconds_count", gen_ai_operation_name="chat") == 8
    assert m.value("gen_ai_client_operation_duration_seconds_count", gen_ai_operation_name="chat") == 8
    assert m.value("gen_ai_server_request_duration_seconds_count", gen_ai_provider_name="gcp.gemini", error_type="") == 5
    failed = {labels["error_type"]: value for labels, value in m.series("gen_ai_server_request_duration_seconds_count")
              if labels["error_type"]}
    assert failed == {"server_error": 1, "not_found_error": 1, "invalid_request_error": 1}  # (the 401: OpenAI's type)
    assert m.value("gen_ai_server_time_to_first_token_seconds_count", gen_ai_operation_name="chat") == 2
    assert m.value("gen_ai_client_token_usage_sum", gen_ai_token_type="input") == prompt
    assert m.value("gen_ai_client_token_usage_sum", gen_ai_token_type="output") == completion
    assert m.value("gen_ai_client_token_usage_count", gen_ai_token_type="input") == 5


def test_a_stream_answered_early_is_active_until_it_ends_however_it_ends(make_gateway, fake) -> None:
    """A stream whose 200 and keep-alives went out before Google answered counts in active_streams from its first
    keep-alive, and stops counting when it completes, and when its client leaves before Google ever answered."""
    gw = make_gateway(server={"keepalive_seconds": 0.2})

    def active(expected: float) -> float:
        deadline = time.monotonic() + 5
        while (seen := Scrape(gw.url).value("gemini_proxy_active_streams")) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return seen

    def late(delay_ms: int) -> dict[str, Any]:
        return {"model": "gemini-2.5-flash", "stream": True, "messages": say("late", first_byte_delay_ms=delay_ms)}

    with httpx.Client(base_url=gw.url, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json=late(3000)) as r:
            pieces = r.iter_raw()
            assert next(pieces).startswith(b": keep-alive")
            assert active(1) == 1
        assert fake.wait_for(lambda s: s["active_requests"] == 0, timeout=5)["active_requests"] == 0
        assert active(0) == 0  # the client left before Google answered
        r = client.post("/v1/chat/completions", json=late(600))
        assert r.content.startswith(b": keep-alive") and r.content.endswith(b"data: [DONE]\n\n")
        assert active(0) == 0


def test_metrics_off_is_a_404(make_gateway, fake) -> None:
    gw = make_gateway(server={"metrics": False})
    response = httpx.get(gw.url + "/metrics", timeout=10)
    err = assert_openai_error(response, 404)
    assert GENERATED_ID.match(response.headers["x-request-id"])
    assert err["message"].endswith(f"(request id {response.headers['x-request-id']})")
    assert httpx.get(gw.url + "/healthz", timeout=10).status_code == 200


# -- the access log of the real CLI ------------------------------------------------------------------------

UPSTREAM_KEY = "AIzaSy-obs-upstream-secret-2718"
WRONG_KEY = "sk-obs-wrong-secret-1618"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ \[([^\]]+)\]: ")


@pytest.fixture
def serve_cli(tmp_path: Path, fake):
    started: list[CliGateway] = []
    fake.config(api_keys=[UPSTREAM_KEY])

    def start(access_log: str | None = None, env: dict[str, str] | None = None) -> CliGateway:
        config = (
            "server:\n"
            + (f"  access_log: {access_log}\n" if access_log else "")
            + "  keepalive_seconds: 5\n"
            "auth:\n"
            "  client_keys:\n"
            f"    - name: team-alpha\n      key: {CLIENT_KEY}\n"
            "upstreams:\n"
            f"  - name: fk\n    base_url: {fake.url}\n    api_keys: ['{UPSTREAM_KEY}']\n"
            "retry:\n  max_attempts: 2\n  backoff_initial: 0.01\n  backoff_max: 0.02\n"
        )
        workdir = tmp_path / f"gw{len(started)}"
        served = CliGateway(workdir, clean_env(**(env or {})), config=config, apart=True)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop(strict=True)


def _traffic(url: str) -> dict[str, Any]:
    """ok, stream, 401, 404, an upstream 503 (retried), healthz; returns request ids and what the SDK saw."""
    seen: dict[str, Any] = {}
    with openai.OpenAI(base_url=url + "/v1", api_key=CLIENT_KEY, max_retries=0, timeout=30) as client:
        raw = client.chat.completions.with_raw_response.create(model="gemini-2.5-flash", messages=say("hello log"))
        seen["ok"] = (raw.headers["x-request-id"], raw.parse().usage)
        raw = client.chat.completions.with_raw_response.create(
            model="gemini-2.5-flash", messages=say("stream to the log please"), stream=True,
            stream_options={"include_usage": True})
        chunks = list(raw.parse())
        seen["stream"] = (raw.headers["x-request-id"], chunks[-1].usage)
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="no-such-model", messages=say("x"))
        seen["404"] = (missing.value.response.headers["x-request-id"], None)
        with pytest.raises(openai.InternalServerError) as down:
            client.chat.completions.create(model="gemini-2.5-flash", messages=say("x", error={"status": 503}),
                                           extra_headers={"x-request-id": "trace-upstream-down"})
        assert down.value.response.headers["x-request-id"] == "trace-upstream-down"
        seen["503"] = ("trace-upstream-down", None)
    with openai.OpenAI(base_url=url + "/v1", api_key=WRONG_KEY, max_retries=0, timeout=30) as wrong:
        with pytest.raises(openai.AuthenticationError) as refused:
            wrong.chat.completions.create(model="gemini-2.5-flash", messages=say("x"))
        seen["401"] = (refused.value.response.headers["x-request-id"], None)
    health = httpx.get(url + "/healthz", timeout=10)
    seen["healthz"] = (health.headers["x-request-id"], None)
    return seen


def _assert_no_secret(served: CliGateway) -> None:
    everything = served.stderr() + served.stdout()
    for secret in (CLIENT_KEY, UPSTREAM_KEY, WRONG_KEY):
        assert secret not in everything, secret


@pytest.mark.parametrize("how", ["default", "env"])
def test_the_json_access_log_has_one_line_per_request_and_no_secret(serve_cli, fake, how: str) -> None:
    if how == "default":
        served = serve_cli()  # no access_log setting: json
    else:
        served = serve_cli(access_log="off", env={"GEMINI_PROXY_SERVER__ACCESS_LOG": "json"})  # env beats the file
    seen = _traffic(served.url)
    assert served.stop(strict=True) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    stderr = served.stderr()
    lines: list[dict[str, Any]] = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
        else:  # nothing else but log lines and the banner
            assert LOG_LINE.match(line) or line.startswith("gemini-proxy "), line
    assert lines, stderr
    assert not any(line.startswith("{") for line in served.stdout().splitlines())
    for entry in lines:
        assert set(entry) == ACCESS_FIELDS, entry
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", entry["time"]), entry["time"]
        assert isinstance(entry["latency_ms"], (int, float)) and entry["latency_ms"] >= 0
    by_id: dict[str, list[dict[str, Any]]] = {}
    for entry in lines:
        by_id.setdefault(entry["request_id"], []).append(entry)
    assert all(len(v) == 1 for v in by_id.values()), "one line per request"
    chat_lines = [e for e in lines if e["path"] == "/v1/chat/completions"]
    assert len(chat_lines) == 5  # ok, stream, 404, 503, 401
    log = {name: by_id[request_id][0] for name, (request_id, _) in seen.items()}

    ok, usage = log["ok"], seen["ok"][1]
    assert (ok["method"], ok["path"], ok["status"], ok["model"], ok["upstream"], ok["served_model"], ok["attempts"]) == (
        "POST", "/v1/chat/completions", 200, "gemini-2.5-flash", "fk", "gemini-2.5-flash", 1)
    assert ok["principal"] == "team-alpha" and ok["error_code"] is None and ok["ttft_ms"] is None
    assert (ok["prompt_tokens"], ok["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert ok["reasoning_tokens"] == usage.completion_tokens_details.reasoning_tokens
    assert ok["cached_tokens"] == 0

    stream, usage = log["stream"], seen["stream"][1]
    assert stream["status"] == 200 and stream["principal"] == "team-alpha" and stream["error_code"] is None
    assert (stream["prompt_tokens"], stream["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert stream["ttft_ms"] is not None and 0 < stream["ttft_ms"] <= stream["latency_ms"]

    missing = log["404"]
    assert (missing["status"], missing["model"], missing["error_code"], missing["attempts"]) == (
        404, "no-such-model", "model_not_found", 1)

    down = log["503"]
    assert (down["status"], down["attempts"], down["upstream"], down["principal"]) == (503, 2, "fk", "team-alpha")  # (the upstream that answered last)

    refused = log["401"]
    assert (refused["status"], refused["error_code"], refused["principal"], refused["attempts"]) == (
        401, "invalid_api_key", "anonymous", 0)

    health = log["healthz"]
    assert (health["method"], health["path"], health["status"], health["model"]) == ("GET", "/healthz", 200, None)

    # the log lines written while serving the failing request name it
    retried = [line for line in stderr.splitlines() if "attempt 1 failed" in line or "request failed after" in line]
    assert len(retried) == 2, stderr
    assert all(LOG_LINE.match(line).group(2) == "trace-upstream-down" for line in retried), retried  # type: ignore[union-attr]
    _assert_no_secret(served)


def test_the_text_access_log_is_key_value_lines(serve_cli, fake) -> None:
    served = serve_cli(env={"GEMINI_PROXY_SERVER__ACCESS_LOG": "text"})
    seen = _traffic(served.url)
    served.stop(strict=True)
    stderr = served.stderr()
    assert not any(line.startswith("{") for line in stderr.splitlines())
    entries = []
    for line in stderr.splitlines():
        if line.startswith("time="):
            pairs = dict(part.split("=", 1) for part in line.split(" "))
            assert set(pairs) == ACCESS_FIELDS, line
            entries.append(pairs)
    by_id = {e["request_id"]: e for e in entries}
    assert len(by_id) == len(entries), "one line per request"
    ok = by_id[seen["ok"][0]]
    assert (ok["status"], ok["model"], ok["upstream"], ok["principal"], ok["error_code"], ok["ttft_ms"]) == (
        "200", "gemini-2.5-flash", "fk", "team-alpha", "-", "-")
    assert ok["prompt_tokens"] == str(seen["ok"][1].prompt_tokens)
    assert by_id[seen["401"][0]]["status"] == "401" and by_id[seen["401"][0]]["principal"] == "anonymous"
    assert by_id[seen["404"][0]]["error_code"] == "model_not_found"
    assert len([e for e in entries if e["path"] == "/v1/chat/completions"]) == 5
    _assert_no_secret(served)


def test_the_access_log_off_writes_no_line(serve_cli, fake) -> None:
    served = serve_cli(access_log="off")
    seen = _traffic(served.url)
    served.stop(strict=True)
    stderr = served.stderr()
    assert all(GENERATED_ID.match(seen[name][0]) for name in ("ok", "stream", "404", "401", "healthz"))
    assert not any(line.startswith(("{", "time=")) for line in stderr.splitlines()), stderr
    assert all(request_id not in stderr for name, (request_id, _) in seen.items() if name != "503")
    assert "[trace-upstream-down]" in stderr, "ordinary log lines are still written"
    _assert_no_secret(served)


def test_alembic_plugin_lines_are_left_out_and_its_migration_lines_kept(capsys) -> None:
    from app.logs import configure_logging

    root = logging.getLogger()
    saved = list(root.handlers), root.level
    plugins = logging.getLogger("alembic.runtime.plugins")
    try:
        configure_logging("info")
        plugins.info("setup plugin %s", "alembic.autogenerate.schemas")
        logging.getLogger("alembic.runtime.migration").info("Running upgrade 0002 -> 0003")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        plugins.setLevel(logging.NOTSET)
    err = capsys.readouterr().err
    assert "Running upgrade 0002 -> 0003" in err and "setup plugin" not in err
