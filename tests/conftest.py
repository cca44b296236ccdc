"""Fixtures shared by the gateway's tests.

* `fake_gemini` (session): the project's fake Gemini server on a background
  loop, keys `test-key` / `second-key`; `fake` resets it for each test.
* `gateway` (session): the real gateway app served by uvicorn over real HTTP,
  one upstream (the fake); `make_gateway(**settings)` starts a differently
  configured one for a single test.
* `client` / `async_client`: the official openai SDK pointed at `gateway`
  (no SDK retries, so every failure is seen as it happened).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from app.testing.fake_gemini import FakeOptions, start_fake
from gateway_harness import TEST_KEYS, FakeGemini, GatewayServer, LoopThread, gateway_settings


@pytest.fixture(scope="session")
def fake_gemini() -> Iterator[FakeGemini]:
    runner = LoopThread("fake-gemini")
    running = runner.run(start_fake(FakeOptions(api_keys=TEST_KEYS, seed=11, stall_timeout_s=30)))
    admin = FakeGemini(running.url)
    try:
        yield admin
    finally:
        admin.http.close()
        runner.run(running.close())
        runner.stop()


@pytest.fixture
def fake(fake_gemini: FakeGemini) -> FakeGemini:
    fake_gemini.wait_for(lambda s: s["active_requests"] == 0, timeout=10)
    fake_gemini.reset()
    fake_gemini.config(api_keys=list(TEST_KEYS), token_lifetime=3600, latency_ms=0, stall_timeout_s=30)
    return fake_gemini


@pytest.fixture(scope="session")
def gateway(fake_gemini: FakeGemini) -> Iterator[GatewayServer]:
    server = GatewayServer(gateway_settings(fake_gemini.url))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_gateway(fake_gemini: FakeGemini) -> Iterator[Callable[..., GatewayServer]]:
    started: list[GatewayServer] = []

    def make(**overrides: Any) -> GatewayServer:
        server = GatewayServer(gateway_settings(fake_gemini.url, **overrides))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def client(gateway: GatewayServer, fake: FakeGemini) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture
async def async_client(gateway: GatewayServer, fake: FakeGemini) -> Any:
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
