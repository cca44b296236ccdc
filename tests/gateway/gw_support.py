"""Shared helpers of the routing / Vertex / fault tests (issue 4); fixtures are in conftest.py.

* `vertex(...)` / `gemini(...)`: upstream settings dicts pointing at the fake.
* `FAST_RETRY`: retry settings with millisecond back-offs for fault tests.
* `oai(server)`: an openai SDK client on a gateway (no SDK retries).
* `vertex_gateway(...)`: a gateway whose one upstream is Vertex on the fake (a module fixture's body).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from app.testing.credentials import write_service_account_file
from gateway_harness import GatewayServer, gateway_settings

FAST_RETRY: dict[str, Any] = {
    "max_attempts": 3,
    "backoff_initial": 0.01,
    "backoff_max": 0.05,
    "max_retry_delay": 2,
}


def vertex(name: str, fake_url: str, credentials_file: str | Path | None, project: str = "proj-a",
           location: str = "us-central1") -> dict[str, Any]:
    up: dict[str, Any] = {"name": name, "type": "vertex", "project": project, "location": location,
                          "base_url": fake_url}
    if credentials_file is not None:
        up["credentials_file"] = str(credentials_file)
    return up


def gemini(name: str, fake_url: str, *keys: Any) -> dict[str, Any]:
    return {"name": name, "type": "gemini", "base_url": fake_url, "api_keys": list(keys)}


def vertex_gateway(fake_gemini: Any, tmp_path_factory: pytest.TempPathFactory, project: str) -> Iterator[GatewayServer]:
    """A gateway on one Vertex upstream (a service account file on the fake's token endpoint), stopped after use."""
    sa = write_service_account_file(tmp_path_factory.mktemp("vx") / "sa.json", fake_gemini.url + "/token")
    server = GatewayServer(gateway_settings(fake_gemini.url, upstreams=[vertex("vx", fake_gemini.url, sa, project=project)]))
    try:
        yield server
    finally:
        server.stop()


def oai(server: Any, key: str = "unused", timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=timeout)


def msg(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def directive(**fields: Any) -> str:
    """A `#fake {...}` line for the prompt."""
    return "#fake " + json.dumps(fields)
