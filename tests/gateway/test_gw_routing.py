"""Several upstreams and routes: priority and weight, aliases, passthrough, capability overrides.

Unit tests drive `Router` with a seeded rng; end-to-end tests check the order
the gateway really calls upstreams in (the fake records every call), fall-back
to the next target, per-route capability overrides and `GET /v1/models`.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import httpx
import openai
import pytest

from app.errors import ModelNotFound
from app.gateway.routing import Router
from app.gateway.upstreams import Upstream
from app.settings import Settings, load_settings
from app.upstream.client import Endpoint

from .gw_support import FAST_RETRY, directive, gemini, msg, oai, vertex


def _settings(**overrides: Any) -> Settings:
    overrides.setdefault(
        "upstreams",
        [
            {"name": "ai", "type": "gemini", "api_keys": ["k1"]},
            {"name": "vx", "type": "vertex", "project": "p", "location": "us-central1"},
            {"name": "vx2", "type": "vertex", "project": "p2", "location": "europe-west4"},
        ],
    )
    return load_settings(overrides=overrides, environ={})


def _upstreams(settings: Settings) -> list[Upstream]:
    out = []
    for u in settings.upstreams:
        endpoint = Endpoint.vertex(u.project or "", u.location) if u.type == "vertex" else Endpoint.gemini()
        out.append(Upstream(u.name, u.type, endpoint, []))
    return out


def _router(seed: int = 1, **overrides: Any) -> Router:
    settings = _settings(**overrides)
    return Router(settings, _upstreams(settings), rng=random.Random(seed).random)


def _labels(targets: list[Any]) -> list[str]:
    return [t.label for t in targets]


def test_priority_decides_the_order_whatever_the_weights() -> None:
    router = _router(
        models=[
            {
                "name": "smart",
                "targets": [
                    {"upstream": "ai", "model": "gemini-2.5-flash", "priority": 2, "weight": 100},
                    {"upstream": "vx", "model": "google/gemini-2.5-pro", "priority": 0},
                    {"upstream": "vx2", "model": "gemini-2.5-pro", "priority": 1, "weight": 50},
                ],
            }
        ]
    )
    for _ in range(50):
        assert _labels(router.resolve("smart")) == ["vx/gemini-2.5-pro", "vx2/gemini-2.5-pro", "ai/gemini-2.5-flash"]


def test_weights_spread_load_within_a_priority() -> None:
    router = _router(
        seed=42,
        models=[
            {
                "name": "spread",
                "targets": [
                    {"upstream": "ai", "model": "gemini-2.5-flash", "weight": 3},
                    {"upstream": "vx", "model": "gemini-2.5-flash", "weight": 1},
                    {"upstream": "vx2", "model": "gemini-2.5-pro", "priority": 5},
                ],
            }
        ],
    )
    n = 8000
    firsts: Counter[str] = Counter()
    for _ in range(n):
        order = _labels(router.resolve("spread"))
        assert sorted(order[:2]) == ["ai/gemini-2.5-flash", "vx/gemini-2.5-flash"]  # every target stays a fall-back
        assert order[2] == "vx2/gemini-2.5-pro"
        firsts[order[0]] += 1
    share = firsts["ai/gemini-2.5-flash"] / n
    assert abs(share - 0.75) < 0.02, share  # sd ~0.005


def test_equal_weights_are_even_and_seeded_order_is_reproducible() -> None:
    route = [{"name": "even", "targets": [{"upstream": u, "model": "m"} for u in ("ai", "vx", "vx2")]}]
    router = _router(seed=7, models=route)
    n = 6000
    firsts = Counter(router.resolve("even")[0].upstream.name for _ in range(n))
    for name in ("ai", "vx", "vx2"):
        assert abs(firsts[name] / n - 1 / 3) < 0.03, firsts
    a, b = _router(seed=3, models=route), _router(seed=3, models=route)
    assert [_labels(a.resolve("even")) for _ in range(20)] == [_labels(b.resolve("even")) for _ in range(20)]


def test_aliases_point_at_routes_or_models_and_passthrough_strips_prefixes() -> None:
    router = _router(
        models=[{"name": "smart", "targets": [{"upstream": "vx", "model": "gemini-2.5-pro"}]}],
        aliases={"gpt-4o": "smart", "fast": "google/gemini-2.5-flash", "smart": "ignored-because-route-wins"},
    )
    assert _labels(router.resolve("gpt-4o")) == ["vx/gemini-2.5-pro"]
    assert _labels(router.resolve("smart")) == ["vx/gemini-2.5-pro"]
    # An alias to a model: every upstream, in configured order (the first serves, the others are fall-backs).
    assert _labels(router.resolve("fast")) == ["ai/gemini-2.5-flash", "vx/gemini-2.5-flash", "vx2/gemini-2.5-flash"]
    assert _labels(router.resolve("models/gemini-2.0-flash")) == [
        "ai/gemini-2.0-flash", "vx/gemini-2.0-flash", "vx2/gemini-2.0-flash"
    ]
    assert _labels(router.resolve("google/smart")) == ["vx/gemini-2.5-pro"]
    assert set(router.public_names()) == {"smart", "gpt-4o", "fast"}


def test_without_passthrough_only_configured_names_resolve() -> None:
    router = _router(
        passthrough=False,
        models=[{"name": "smart", "targets": [{"model": "gemini-2.5-pro"}]}],  # default upstream: the first
    )
    assert _labels(router.resolve("smart")) == ["ai/gemini-2.5-pro"]
    with pytest.raises(ModelNotFound):
        router.resolve("gemini-2.5-flash")


def test_capabilities_route_overrides_beat_patterns_beat_defaults() -> None:
    router = _router(
        models=[
            {"name": "cheap", "targets": [{"upstream": "ai", "model": "gemini-2.5-flash"}],
             "capabilities": {"reasoning_effort": {"high": 512}, "drop_params": ["temperature"]}},
        ],
        capabilities={"gemini-2.5-*": {"json_schema": False}},
    )
    cheap = router.resolve("cheap")[0].capabilities
    plain = router.resolve("gemini-2.5-flash")[0].capabilities
    assert cheap.reasoning_effort == {"high": 512} and cheap.drop_params == frozenset({"temperature"})
    assert cheap.json_schema is False and plain.json_schema is False  # from the pattern
    assert plain.reasoning_effort == {} and plain.drop_params == frozenset()
    assert plain.thinking == "budget"  # the built-in default stays


def test_unknown_upstream_in_a_route_is_a_config_error() -> None:
    from app.settings import ConfigError

    with pytest.raises(ConfigError) as info:
        _settings(models=[{"name": "x", "targets": [{"upstream": "nope", "model": "m"}]}])
    assert "models[0].targets[0].upstream" in str(info.value) and "nope" in str(info.value)


# ---------------------------------------------------------------- end to end


def test_fallback_order_follows_priority_end_to_end(make_gateway, fake, sa_file) -> None:
    gw = make_gateway(
        upstreams=[gemini("ai", fake.url, "test-key"), vertex("vx", fake.url, sa_file, project="proj-down")],
        models=[
            {
                "name": "smart",
                "targets": [
                    {"upstream": "ai", "model": "gemini-2.5-flash", "priority": 1},
                    {"upstream": "vx", "model": "google/gemini-2.5-pro", "priority": 0},
                ],
            }
        ],
        retry=FAST_RETRY,
    )
    prompt = "route me\n" + directive(fail_projects={"proj-down": {"status": 503}})
    with oai(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="smart", messages=msg(prompt))
    answer = raw.parse()
    assert answer.model == "smart"
    assert answer.choices[0].message.content == "Echo: route me"
    assert raw.headers["x-gemini-proxy-target"] == "ai/gemini-2.5-flash"
    assert raw.headers["x-gemini-proxy-attempts"] == "4"
    calls = [r for r in fake.requests() if r["backend"] != "oauth"]
    assert [(c["backend"], c["model"], c["status"]) for c in calls] == [
        ("vertex", "gemini-2.5-pro", 503),
        ("vertex", "gemini-2.5-pro", 503),
        ("vertex", "gemini-2.5-pro", 503),
        ("gemini", "gemini-2.5-flash", 200),
    ]


def test_broken_vertex_credentials_fall_back_to_the_next_target(make_gateway, fake, tmp_path, caplog) -> None:
    from app.testing.credentials import write_service_account_file

    broken = write_service_account_file(tmp_path / "broken.json", fake.url + "/no-token-here")
    gw = make_gateway(
        upstreams=[vertex("vx", fake.url, broken), gemini("ai", fake.url, "test-key")],
        models=[{"name": "smart", "targets": [{"upstream": "vx", "model": "gemini-2.5-pro", "priority": 0},
                                               {"upstream": "ai", "model": "gemini-2.5-flash", "priority": 1}]}],
        retry=FAST_RETRY,
    )
    with oai(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="smart", messages=msg("save me"))
        streamed = client.chat.completions.create(model="smart", messages=msg("and me"), stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert raw.parse().choices[0].message.content == "Echo: save me" and text == "Echo: and me"
    assert raw.headers["x-gemini-proxy-target"] == "ai/gemini-2.5-flash"
    assert [(r["backend"], r["status"]) for r in fake.requests() if r["backend"] != "oauth"] == [("gemini", 200)] * 2
    assert any("could not be refreshed" in r.getMessage() for r in caplog.records)


def test_a_target_lacking_the_model_falls_back_at_once(make_gateway, fake) -> None:
    gw = make_gateway(
        upstreams=[gemini("ai", fake.url, "test-key")],
        models=[{"name": "m", "targets": [{"model": "gemini-9-ultra", "priority": 0}, {"model": "gemini-2.0-flash", "priority": 1}]}],
        retry=FAST_RETRY,
    )
    with oai(gw) as client:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=msg("x"))
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model="gemini-9-ultra", messages=msg("x"))
    assert raw.headers["x-gemini-proxy-target"] == "ai/gemini-2.0-flash"
    assert raw.headers["x-gemini-proxy-attempts"] == "2"
    assert info.value.body["code"] == "model_not_found"
    assert [(c["model"], c["status"]) for c in fake.requests()] == [
        ("gemini-9-ultra", 404), ("gemini-2.0-flash", 200), ("gemini-9-ultra", 404)
    ]


def test_weighted_route_spreads_real_requests(make_gateway, fake) -> None:
    gw = make_gateway(
        upstreams=[gemini("a", fake.url, "test-key"), gemini("b", fake.url, "second-key")],
        models=[{"name": "spread", "targets": [{"upstream": "a", "model": "gemini-2.0-flash", "weight": 3},
                                                {"upstream": "b", "model": "gemini-2.0-flash", "weight": 1}]}],
    )
    n = 120
    served: Counter[str] = Counter()
    with oai(gw) as client:
        for i in range(n):
            raw = client.chat.completions.with_raw_response.create(model="spread", messages=msg(f"{i}"))
            served[raw.headers["x-gemini-proxy-target"]] += 1
    keys = Counter(r["api_key"] for r in fake.requests())
    assert keys == {"test-key": served["a/gemini-2.0-flash"], "second-key": served["b/gemini-2.0-flash"]}
    assert 70 <= served["a/gemini-2.0-flash"] <= 108, served  # expected 90, sd ~4.7


def test_route_capability_overrides_shape_the_request(make_gateway, fake) -> None:
    gw = make_gateway(
        upstreams=[gemini("ai", fake.url, "test-key")],
        models=[{"name": "cheap", "targets": [{"model": "gemini-2.5-flash"}],
                 "capabilities": {"reasoning_effort": {"high": 512}, "drop_params": ["temperature"]}}],
    )
    with oai(gw) as client:
        client.chat.completions.create(model="cheap", messages=msg("a"), reasoning_effort="high", temperature=0.3)
        client.chat.completions.create(model="gemini-2.5-flash", messages=msg("b"), reasoning_effort="high", temperature=0.3)
    cheap, plain = (r["body"]["generationConfig"] for r in fake.requests())
    assert cheap == {"thinkingConfig": {"thinkingBudget": 512}}
    assert plain == {"temperature": 0.3, "thinkingConfig": {"thinkingBudget": 24576}}


def test_models_endpoint_lists_routes_aliases_and_upstream_models(make_gateway, fake, sa_file) -> None:
    gw = make_gateway(
        upstreams=[gemini("ai", fake.url, "test-key"), vertex("vx", fake.url, sa_file)],
        models=[{"name": "smart", "targets": [{"upstream": "vx", "model": "gemini-2.5-pro"}]}],
        aliases={"gpt-4o-mini": "gemini-2.5-flash"},
    )
    closed = make_gateway(
        upstreams=[gemini("ai", fake.url, "test-key")],
        models=[{"name": "smart", "targets": [{"model": "gemini-2.5-pro"}]}],
        aliases={"fast": "smart"},
        passthrough=False,
    )
    with oai(gw) as client:
        listed = {m.id: m.owned_by for m in client.models.list()}
        assert client.models.retrieve("smart").id == "smart"
        assert client.models.retrieve("models/gemini-2.5-flash").id == "models/gemini-2.5-flash"
        embedding = client.models.retrieve("gemini-embedding-001")  # listed by Google for embedContent only
        assert embedding.model_extra["endpoints"] == ["embeddings"]
        assert client.models.retrieve("smart").model_extra["endpoints"] == ["chat"]
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gemini-9-ultra")
    assert listed["smart"] == "gemini-proxy" and listed["gpt-4o-mini"] == "gemini-proxy"
    assert listed["gemini-2.5-flash"] == "google" and listed["gemini-3-pro-preview"] == "google"
    assert listed["gemini-embedding-001"] == "google" and listed["text-embedding-005"] == "google"  # Vertex's
    with oai(closed) as client:
        assert sorted(m.id for m in client.models.list()) == ["fast", "smart"]
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gemini-2.5-flash", messages=msg("not routed"))
        assert client.chat.completions.create(model="fast", messages=msg("routed")).choices[0].message.content == "Echo: routed"
    keys = {r.get("api_key") for r in fake.requests() if r["path"].endswith("/models") and r["backend"] == "gemini"}
    assert keys == {"test-key"}
    vertex_listings = [r for r in fake.requests() if r["path"].endswith("/publishers/google/models")]
    assert len(vertex_listings) == 1 and vertex_listings[0]["token"]


def test_models_endpoint_lists_vertex_models(make_gateway, fake, sa_file) -> None:
    """A Vertex-only gateway lists the Gemini models of Vertex's publisher-model list (with its token)."""
    gw = make_gateway(upstreams=[vertex("vx", fake.url, sa_file)])
    with oai(gw) as client:
        listed = [m.id for m in client.models.list()]
        assert client.models.retrieve("google/gemini-2.5-pro").id == "google/gemini-2.5-pro"
    assert "gemini-2.5-flash" in listed and "gemini-3-pro-preview" in listed
    assert {"gemini-embedding-001", "text-embedding-005"} <= set(listed)  # Vertex's embedding models too
    listing = [r for r in fake.requests() if r["path"].endswith("/publishers/google/models")]
    assert len(listing) == 1 and listing[0]["path"].startswith("/v1beta1/") and listing[0]["token"]


