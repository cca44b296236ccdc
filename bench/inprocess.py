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
    .venv/bin/python bench/inprocess.py --embeddings 100 --encoding base64  # embeddings (7 MB answers)
    .venv/bin/python bench/inprocess.py --team-redis                        # --team, limits shared on Redis
    .venv/bin/python bench/inprocess.py --team --background                 # usage records written meanwhile
    .venv/bin/python bench/inprocess.py --responses                         # POST /v1/responses
    .venv/bin/python bench/inprocess.py --responses-stream                  # POST /v1/responses, streamed
    .venv/bin/python bench/inprocess.py --chat-stream --events-per-read 10  # chat streamed, reads of 10 events
    .venv/bin/python bench/inprocess.py --native                            # the native route, passed through

`--responses` sends the bench's Responses request instead of the chat one.
The stream modes (`--chat-stream`, `--responses-stream`) send the bench's
streamed request and stub the upstream stream with the fake upstream's canned
100-chunk `streamGenerateContent?alt=sse` stream, read one event per read
(as a paced model sends it) or `--events-per-read N` at a time (as reads
coalesce when chunks come back to back); the figure is CPU per stream.

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
    ap.add_argument("--per-block", type=int, default=None, help="requests per block (default 1000; --embeddings 10, streams 50)")
    ap.add_argument("--profile", action="store_true", help="print the top functions by own time (cProfile)")
    ap.add_argument("--team", action="store_true",
                    help="as the bench's team cell: a client key with rpm/tpm/concurrency limits, usage records on")
    add_embeddings_args(ap)
    add_team_redis_option(ap)
    add_background_option(ap)
    add_stream_args(ap)
    return ap.parse_args()


def add_embeddings_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--embeddings", type=int, default=0, metavar="N",
                    help="POST /v1/embeddings with N texts instead of chat; Google's answer: N x 3072 values, "
                         "pretty-printed (fake_upstream.py); fewer blocks and requests per block by default")
    ap.add_argument("--encoding", default="float", choices=("float", "base64"), help="encoding_format of --embeddings")


def embeddings_case(n: int, encoding: str) -> tuple[str, bytes]:
    """`--embeddings N`: the path and body of the bench's embeddings request; the upstream client's raw
    call returns fake_upstream's canned `batchEmbedContents` answer (7 MB for 100; 4.2 MB compact, when
    the URL asks `prettyPrint=false`), a new bytes object each time as aiohttp's is."""
    import fake_upstream
    import loadgen
    import orjson

    from app.upstream import client as upstream_client

    vectors = fake_upstream.embeddings(n, 3072)
    pretty = orjson.dumps(vectors, option=orjson.OPT_INDENT_2)
    compact = orjson.dumps(vectors)  # `?prettyPrint=false`
    chunks = {answer: [answer[i : i + 65536] for i in range(0, len(answer), 65536)] for answer in (pretty, compact)}

    async def canned(self: Any, url: str, body: bytes, headers: dict[str, str]) -> bytes:
        answer = compact if "prettyPrint=false" in url else pretty
        return b"".join(chunks[answer])  # a new object each time, as aiohttp's read() joins what the socket gave

    upstream_client.UpstreamClient.post_raw = canned  # type: ignore[method-assign]
    return "/v1/embeddings", loadgen.body_bytes(False, embeddings=n, encoding=encoding)


def add_team_redis_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--team-redis", action="store_true",
                    help="as the bench's team-redis cell: --team with the limits shared through a throw-away "
                         "redis-server (started here, as bench/team.py does; its CPU is not counted)")


def start_team_redis(args: argparse.Namespace, tmp: str) -> None:
    """--team-redis: --team, and bench/team.py's throw-away redis-server for the gateway (stopped at exit)."""
    if not args.team_redis:
        return
    import atexit

    import run
    import team

    args.team = True
    procs = run.Procs(Path(tmp))
    atexit.register(procs.stop_all)
    url = team.start_redis(procs, run.free_port)
    if url is None:
        raise SystemExit("--team-redis needs redis-server on the PATH")
    os.environ["GEMINI_PROXY_STORAGE__REDIS_URL"] = url
    from app.gateway import shared

    shared.TIMEOUT = 10.0  # a slow reply on a loaded machine must not open the breaker: that measures local limits


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


