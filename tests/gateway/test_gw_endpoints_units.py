"""`for_endpoint`: a route keeps the targets whose model serves the endpoint; none is a 400 naming `model`."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequest
from app.gateway.routing import Target, for_endpoint
from app.gateway.upstreams import Upstream
from app.translate.capabilities import capabilities_for
from app.upstream.client import Endpoint

UPSTREAM = Upstream("u", "gemini", Endpoint.gemini("http://x"), [])


def target(model: str) -> Target:
    return Target(UPSTREAM, model, capabilities_for(model))


def test_targets_that_serve_the_endpoint_are_kept_as_they_are() -> None:
    targets = [target("gemini-2.5-flash"), target("gemini-2.5-pro")]
    assert for_endpoint(targets, "chat", "m") is targets


def test_a_mixed_route_keeps_only_the_targets_that_serve_the_endpoint() -> None:
    chat, embed = target("gemini-2.5-flash"), target("gemini-embedding-001")
    assert for_endpoint([chat, embed], "embeddings", "mixed") == [embed]
    assert for_endpoint([chat, embed], "chat", "mixed") == [chat]


@pytest.mark.parametrize(
    "model, endpoint, says",
    [
        ("gemini-embedding-001", "chat", "is an embedding model: use it with POST /v1/embeddings, not with POST /v1/chat/completions"),
        ("gemini-2.5-flash", "embeddings", "is a chat model: use it with POST /v1/chat/completions, not with POST /v1/embeddings"),
    ],
)
def test_a_model_that_does_not_serve_the_endpoint_is_a_400_naming_model(model: str, endpoint: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        for_endpoint([target(model)], endpoint, "public-name")
    assert caught.value.param == "model" and caught.value.code == "model_not_supported"
    assert caught.value.message == f"The model `public-name` {says}."
