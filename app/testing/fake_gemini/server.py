"""The fake Gemini server as an aiohttp application, in-process or from the command line.

Owns: `create_fake_app(options)` (routes + the middleware that counts
requests, tracks connections, fills in recorded statuses and turns
`GoogleError` into Google's JSON body), `start_fake` / `RunningFake` for
tests and demo mode, and `run_from_args` for `gemini-proxy fake-gemini`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from app.testing.fake_gemini import admin, api
from app.testing.fake_gemini.delivery import error_response
from app.testing.fake_gemini.options import FakeOptions, options_from_args
from app.testing.fake_gemini.state import STATE, FakeState
from app.testing.google_errors import GoogleError

log = logging.getLogger("app.testing.fake_gemini")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SHUTDOWN_TIMEOUT = 2.0


@web.middleware
async def _google_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    is_admin = request.path.startswith("/_fake/")
    if not is_admin:
        state.track(request.transport)
        state.counters["requests"] += 1
        state.active_requests += 1
    try:
        response = await handler(request)
    except GoogleError as error:
        response = error_response(error, array=request.get(api.ARRAY_ERRORS, False))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = "Method not allowed." if exc.status == 405 else "Not Found"
        response = error_response(GoogleError(exc.status, message))
    except Exception:  # a bug in the fake: say so in Google's shape
        log.exception("fake-gemini: unhandled error for %s %s", request.method, request.path)
        response = error_response(GoogleError(500, "fake-gemini internal error (see the server log)"))
    finally:
        if not is_admin:
            state.active_requests -= 1
    if not is_admin:
        state.counters["errors_returned"] += response.status >= 400
        entry = request.get(api.ENTRY)
        if entry is not None:
            entry["finished"] = time.time()
            if entry["status"] is None:
                entry["status"] = response.status
    return response


def create_fake_app(options: FakeOptions | None = None) -> web.Application:
    """A fresh fake server (its own state, secret, tokens)."""
    app = web.Application(middlewares=[_google_errors], client_max_size=64 * 1024 * 1024)
    app[STATE] = FakeState(options or FakeOptions())
    api.add_routes(app)
    admin.add_routes(app)
    return app


@dataclass
class RunningFake:
    """A fake listening on a port; `await close()` when done."""

    url: str
    port: int
    state: FakeState
    app: web.Application
    _runner: web.AppRunner

    async def close(self) -> None:
        self.state.closing = True  # ends stalls and delays in progress
        await self._runner.cleanup()


async def start_fake(
    options: FakeOptions | None = None, host: str | None = None, port: int | None = None
) -> RunningFake:
    """Start a fake on the running event loop; `host`/`port` override the options' (port 0 = any)."""
    options = options or FakeOptions()
    host = host if host is not None else options.host
    port = port if port is not None else options.port
    app = create_fake_app(options)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    shown = f"[{host}]" if ":" in host else host
    return RunningFake(f"http://{shown}:{bound}", bound, app[STATE], app, runner)


def run_from_args(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM (blocking); `args` from a parser given `add_cli_arguments`."""
    options = options_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        fake = await start_fake(options)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"fake-gemini listening on {fake.url}", flush=True)
        print(f"  Gemini API: {fake.url}/v1beta  (header x-goog-api-key)", flush=True)
        print(f"  Vertex AI:  {fake.url}/v1beta1/projects/P/locations/L  (tokens from {fake.url}/token)", flush=True)
        try:
            await stop.wait()
        finally:
            await fake.close()

    asyncio.run(main())
    return 0