def add_stream_args(ap: argparse.ArgumentParser) -> None:
    """The request kinds other than chat's non-streamed one (`bench_request`)."""
    kind = ap.add_mutually_exclusive_group()
    for flag, help in (("--chat-stream", "a streamed chat request against the canned stream (CPU per stream)"),
                       ("--responses", "the bench's Responses request (POST /v1/responses), not streamed"),
                       ("--responses-stream", "the Responses request streamed (typed response.* events)"),
                       ("--native", "the native route (POST /v1beta/models/...:generateContent), passed through"),
                       ("--native-stream", "the native streamed route (:streamGenerateContent?alt=sse)")):
        kind.add_argument(flag, dest="kind", action="store_const", const=flag[2:], help=help)
    ap.add_argument("--chunks", type=int, default=100, help="upstream chunks per stream (stream modes)")
    ap.add_argument("--events-per-read", type=int, default=1, help="upstream events per read (stream modes)")


class CannedStream:
    """The upstream client's `UpstreamStream`, reading canned bytes (`reads`) one read at a time."""

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = iter(reads)
        self.done = False
        self.keepalive: float | None = None
        self.content_type = "text/event-stream"

    async def read(self) -> bytes | None:
        data = next(self._reads, b"")
        self.done = not data
        return data

    def close(self) -> None:
        pass


