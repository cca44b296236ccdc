"""Command line: `gemini-proxy serve | check-config | keys | teams | usage | fake-gemini` (also `python -m app`).

`keys` and `teams` (app/team/cli.py) manage the client keys and teams kept in the database;
`usage` (app/team/usage_cli.py) prints usage totals from it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from app import __version__
from app.settings import ENV_PREFIX, ConfigError, Settings, load_settings

log = logging.getLogger("gemini_proxy")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    server = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v is not None}
    return {"server": server} if server else {}


def _describe(settings: Settings) -> str:
    if settings.demo:
        return "demo mode (built-in fake Gemini)"
    ups = ", ".join(f"{u.name} ({u.type})" for u in settings.upstreams)
    return f"upstreams: {ups}; routes: {len(settings.models)}; aliases: {len(settings.aliases)}"


# glibc's malloc, as `serve` sets it (docs/design.md#memory): buffers up to 32 MiB come from the heap,
# and up to 128 MiB of free heap stay in the process instead of going back to the kernel.
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value
TRIM_THRESHOLD = 128 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def keep_freed_memory() -> bool:
    """Keep the memory of big answers for the next ones (glibc only; True when set).

    By default glibc maps a multi-megabyte buffer (an embeddings answer: 4-7 MB read, as much
    written) afresh for each request and returns it to the kernel when freed, so every request
    touches its pages anew: one page fault per 4 KiB, a third of the CPU of an embeddings
    request on the bench machines (bench/README.md). An operator's own `MALLOC_*_` or
    `GLIBC_TUNABLES` settings are left alone.
    """
    if any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # not glibc (musl, macOS)
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _factory() -> Any:
    """App factory for multi-worker uvicorn: each worker re-reads the same config and env."""
    from app.logs import configure_logging
    from app.main import create_app

    keep_freed_memory()
    settings = load_settings()
    configure_logging(settings.server.log_level, settings.secrets())
    return create_app(settings)


@contextlib.contextmanager
def _run_directory(env: str, prefix: str) -> Iterator[None]:
    """A fresh directory for this run's workers in the environment variable `env` (unless the operator chose one),
    removed at exit. It is set here, before uvicorn spawns the workers: they are fresh interpreters
    (multiprocessing "spawn") that inherit the environment. Two of them:

    * PROMETHEUS_MULTIPROC_DIR: workers share Prometheus figures through files (prometheus-client multiprocess
      mode; the workers import prometheus_client only then, so it does not matter that this parent process may have
      imported it already). A worker marks itself dead at exit and the others sweep workers that died
      (app/observe/metrics.py), for the `live*` gauges.
    * the worker slots (app/gateway/ratelimit.py `WORKER_SLOTS_ENV`, `claim_worker_slot`): without Redis each worker
      enforces its exact share of every limit.
    """
    if os.environ.get(env):
        yield
        return
    path = tempfile.mkdtemp(prefix=prefix)
    os.environ[env] = path
    try:
        yield
    finally:
        os.environ.pop(env, None)
        shutil.rmtree(path, ignore_errors=True)


def _shared_metrics_dir() -> contextlib.AbstractContextManager[None]:
    return _run_directory("PROMETHEUS_MULTIPROC_DIR", "gemini-proxy-metrics-")


def _worker_slots_dir() -> contextlib.AbstractContextManager[None]:
    from app.gateway.ratelimit import WORKER_SLOTS_ENV

    return _run_directory(WORKER_SLOTS_ENV, "gemini-proxy-workers-")


def _prepare_database(settings: Settings) -> str | None:
    """Open and migrate the database before any worker starts (they then find it migrated); the problem, if any."""
    import asyncio

    from app.team.db import StorageError, open_database

    async def prepare() -> None:
        engine = await open_database(settings.storage.url())
        await engine.dispose()

    try:
        asyncio.run(prepare())
    except StorageError as exc:
        return str(exc)
    return None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.logs import configure_logging
    from app.main import create_app
    from app.team.db import shown

    try:
        settings = load_settings(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"gemini-proxy: configuration error:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.server.log_level, settings.secrets())
    problem = _prepare_database(settings)
    if problem:
        print(f"gemini-proxy: storage error:\n{problem}", file=sys.stderr)
        return 2
    server = settings.server
    keep_freed_memory()
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    common: dict[str, Any] = dict(
        host=server.host,
        port=server.port,
        loop=loop,
        http="httptools",
        access_log=False,  # the gateway writes its own access log (`server.access_log`)
        log_config=None,
        server_header=False,
        proxy_headers=False,  # the gateway never uses client addresses; skip parsing X-Forwarded-*
        timeout_graceful_shutdown=server.shutdown_grace,  # then running streams end with an error event
    )
    banner = f"gemini-proxy {__version__} on http://{server.host}:{server.port}/v1 - {_describe(settings)}"
    banner += f"; keys and teams: {shown(settings.storage.url())}"
    if settings.demo:
        banner += "\n  DEMO MODE: answers come from the built-in fake Gemini. Set GEMINI_API_KEY for real Gemini."
    print(banner, file=sys.stderr, flush=True)
    if server.workers > 1:
        # Workers rebuild the settings themselves: hand them the same file and flags.
        if args.config:
            os.environ[ENV_PREFIX + "CONFIG"] = os.path.abspath(args.config)
        for key in ("host", "port", "workers"):
            if getattr(args, key) is not None:
                os.environ[f"{ENV_PREFIX}SERVER__{key.upper()}"] = str(getattr(args, key))
        with _shared_metrics_dir(), _worker_slots_dir():
            uvicorn.run("app.cli:_factory", factory=True, workers=server.workers, **common)
    else:
        uvicorn.run(create_app(settings), **common)
    return 0


def check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ConfigError as exc:
        print(f"gemini-proxy: configuration error:\n{exc}", file=sys.stderr)
        return 2
    print(f"{args.file}: OK - {_describe(settings)}")
    return 0


def fake_gemini(args: argparse.Namespace) -> int:
    from app.testing.fake_gemini import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gemini-proxy", description="OpenAI-compatible gateway to Google Gemini")
    parser.add_argument("--version", action="version", version=f"gemini-proxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", help=f"YAML config file (default: ${ENV_PREFIX}CONFIG, else zero-config from env)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8000)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.set_defaults(func=serve)

    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("file")
    p.set_defaults(func=check_config)

    from app.team.cli import add_commands

    add_commands(sub)

    from app.testing.fake_gemini import add_cli_arguments

    p = sub.add_parser("fake-gemini", help="run the offline fake Gemini API (for development and tests)")
    add_cli_arguments(p)
    p.set_defaults(func=fake_gemini)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
