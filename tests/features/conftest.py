"""Fixtures of the issue-3 feature tests.

* `storeless_gateway` / `storeless_client` / `storeless_async_client`: a gateway
  whose signature store remembers nothing (`signatures.cache_size: 0`), so a
  tool loop through it can only succeed without a bypass if the client sent
  every thought signature back itself (`extra_content`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from gateway_harness import FakeGemini, GatewayServer, gateway_settings


@pytest.fixture(scope="session")
def storeless_gateway(fake_gemini: FakeGemini) -> Iterator[GatewayServer]:
    server = GatewayServer(gateway_settings(fake_gemini.url, signatures={"cache_size": 0}))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def storeless_client(storeless_gateway: GatewayServer, fake: FakeGemini) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=storeless_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture
async def storeless_async_client(storeless_gateway: GatewayServer, fake: FakeGemini) -> Any:
    async with openai.AsyncOpenAI(
        base_url=storeless_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30
    ) as c:
        yield c
