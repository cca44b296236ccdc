"""Test helpers for running the real gateway over real HTTP (module name unique on purpose).

* `LoopThread`: an event loop on a background thread (the fake Gemini runs there).
* `GatewayServer`: the gateway app served by uvicorn on its own thread and port,
  exactly as `gemini-proxy serve` serves it (uvloop, httptools).
* `FakeGemini`: admin access to a running fake (stats, recorded requests, scripts).
* `gateway_settings(...)`: Settings for a gateway in front of a fake.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import uvicorn
import uvloop
from pydantic import SecretStr

from app.main import create_app
from app.settings import DEFAULT_DATABASE_URL, Settings, load_settings

TEST_KEYS = ("test-key", "second-key")

# Each gateway of the tests gets a database file of its own here (not gemini-proxy.db in the working directory).
_DATABASES = tempfile.mkdtemp(prefix="gemini-proxy-test-db-")
atexit.register(shutil.rmtree, _DATABASES, True)
_database_numbers = itertools.count(1)


def new_database_url() -> str:
    return f"sqlite+aiosqlite:///{_DATABASES}/gateway-{next(_database_numbers)}.db"


class LoopThread:
    def __init__(self, name: str = "loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class FakeGemini:
    """Admin access to a running fake Gemini (docs/fake-gemini.md)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=20)

    def stats(self) -> dict[str, int]:
        return self.http.get("/_fake/stats").json()

    def requests(self) -> list[dict[str, Any]]:
        return self.http.get("/_fake/requests").json()["requests"]

    def last_body(self) -> dict[str, Any]:
        return self.requests()[-1]["body"]

    def script(self, *directives: dict[str, Any]) -> None:
        body = directives[0] if len(directives) == 1 else list(directives)
        response = self.http.post("/_fake/script", json=body)
        assert response.status_code == 200, response.text

    def config(self, **changes: Any) -> dict[str, Any]:
        response = self.http.post("/_fake/config", json=changes)
        assert response.status_code == 200, response.text
        return response.json()

    def reset(self) -> None:
        assert self.http.post("/_fake/reset").status_code == 200

    def wait_for(self, predicate: Callable[[dict[str, int]], bool], timeout: float = 5.0) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats) or time.monotonic() > deadline:
                return stats
            time.sleep(0.02)


def gateway_settings(fake_url: str, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings of a gateway whose one upstream is the fake (keys `test-key`, `second-key`), with a fresh database.

    The access log is off unless asked for: in-process gateways would write it into other tests'
    output (the access-log tests run the real CLI and read its stderr).
    """
    storage = overrides.setdefault("storage", {})
    storage.setdefault("database_url", new_database_url())
    overrides.setdefault(
        "upstreams", [{"name": "fake", "type": "gemini", "base_url": fake_url, "api_keys": ["test-key"]}]
    )
    overrides["server"] = {"access_log": "off", **overrides.get("server", {})}
    return load_settings(overrides=overrides, environ=environ or {})


class GatewayServer:
    """The gateway on a free port in a background thread; `stop()` shuts it down."""

    def __init__(self, settings: Settings) -> None:
        if settings.storage.database_url.get_secret_value() == DEFAULT_DATABASE_URL:  # never gemini-proxy.db in the repository
            storage = settings.storage.model_copy(update={"database_url": SecretStr(new_database_url())})
            settings = settings.model_copy(update={"storage": storage})
        self.settings = settings
        self.app = create_app(settings)
        self.state = self.app.state.gateway
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, http="httptools", access_log=False, log_config=None, lifespan="on", timeout_graceful_shutdown=5
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: uvloop.run(self.server.serve(sockets=[sock])), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def metric_value(server: GatewayServer, name: str, **labels: str) -> float:
    """The sum of one metric's samples with these labels, as `GET /metrics` exposes them now."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def signature_bypasses(server: GatewayServer) -> int:
    return int(metric_value(server, "gemini_proxy_signatures_total", outcome="bypass"))
