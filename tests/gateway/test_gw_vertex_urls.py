"""Vertex AI URL forms (docs/gemini-facts.md#urls) and the Gemini API's, as `Endpoint` builds them."""

from __future__ import annotations

import pytest

from app.gateway.routing import gemini_model_id
from app.upstream.client import Endpoint, vertex_host

PATH = "/v1/projects/my-proj/locations/{loc}/publishers/google/models/gemini-2.5-flash"


@pytest.mark.parametrize(
    ("location", "host"),
    [
        ("us-central1", "https://us-central1-aiplatform.googleapis.com"),
        ("europe-west4", "https://europe-west4-aiplatform.googleapis.com"),
        ("asia-northeast1", "https://asia-northeast1-aiplatform.googleapis.com"),
        ("global", "https://aiplatform.googleapis.com"),
        ("us", "https://aiplatform.us.rep.googleapis.com"),
        ("eu", "https://aiplatform.eu.rep.googleapis.com"),
    ],
)
def test_vertex_hosts_per_location(location: str, host: str) -> None:
    assert vertex_host(location) == host
    endpoint = Endpoint.vertex("my-proj", location)
    assert endpoint.kind == "vertex"
    assert endpoint.generate_url("gemini-2.5-flash") == host + PATH.format(loc=location) + ":generateContent"
    assert (
        endpoint.stream_url("gemini-2.5-flash")
        == host + PATH.format(loc=location) + ":streamGenerateContent?alt=sse"
    )


def test_vertex_base_url_override_keeps_project_and_location() -> None:
    endpoint = Endpoint.vertex("p1", "europe-west1", "http://127.0.0.1:9999/")
    assert endpoint.generate_url("gemini-3-pro-preview") == (
        "http://127.0.0.1:9999/v1/projects/p1/locations/europe-west1/publishers/google/models/"
        "gemini-3-pro-preview:generateContent"
    )
    # A private endpoint (Private Service Connect) for the global location: no host guessing at all.
    psc = Endpoint.vertex("p1", "global", "https://aiplatform-psc.p.googleapis.com")
    assert psc.stream_url("m").startswith("https://aiplatform-psc.p.googleapis.com/v1/projects/p1/locations/global/")


def test_vertex_api_version_is_configurable() -> None:
    endpoint = Endpoint.vertex("p", "us-east5", version="v1beta1")
    assert endpoint.generate_url("m") == (
        "https://us-east5-aiplatform.googleapis.com/v1beta1/projects/p/locations/us-east5/publishers/google/models/m"
        ":generateContent"
    )


def test_gemini_api_urls() -> None:
    endpoint = Endpoint.gemini()
    assert endpoint.generate_url("gemini-2.5-flash") == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert endpoint.stream_url("gemini-2.5-flash").endswith("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert Endpoint.gemini("http://localhost:1/", "v1").generate_url("x") == "http://localhost:1/v1/models/x:generateContent"
    # The key never goes into a URL.
    assert "key=" not in endpoint.stream_url("m") and "key=" not in endpoint.models_url()


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("google/gemini-2.5-flash", "gemini-2.5-flash"),  # how Vertex's OpenAI layer spells it
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini/gemini-2.5-pro", "gemini-2.5-pro"),
        ("publishers/google/models/gemini-3-pro-preview", "gemini-3-pro-preview"),
        ("gemini-2.0-flash", "gemini-2.0-flash"),
    ],
)
def test_model_id_prefixes_are_stripped(name: str, model: str) -> None:
    assert gemini_model_id(name) == model


@pytest.mark.parametrize(
    "base, expected",
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/v1beta/models/m:generateContent"),
        ("http://127.0.0.1:9000/", "http://127.0.0.1:9000/v1beta/models/m:generateContent"),
        ("http://127.0.0.1:9000/v1beta", "http://127.0.0.1:9000/v1beta/models/m:generateContent"),
        ("http://127.0.0.1:9000/v1/", "http://127.0.0.1:9000/v1/models/m:generateContent"),
        ("https://proxy.example/gemini", "https://proxy.example/gemini/v1beta/models/m:generateContent"),
    ],
)
def test_gemini_base_url_may_carry_its_api_version(base: str, expected: str) -> None:
    assert Endpoint.gemini(base).generate_url("m") == expected


def test_vertex_base_url_may_carry_its_api_version() -> None:
    url = Endpoint.vertex("p", "us-central1", "http://127.0.0.1:9000/v1beta1").generate_url("m")
    assert url == "http://127.0.0.1:9000/v1beta1/projects/p/locations/us-central1/publishers/google/models/m:generateContent"
