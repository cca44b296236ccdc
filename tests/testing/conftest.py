"""Fixtures for the fake Gemini server's tests.

One fake runs for the whole session on a background thread's event loop
(`start_fake`), driven over real HTTP with httpx. Each test gets it reset
(records, counters, scripts, config) through the admin endpoints.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.testing.fake_gemini import FakeOptions, start_fake
from fake_harness import API_KEYS, DEFAULT_CONFIG, Harness
from gateway_harness import LoopThread


@pytest.fixture(scope="session")
def fake_server() -> Iterator[Harness]:
    runner = LoopThread("fake-gemini")
    running = runner.run(start_fake(FakeOptions(api_keys=API_KEYS, seed=7)))
    harness = Harness(running)
    try:
        yield harness
    finally:
        harness.http.close()
        runner.run(running.close())
        runner.stop()


@pytest.fixture
def fake(fake_server: Harness) -> Harness:
    idle = fake_server.wait_for(lambda s: s["active_requests"] == 0, timeout=10)
    assert idle["active_requests"] == 0, "a previous test left a request in flight"
    assert fake_server.http.post("/_fake/reset").status_code == 200
    fake_server.config(**DEFAULT_CONFIG)
    return fake_server
