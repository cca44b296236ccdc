"""The deployment files users copy: docker-compose.yml's replicas configure the gateway they say they do.

Docker is not available here, so the compose file is read as data: every
gateway service's environment, given to the real settings loader, must give a
PostgreSQL database (async driver), a Redis URL and an admin key, and the
proxy in front must not buffer streams.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from app.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
_REQUIRED = re.compile(r"^\$\{(\w+):\?[^}]*\}$")


def _environment(service: dict) -> dict[str, str]:
    env = {}
    for name, value in service["environment"].items():
        required = _REQUIRED.match(str(value))
        env[name] = f"value-of-{required.group(1)}" if required else str(value)
    return env


def test_the_replicas_share_postgresql_and_redis() -> None:
    gateways = {name: s for name, s in COMPOSE["services"].items() if name.startswith("gateway")}
    assert len(gateways) >= 2
    for name, service in gateways.items():
        env = _environment(service)
        settings = load_settings(environ=env)
        assert settings.storage.url().startswith("postgresql+asyncpg://"), name
        assert settings.storage.redis_url is not None, name
        assert settings.storage.redis_url.get_secret_value().startswith("redis://redis:"), name
        assert env["GEMINI_PROXY_ADMIN_KEY"].startswith("value-of-"), name  # required from the operator's shell
        assert {"postgres", "redis"} <= set(service["depends_on"]), name
        host = settings.storage.url().split("@", 1)[1].split(":", 1)[0]
        assert host in COMPOSE["services"], f"{name}: database host {host} is not a service"


def test_the_proxy_in_front_streams_and_reaches_every_replica() -> None:
    nginx = COMPOSE["configs"]["nginx"]["content"]
    assert "proxy_buffering off" in nginx  # SSE passes through as it comes
    for name in COMPOSE["services"]:
        if name.startswith("gateway"):
            assert f"server {name}:8000" in nginx