def bench_request(kind: str, chunks: int, per_read: int) -> tuple[str, bytes]:
    """The path and body of a `--kind` request; for a stream, the upstream's streams are stubbed with
    the fake upstream's canned SSE (`chunks` events, `per_read` of them a read)."""
    import fake_upstream
    import loadgen
    import orjson

    from app.upstream import client as upstream_client

    events = [b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in fake_upstream.stream_chunks(chunks)]
    reads = [b"".join(events[i : i + per_read]) for i in range(0, len(events), per_read)]

    async def open_stream(self: Any, url: str, body: bytes, headers: dict[str, str]) -> Any:
        return CannedStream(reads)

    upstream_client.UpstreamClient.open_stream = open_stream  # type: ignore[method-assign]
    if kind.startswith("native"):
        answer = orjson.dumps(fake_upstream.generate_content())

        async def request(self: Any, method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> Any:
            return answer, "application/json; charset=UTF-8"

        upstream_client.UpstreamClient.request = request  # type: ignore[method-assign]
        verb = "streamGenerateContent?alt=sse" if kind.endswith("stream") else "generateContent"
        return f"/v1beta/models/{fake_upstream.MODEL}:{verb}", loadgen.body_bytes(False, native=True)
    responses = kind.startswith("responses")
    path = "/v1/responses" if responses else "/v1/chat/completions"
    return path, loadgen.body_bytes(kind.endswith("stream"), responses=responses)


def as_served() -> None:
    """The process settings `gemini-proxy serve` makes before it serves (glibc's allocator)."""
    try:
        from app.cli import keep_freed_memory
    except ImportError:  # a checkout from before it
        return
    keep_freed_memory()


def embeddings_option(args: argparse.Namespace) -> tuple[tuple[str, bytes] | None, str]:
    """The request case and its name in the report line; `--embeddings` takes 10 requests per block by default."""
    if not args.embeddings:
        args.per_block = args.per_block or 1000
        return None, "chat request"
    args.per_block = args.per_block or 10
    return embeddings_case(args.embeddings, args.encoding), f"embeddings request ({args.embeddings} inputs, {args.encoding})"


async def measure(blocks: int, per_block: int, team: bool = False,
                  case: tuple[str, bytes] | None = None, background: bool = False) -> list[float]:
    import fake_upstream
    import loadgen
    import orjson

    from app.main import create_app
    from app.settings import load_settings
    from app.upstream import client as upstream_client

    answer = orjson.dumps(fake_upstream.generate_content())
    body = orjson.dumps(loadgen.CHAT_BODY)
    path = "/v1/chat/completions"
    if case is not None:  # another request (--embeddings, --responses, the stream modes)
        path, body = case

    async def canned(self: Any, method: str, url: str, headers: dict[str, str], data: bytes | None = None) -> Any:
        return orjson.loads(answer)

    upstream_client.UpstreamClient._json = canned  # type: ignore[method-assign]
    app = create_app(load_settings())
    path, _, query = path.partition("?")
    scope = {
        "type": "http", "method": "POST", "path": path, "query_string": query.encode(), "root_path": "",
        "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }
    if team:
        scope["headers"].append((b"authorization", f"Bearer {TEAM_KEY}".encode()))
    failures: list[Any] = []

    requests = asyncio.current_task()

    async def receive() -> dict[str, Any]:
        if asyncio.current_task() is not requests:  # the pipeline's client watch (a request over 0.1 s): as a
            await asyncio.Event().wait()  # server's receive, wait for a disconnect that never comes (not a spin)
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            failures.append(message)

    async with app.router.lifespan_context(app):
        for _ in range(min(2000, 2 * per_block)):  # warm-up
            await app(scope, receive, send)
        if failures:
            raise SystemExit(f"the gateway answered {failures[0]['status']}; check the settings given")
        if case is not None:
            await check_stream(app, scope, receive)
        figures = []
        for _ in range(blocks):
            start = time.process_time()
            await serve(app, scope, receive, send, per_block, background)
            figures.append((time.process_time() - start) * 1e6 / per_block)
    return figures


async def check_stream(app: Any, scope: dict[str, Any], receive: Any) -> None:
    """One answer, read whole: a stream must end complete, not with an error event (a 200 is checked already)."""
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message.get("body", b""))

    await app(scope, receive, send)
    body = b"".join(sent)
    stream = body.startswith((b"data: ", b"event: "))
    ends = (b"data: [DONE]\n\n", b"event: response.completed\n", b'"finishReason"')  # chat, Responses, native
    if stream and not (body.endswith(ends[0]) or ends[1] in body or ends[2] in body[-2000:]):
        raise SystemExit(f"the stream did not complete: ...{body[-300:]!r}")


def kind_case(args: argparse.Namespace) -> tuple[tuple[str, bytes], str]:
    """The request case of `--responses` / a stream mode and its name in the report line; streams take 50 a block."""
    name = {"responses": "Responses", "native": "native"}.get(args.kind.split("-")[0], "chat")
    case = bench_request(args.kind, args.chunks, args.events_per_read)
    if not args.kind.endswith("stream"):
        args.per_block = args.per_block or 1000
        return case, f"{name} request"
    args.per_block = args.per_block or 50
    return case, f"{name} stream ({args.chunks} chunks, {args.events_per_read} a read)"


def main() -> None:
    args = parse_args()
    tmp = tempfile.mkdtemp(prefix="gp-inprocess-")
    os.environ.update(GEMINI_API_KEY="bench-key", GEMINI_BASE_URL="http://127.0.0.1:9",
                      GEMINI_PROXY_STORAGE__DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/gemini-proxy.db")
    start_team_redis(args, tmp)
    if args.team:
        os.environ["GEMINI_PROXY_AUTH__CLIENT_KEYS"] = TEAM_KEYS
    os.environ.update(kv.split("=", 1) for kv in args.settings)
    sys.stderr = open(os.devnull, "w")  # the access log: written, not shown
    as_served()
    case, what = kind_case(args) if args.kind else embeddings_option(args)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        figures = profiler.runcall(asyncio.run, measure(args.blocks, args.per_block, args.team, case, args.background))
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(40)
    else:
        figures = asyncio.run(measure(args.blocks, args.per_block, args.team, case, args.background))
    cell = "--team-redis " if args.team_redis else "--team " if args.team else ""
    cell += "--background " if args.background else ""
    print(f"{os.getcwd()} {cell}{' '.join(args.settings)}: CPU per {what}, in process: "
          f"min {min(figures):.1f} us, median {statistics.median(figures):.1f} us "
          f"({args.blocks} blocks of {args.per_block})")


if __name__ == "__main__":
    main()
