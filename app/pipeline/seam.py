"""The request pipeline: one path for every endpoint (docs/design.md#architecture).

`Pipeline` is the outermost ASGI app. For every HTTP request it opens a
`RequestContext` (request id taken from the client's `x-request-id` when sane,
else generated) and, in one `finally`, records the outcome: the access log
line and the metrics; a limited key's reservations are settled there first
(app/gateway/ratelimit.py), and its answers carry `x-ratelimit-*` headers.

Endpoints registered as `Endpoint`s (chat and the native Gemini routes
today; embeddings, images and responses next), by exact path or by path
prefix (`Routes`), take the fast path, a raw ASGI handler before FastAPI's
middleware and router (on the hot path those cost more than all of the
translation; bench/README.md):

1. read the body, within `server.max_request_bytes`;
2. authenticate into a `Principal` (pipeline/auth.py): 401 for no key, an
   unknown, revoked or expired one. Which models the key may use is the
   endpoint's to check once it knows the model (`Principal.check_model`,
   403 `model_not_allowed`), before Google is called;
3. hand a `Call` to the endpoint, which holds only its own logic (validate,
   translate, dispatch, re-encode) and returns an `Answer`;
4. send the answer: JSON, or an SSE body pumped as it comes; a client that
   leaves cancels the work (`ClientWatch`); at shutdown, a stream still
   running when `server.shutdown_grace` ends gets an error event;
5. record (`finally`).

Other routes (models, health, docs, metrics) go through FastAPI with the same
context (`scope["gemini_proxy.ctx"]`), and so does a request an endpoint
declines (`claims`: a path two APIs share, such as `/v1/models`). A method an
endpoint does not serve (`GET` on a POST-only route) is a 405 with `Allow`.
An endpoint renders its own errors (`error_body`: OpenAI's shape by default;
the native Gemini routes answer in Google's).
Every answer carries `x-request-id`; every error body's message ends with the
request id; every log line of the request carries it (observe/access_log.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson

from app.errors import GatewayError, InvalidRequest, PayloadTooLarge, internal_error
from app.gateway.ratelimit import release_leases
from app.observe.access_log import current_request_id
from app.pipeline.auth import token_from_headers
from app.pipeline.context import Principal, RequestContext, clean_request_id

log = logging.getLogger("gemini_proxy.pipeline")

ASGIApp = Callable[[Any, Any, Any], Any]

# How long a request runs before a task starts watching for its client's disconnect.
WATCH_AFTER = 0.1
KEEPALIVE = b": keep-alive\n\n"
SSE_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)
CTX_KEY = "gemini_proxy.ctx"

# Request ids only need to be unique, not secret: a seeded generator costs no system call.
_ids = random.Random()


def new_request_id() -> str:
    """`req_` and 30 hex digits (120 random bits)."""
    return f"req_{_ids.getrandbits(120):030x}"


@dataclass(slots=True)
class Call:
    """What an endpoint gets: the context (principal, ids, method, path), the raw body, headers and query."""

    ctx: RequestContext
    body: bytes
    headers: list[tuple[bytes, bytes]]
    query: bytes = b""


@dataclass(slots=True)
class Answer:
    """What an endpoint returns: a whole body (JSON unless said), or a streamed one (SSE unless said)."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None
    content_type: bytes | None = None  # None: application/json, or text/event-stream for a stream


class Endpoint:
    """Base of the pipeline's endpoints: override `__call__`; the class attributes say how it is reached."""

    name = ""  # the `endpoint` label of metrics ("chat", "embeddings", ...)
    methods: frozenset[str] = frozenset({"POST"})
    query_key = False  # True: a `?key=` query parameter also authenticates (Google's own clients send it)

    def claims(self, scope: Any) -> bool:
        """Whether this request is the endpoint's; False hands it to the FastAPI routes (a path two APIs share)."""
        return True

    async def __call__(self, call: Call) -> Answer:
        raise NotImplementedError

    def error_body(self, exc: GatewayError, request_id: str) -> bytes:
        """The body of an error answer (OpenAI's error JSON, the message ending with the request id)."""
        return error_body(exc, request_id)