@pytest.mark.parametrize("name", ["../../v1beta/models/gemini-2.5-pro", "gemini-2.5-flash/../x", "a b", "models/x:y"])
def test_a_model_name_is_never_a_path_upstream(make_gateway, fake, name) -> None:
    """A passthrough name goes into Google's URL: one that could leave `models/` is refused, and Google is not called."""
    gw = make_gateway()
    r = httpx.post(gw.url + "/v1/chat/completions", json={"model": name, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    assert fake.requests() == []


def test_requests_to_google_are_sent_as_json(gateway, fake) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert fake.requests()[-1]["headers"].get("content-type", "").startswith("application/json")


def test_requests_to_google_say_who_sends_them_once(gateway, fake) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    assert fake.requests()[-1]["headers"].get("user-agent") == "gemini-proxy"


@pytest.mark.anyio
async def test_a_cookie_google_sets_is_never_sent_back() -> None:
    """One upstream session serves every client: a cookie set on one answer must not ride on the next request."""
    from aiohttp import web

    from app.upstream.client import Timeouts, UpstreamClient

    seen: list[dict[str, str]] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append({"cookie": request.headers.get("cookie", ""), "user-agent": ",".join(request.headers.getall("user-agent", []))})
        response = web.json_response({"ok": True})
        response.set_cookie("session", "from-google", path="/")
        return response

    app = web.Application()
    app.router.add_post("/v1beta/models/{rest}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = UpstreamClient(Timeouts(connect=5, first_byte=5, total=10, stream_idle=5))
    await client.start()
    try:
        url = f"http://localhost:{port}/v1beta/models/m:generateContent"  # a host name: cookies from an IP are never kept
        for _ in range(2):
            assert await client.post_json(url, b"{}", {"x-goog-api-key": "k"}) == {"ok": True}
    finally:
        await client.close()
        await runner.cleanup()
    assert seen == [{"cookie": "", "user-agent": "gemini-proxy"}] * 2
