"""The gateway's own CPU per chat request, in one process, with Google's answer canned (owns: in-process figures).

No sockets, no HTTP parsing, no upstream: the ASGI app (pipeline, endpoint,
translation, dispatcher, access log, metrics) is called directly with the
bench's chat request, and the upstream client's JSON call returns the bench's
fake `generateContent` answer. What is left is exactly the Python work the
gateway adds on top of a forwarder, measured as process CPU time over blocks
of requests; the minimum over blocks is stable on a loaded machine (what
varies is how often the process is disturbed, not the work).

    .venv/bin/python bench/inprocess.py                                     # default settings
    .venv/bin/python bench/inprocess.py GEMINI_PROXY_SERVER__ACCESS_LOG=off # with a setting changed
    .venv/bin/python bench/inprocess.py --profile                           # cProfile, top functions
    .venv/bin/python bench/inprocess.py --team --background                 # usage records written meanwhile

Run it from any checkout (it imports `app` from the working directory), so two
revisions compare with the same command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.getcwd())
sys.path.insert(0, str(HERE))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="environment for the gateway's settings")
    ap.add_argument("--blocks", type=int, default=15)
    ap.add_argument("--per-block", type=int, default=1000)
    ap.add_argument("--profile", action="store_true", help="print the top functions by own time (cProfile)")
    ap.add_argument("--team", action="store_true",
                    help="as the bench's team cell: a client key with rpm/tpm/concurrency limits, usage records on")
    add_background_option(ap)
    return ap.parse_args()


def add_background_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--background", action="store_true",
                    help="let the event loop run its other tasks between two requests, as a server's does: the usage "
                         "writer's batches (--team) are then in the figure; without it they are written at shutdown")


async def serve(app: Any, scope: dict[str, Any], receive: Any, send: Any, n: int, background: bool) -> None:
    """`n` requests one after another. None of them ever waits (Google's answer is canned), so without `background`
    no other task runs meanwhile; with it, each request is followed by one turn of the event loop."""
    for _ in range(n):
        await app(scope, receive, send)
        if background:
            await asyncio.sleep(0)


TEAM_KEY = "sk-bench-team"
TEAM_KEYS = (f'[{{"name": "bench-team", "id": "cfg-bench-team", "key": "{TEAM_KEY}", '
             '"limits": {"rpm": 10000000, "tpm": 10000000000, "concurrency": 10000}}]')


async def measure(blocks: int, per_block: int, team: bool = False, background: bool = False) -> list[float]:
    import fake_upstream
    import loadgen
    import orjson

    from app.main import create_app
    from app.settings import load_settings
    from app.upstream import client as upstream_client

    answer = orjson.dumps(fake_upstream.generate_content())
    body = orjson.dumps(loadgen.CHAT_BODY)

    async def canned(self: Any, method: str, url: str, headers: dict[str, str], data: bytes | None = None) -> Any:
        return orjson.loads(answer)

    upstream_client.UpstreamClient._json = canned  # type: ignore[method-assign]
    app = create_app(load_settings())
    scope = {
        "type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"", "root_path": "",
        "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }
    if team:
        scope["headers"].append((b"authorization", f"Bearer {TEAM_KEY}".encode()))
    failures: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            failures.append(message)

    async with app.router.lifespan_context(app):
        for _ in range(2000):  # warm-up
            await app(scope, receive, send)
        if failures:
            raise SystemExit(f"the gateway answered {failures[0]['status']}; check the settings given")
        figures = []
        for _ in range(blocks):
            start = time.process_time()
            await serve(app, scope, receive, send, per_block, background)
            figures.append((time.process_time() - start) * 1e6 / per_block)
    return figures


def main() -> None:
    args = parse_args()
    tmp = tempfile.mkdtemp(prefix="gp-inprocess-")
    os.environ.update(GEMINI_API_KEY="bench-key", GEMINI_BASE_URL="http://127.0.0.1:9",
                      GEMINI_PROXY_STORAGE__DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/gemini-proxy.db")
    if args.team:
        os.environ["GEMINI_PROXY_AUTH__CLIENT_KEYS"] = TEAM_KEYS
    os.environ.update(kv.split("=", 1) for kv in args.settings)
    sys.stderr = open(os.devnull, "w")  # the access log: written, not shown
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        figures = profiler.runcall(asyncio.run, measure(args.blocks, args.per_block, args.team, args.background))
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(40)
    else:
        figures = asyncio.run(measure(args.blocks, args.per_block, args.team, args.background))
    flags = ("--team " if args.team else "") + ("--background " if args.background else "")
    print(f"{os.getcwd()} {flags}{' '.join(args.settings)}: CPU per chat request, in process: "
          f"min {min(figures):.1f} us, median {statistics.median(figures):.1f} us "
          f"({args.blocks} blocks of {args.per_block})")


if __name__ == "__main__":
    main()