class Routes:
    """The pipeline's endpoints by exact path, then by path prefix (longest first)."""

    def __init__(self) -> None:
        self.exact: dict[str, Endpoint] = {}
        self.prefixes: list[tuple[str, Endpoint]] = []

    def add(self, endpoint: Endpoint, *paths: str, prefix: bool = False) -> None:
        for path in paths:
            if prefix:
                self.prefixes.append((path, endpoint))
                self.prefixes.sort(key=lambda item: -len(item[0]))
            else:
                self.exact[path] = endpoint

    def names(self) -> frozenset[str]:
        """The names of the endpoints served (`chat`, `embeddings`, ...)."""
        return frozenset(e.name for e in [*self.exact.values(), *(e for _, e in self.prefixes)])

    def match(self, path: str) -> Endpoint | None:
        endpoint = self.exact.get(path)
        if endpoint is None and self.prefixes:
            for prefix, candidate in self.prefixes:
                if path.startswith(prefix):
                    return candidate
        return endpoint


class Authenticator(Protocol):
    async def resolve(self, token: str | None) -> Any: ...


class Recorder(Protocol):
    def price(self, ctx: RequestContext) -> None: ...
    def record(self, ctx: RequestContext) -> None: ...
    def stream_started(self) -> None: ...
    def stream_ended(self) -> None: ...


