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


def _dockerfile_env() -> dict[str, str]:
    """The ENV of the Dockerfile (`ENV A=1 \\ B=2` lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_usage_records_spool_on_a_volume_of_each_replica() -> None:
    """The spool must be writable by the gateway user (/data is its volume), and each replica keeps its own."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "chown gateway /data" in dockerfile and "VOLUME /data" in dockerfile
    env = _dockerfile_env()
    spool = load_settings(environ=env).storage.spool_dir()
    assert spool.is_absolute() and spool.parts[:2] == ("/", "data"), spool
    # with the compose file's PostgreSQL URL, the spool is still the one under /data
    gateways = {name: s for name, s in COMPOSE["services"].items() if name.startswith("gateway")}
    volumes = []
    for name, service in gateways.items():
        settings = load_settings(environ={**env, **_environment(service)})
        assert settings.storage.spool_dir() == spool, name
        mounts = [v for v in service.get("volumes", []) if str(v).split(":")[1:2] == ["/data"]]
        assert len(mounts) == 1, f"{name}: no volume at /data"
        volume = mounts[0].split(":")[0]
        assert volume in COMPOSE["volumes"], f"{name}: {volume} is not a named volume"
        volumes.append(volume)
    assert len(set(volumes)) == len(volumes), "replicas share a /data volume"
