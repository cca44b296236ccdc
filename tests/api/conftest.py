"""Fixtures of the end-to-end API tests (tests/api/).

* `strict_gateway` (session): a gateway in front of the fake that never
  retries (`retry.max_attempts: 1`), an alias `gpt-4o-mini` ->
  `gemini-2.5-flash`, a short keep-alive interval and a small request limit,
  so that error and framing tests see exactly one upstream attempt, fast.
* `strict_client` / `strict_async_client`: the openai SDK pointed at it.
* `raw` / `strict_raw`: httpx clients for checks of bytes, headers and bodies.

Helpers (directives, SSE parsing, error-shape checks) are in api_helpers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway_harness import FakeGemini, GatewayServer, gateway_settings

STRICT_LIMIT = 64 * 1024
STRICT_KEEPALIVE = 0.2


@pytest.fixture(scope="session")
def strict_gateway(fake_gemini: FakeGemini) -> Iterator[GatewayServer]:
    server = GatewayServer(
        gateway_settings(
            fake_gemini.url,
            retry={"max_attempts": 1, "malformed_function_call": 0},
            aliases={"gpt-4o-mini": "gemini-2.5-flash"},
            server={"keepalive_seconds": STRICT_KEEPALIVE, "max_request_bytes": STRICT_LIMIT},
        )
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def strict_client(strict_gateway: GatewayServer, fake: FakeGemini) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=strict_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture
async def strict_async_client(strict_gateway: GatewayServer, fake: FakeGemini) -> Any:
    async with openai.AsyncOpenAI(base_url=strict_gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture
def raw(gateway: GatewayServer, fake: FakeGemini) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        yield c


@pytest.fixture
def strict_raw(strict_gateway: GatewayServer, fake: FakeGemini) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=strict_gateway.url, timeout=30) as c:
        yield c