async def read_body(receive: Any, declared: int | None, limit: int) -> bytes:
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"Request body too large: {declared} bytes; the limit is {limit} bytes.")
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body too large; the limit is {limit} bytes.")
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] != "http.request":
            raise InvalidRequest("The client closed the connection before the body was complete.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body too large; the limit is {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def token_from_query(query: bytes) -> str | None:
    """`?key=...`, as Google's own clients and curl examples send an API key."""
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == "key" and value:
            return value
    return None


def error_body(exc: GatewayError, request_id: str) -> bytes:
    body = exc.body()
    body["error"]["message"] = f"{exc.message} (request id {request_id})"
    return orjson.dumps(body)


class ClientWatch:
    """Notices when the client of one request goes away, and cancels the request's task.

    Started once the body is read (from then on only `http.disconnect` can
    come from `receive`). It covers the wait for Google as well as a stream, so
    a client that leaves, even while the model is silent, stops the upstream
    call: the cancelled task's `finally` blocks close it. The watching task
    starts only once the request has lasted a while (`Watches`): a request
    answered sooner never pays for it, and a client that left earlier is
    noticed the moment it starts (`receive` then reports the disconnect at once).
    """

    __slots__ = ("gone", "since", "_task", "_receive", "_watcher", "_watches")

    def __init__(self, receive: Any, watches: Watches) -> None:
        self.gone = False
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None
        self._watches = watches
        self.since = watches.add(self)

    def start(self) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self._task.cancel()

    def absorb(self) -> bool:
        """After a CancelledError: True (and the cancellation undone) if it came from us."""
        if self.gone:
            self._task.uncancel()
        return self.gone

    def close(self) -> None:
        self._watches.discard(self)
        if self._watcher is not None:
            self._watcher.cancel()


class Watches:
    """The requests in flight whose client is not watched yet; one timer starts the watchers of those older than `after`.

    A timer per request (`call_later` and its cancel) cost more than the rest of
    the pipeline's bookkeeping; one sweep every `after / 2` seconds while
    requests are in flight starts each watcher between `after` and
    `1.5 * after` into its request.
    """

    def __init__(self, after: float) -> None:
        self.after = after
        self._pending: dict[ClientWatch, None] = {}  # insertion order = age order
        self._timer: asyncio.TimerHandle | None = None

    def add(self, watch: ClientWatch) -> float:
        self._pending[watch] = None
        loop = asyncio.get_running_loop()
        if self._timer is None:
            self._timer = loop.call_later(self.after / 2, self._sweep)
        return loop.time()

    def discard(self, watch: ClientWatch) -> None:
        self._pending.pop(watch, None)

    def _sweep(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        due = loop.time() - self.after
        for watch in list(self._pending):
            if watch.since > due:
                break  # the rest are younger
            del self._pending[watch]
            watch.start()
        if self._pending:
            self._timer = loop.call_later(self.after / 2, self._sweep)


class EarlyAnswer:
    """A stream's answer begun before its stream opened (app/api/sse.py): 200 and keep-alive comments, sent by a task
    of its own while the request's task still waits for Google.

    The request's task takes the answer over once the stream opens (`stop`; `_send_stream` then goes on without a
    second start) or, if it never does, the pipeline ends it (`cancel`, and an error event at shutdown).
    """

    __slots__ = ("_wake", "_task", "taken")

    def __init__(self, send: Any, raw_headers: list[tuple[bytes, bytes]], keepalive: float, ctx: RequestContext) -> None:
        loop = asyncio.get_running_loop()
        self._wake: asyncio.Future[None] = loop.create_future()
        self.taken = False  # the request's task sends the rest of the answer
        self._task = loop.create_task(self._run(send, raw_headers, keepalive, ctx))

    async def _run(self, send: Any, raw_headers: list[tuple[bytes, bytes]], keepalive: float, ctx: RequestContext) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
            while not self._wake.done():
                await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
                await asyncio.wait((self._wake,), timeout=keepalive)
        except OSError:
            ctx.error_code = ctx.error_code or "client_closed"  # the client's socket failed mid-write

    async def stop(self) -> None:
        """No more keep-alives: returns once the last one is written."""
        if not self._wake.done():
            self._wake.set_result(None)
        await self._task

    def cancel(self) -> None:
        self._task.cancel()


def start_early(ctx: RequestContext, keepalive: float) -> EarlyAnswer:
    """Begin a stream's answer now (`200 text/event-stream`, keep-alives every `keepalive` seconds): app/api/sse.py."""
    pipeline, send = ctx.answering
    ctx.status = 200
    pipeline.recorder.stream_started()
    ctx.early = early = EarlyAnswer(send, pipeline.stream_headers(ctx, {}, None), keepalive, ctx)
    return early


class Pipeline:
    def __init__(
        self,
        app: ASGIApp,
        endpoints: Routes,
        auth: Authenticator,
        recorder: Recorder,
        max_request_bytes: int,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.app = app
        self.endpoints = endpoints
        self.auth = auth
        self.recorder = recorder
        self.max_request_bytes = max_request_bytes
        self.watches = Watches(WATCH_AFTER)
        self.extra_headers = extra_headers or []
        self.settle: Callable[[RequestContext], Any] | None = None  # the limiter's settlement (ctx.admission)
        # the limiter's x-ratelimit-* headers of a limited key's answer that took nothing (Limiter.peek_headers)
        self.peek_limits: Callable[[Principal, frozenset[bytes]], Awaitable[list[tuple[bytes, bytes]]]] | None = None
        self.shutdown_message = "The gateway is shutting down; this request could not be finished. Please retry."

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = clean_request_id(value)
                break
        ctx = RequestContext(request_id or new_request_id(), scope["method"], scope["path"])
        reset = current_request_id.set(ctx.request_id)
        try:
            endpoint = self.endpoints.match(scope["path"])
            if endpoint is not None and not endpoint.claims(scope):
                endpoint = None
            if endpoint is None:
                scope[CTX_KEY] = ctx
                await self.app(scope, receive, self._tracking(send, ctx))
            elif scope["method"] in endpoint.methods:
                ctx.endpoint = endpoint.name
                await self._serve(endpoint, ctx, scope, receive, send)
            else:
                ctx.endpoint = endpoint.name
                allowed = ", ".join(sorted(endpoint.methods))
                error = GatewayError(
                    f"Method {scope['method']} is not allowed for {scope['path']}; use {allowed}.",
                    status=405, type="invalid_request_error", code="method_not_allowed",
                )
                await self._send_error(send, ctx, error, {"allow": allowed}, endpoint)
        finally:
            try:
                await self._price_and_settle(ctx)
            finally:
                self.recorder.record(ctx)
                current_request_id.reset(reset)

    async def _price_and_settle(self, ctx: RequestContext) -> None:
        """`ctx.cost_usd` (read by the settlement's usd budgets and by the record), then the limits settled, if any."""
        self.recorder.price(ctx)
        admission = ctx.admission
        if admission is None or self.settle is None:
            return
        if admission.backend.suspends(admission.ident):
            await self._settle(ctx)  # Redis round trips: they must survive a cancellation
        else:
            # In-process counters: the settlement never suspends, so no cancellation can cut it
            # short, and a task per request (~10 us) would buy nothing.
            await self.settle(ctx)

    async def _settle(self, ctx: RequestContext) -> None:
        """A limited key's reservations settled with the real usage, leases released; survives a cancellation."""
        assert self.settle is not None
        task = asyncio.get_running_loop().create_task(self.settle(ctx))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)
            raise

    def _tracking(self, send: Any, ctx: RequestContext) -> Any:
        headers = [(b"x-request-id", ctx.request_id.encode()), *self.extra_headers]

        async def tracked(message: Any) -> None:
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        return tracked

    async def _serve(self, endpoint: Endpoint, ctx: RequestContext, scope: Any, receive: Any, send: Any) -> None:
        watch: ClientWatch | None = None
        try:
            headers = scope["headers"]
            declared = None
            token = None
            for name, value in headers:
                if name == b"content-length":
                    declared = int(value) if value.isdigit() else None
            query = scope.get("query_string", b"")
            token = token_from_headers(headers)
            if token is None and endpoint.query_key and query:
                token = token_from_query(query)
            ctx.principal = await self.auth.resolve(token)
            body = await read_body(receive, declared, self.max_request_bytes)
            ctx.request_bytes = len(body)
            ctx.body = body
            ctx.answering = (self, send)
            watch = ClientWatch(receive, self.watches)
            answer = await endpoint(Call(ctx, body, headers, query))
            if answer.stream is None:
                await self._send_json(
                    send, ctx, answer.status, answer.body, answer.headers, answer.content_type or b"application/json"
                )
            else:
                await self._send_stream(send, ctx, answer, watch, endpoint)
        except GatewayError as exc:
            await self._send_error(send, ctx, exc, exc.headers, endpoint)
        except asyncio.CancelledError:
            if watch is not None and watch.absorb():
                ctx.status = ctx.status or 499
                ctx.error_code = ctx.error_code or "client_closed"
                log.info("client closed the connection; upstream call cancelled (%s %s)", ctx.method, ctx.path)
                return
            early = ctx.early
            if early is not None and not early.taken:
                # The server is shutting down while a stream answered early still waited for Google.
                await self._end_stream(send, endpoint, ctx)
                return
            task = asyncio.current_task()
            if ctx.status or task is None:  # a stream already ended itself (_send_stream)
                raise
            # Not the client: the server is shutting down and the grace is over, before any answer.
            error = GatewayError(self.shutdown_message, status=503, code="server_shutting_down")
            try:
                await self._send_error(send, ctx, error, {"retry-after": "1"}, endpoint)
            except Exception:  # the connection may be gone already
                pass
            task.uncancel()  # the answer is complete: no traceback per request
        except Exception:
            log.exception("unhandled error on %s %s (request id %s)", ctx.method, ctx.path, ctx.request_id)
            await self._send_error(send, ctx, internal_error(ctx.request_id), {}, endpoint)
        finally:
            if watch is not None:
                watch.close()
            early = ctx.early
            if early is not None and not early.taken:  # the stream never opened
                early.cancel()
                self.recorder.stream_ended()
            ctx.answering = ctx.early = None  # (its task holds the context: no cycle left to the collector)

    async def _send_error(
        self, send: Any, ctx: RequestContext, exc: GatewayError, headers: dict[str, str], endpoint: Endpoint
    ) -> None:
        ctx.failed(exc)
        if ctx.status:  # the answer has started: nothing more can be said
            return
        await self._send_json(send, ctx, exc.status, endpoint.error_body(exc, ctx.request_id), headers)

    async def _send_json(
        self, send: Any, ctx: RequestContext, status: int, body: bytes, headers: dict[str, str],
        content_type: bytes = b"application/json",
    ) -> None:
        raw = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", ctx.request_id.encode())]
        raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        if ctx.admission is not None:
            raw.extend(ctx.admission.raw_headers)
        elif ctx.principal.limited and self.peek_limits is not None:  # refused, or failed before its admission
            raw.extend(await self.peek_limits(ctx.principal, frozenset(name for name, _ in raw)))
        raw.extend(self.extra_headers)
        ctx.status = status
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await self._free(ctx)  # before the last bytes: the client's next request finds its slot free
        await send({"type": "http.response.body", "body": body})

    async def _free(self, ctx: RequestContext) -> None:
        """A whole answer's limits, just before its last bytes: on Redis the whole settlement at once (leases,
        tokens, budgets: one round trip instead of a release now and a settlement in the `finally`), else the
        leases (the in-process settlement in the `finally` costs nothing to wait for)."""
        admission = ctx.admission
        if admission is None:
            return
        if admission.backend.shared:
            await self._price_and_settle(ctx)
        else:
            await release_leases(ctx)

    def stream_headers(
        self, ctx: RequestContext, headers: dict[str, str], content_type: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        """The headers of a streamed answer (SSE unless `content_type` says otherwise)."""
        raw = [*SSE_HEADERS, (b"x-request-id", ctx.request_id.encode())]
        if content_type is not None:
            raw[0] = (b"content-type", content_type)
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
        if ctx.admission is not None:
            raw.extend(ctx.admission.raw_headers)
        raw.extend(self.extra_headers)
        return raw

    async def _send_stream(
        self, send: Any, ctx: RequestContext, answer: Answer, watch: ClientWatch, endpoint: Endpoint
    ) -> None:
        """`200 text/event-stream` (or the answer's type), one `send` per piece the body yields; the body is always closed."""
        assert answer.stream is not None
        body = answer.stream
        early = ctx.early
        if early is not None:  # 200 and keep-alives went out while the stream opened
            early.taken = True
        else:
            ctx.status = 200
            self.recorder.stream_started()
        try:
            if early is None:
                raw = self.stream_headers(ctx, answer.headers, answer.content_type)
                await send({"type": "http.response.start", "status": 200, "headers": raw})
            async for data in body:
                if ctx.first_token is None and data is not KEEPALIVE:
                    ctx.mark_first_token()
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await release_leases(ctx)  # (the SSE pump released them before its last events already)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            ctx.error_code = ctx.error_code or "client_closed"  # the client's socket failed mid-write
        except asyncio.CancelledError:
            if not watch.gone:  # not the client: the server is shutting down (grace over)
                await self._end_stream(send, endpoint, ctx)
                return
            raise
        finally:
            self.recorder.stream_ended()
            await body.aclose()  # type: ignore[attr-defined]

    async def _end_stream(self, send: Any, endpoint: Endpoint, ctx: RequestContext) -> None:
        """A started stream cut by the shutdown (grace over): one error event ends it, and the request's task ends
        normally (a cancelled one would have the server log a traceback per stream)."""
        ctx.error_code = "server_shutting_down"
        error = GatewayError(self.shutdown_message, status=503, code="server_shutting_down")
        event = b"data: " + endpoint.error_body(error, ctx.request_id) + b"\n\n"
        try:
            await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:
            pass
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
