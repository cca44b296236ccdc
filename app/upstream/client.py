"""The HTTP transport to Google: URLs, one pooled client, JSON calls and streams.

The client is aiohttp, chosen by measurement (bench/README.md): on these
machines `httpx.AsyncClient` cost 3-4x the CPU of aiohttp per proxied request
and collapsed at 64 concurrent requests, and even httpx's API over an aiohttp
transport still doubled the client-side cost. One `ClientSession` with a
bounded connection pool lives for the whole process.

`Endpoint` knows one upstream's URLs (Gemini Developer API or Vertex AI,
regional / global / multi-region hosts, base-URL overrides, and the URLs of
the native Gemini routes in the API version their client asked for). Answers
other than 200 raise `UpstreamError` (built by `upstream/errors.py`, with
Google's answer itself kept on it); connection failures and timeouts raise
`UpstreamUnavailable`. A stream is returned once Google has
answered 200, so that any earlier failure is still an ordinary HTTP error.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from app.errors import UpstreamError, UpstreamUnavailable
from app.upstream.errors import error_from_google

GEMINI_DEFAULT_BASE = "https://generativelanguage.googleapis.com"


def vertex_host(location: str) -> str:
    """Vertex AI host for a location (docs/gemini-facts.md#urls)."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    if location in ("us", "eu"):
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


_VERSIONS = ("v1", "v1beta", "v1beta1", "v1alpha")


def _split_version(base_url: str) -> tuple[str, str | None]:
    """A base URL given with its API version (`.../v1beta`) is the root plus that version."""
    base = base_url.rstrip("/")
    root, _, last = base.rpartition("/")
    if last in _VERSIONS and "://" in root:
        return root, last
    return base, None


# The Gemini API version a native-route client asked for -> the Vertex AI version with the same features.
_VERTEX_VERSIONS = {"v1": "v1", "v1beta": "v1beta1", "v1alpha": "v1beta1"}


@dataclass(frozen=True)
class Endpoint:
    """URLs of one upstream. `model_prefix` ends just before the model id.

    `resource` is what comes between the version and `models/`: nothing on the
    Gemini API, `projects/{p}/locations/{l}/publishers/google/` on Vertex AI.
    """

    kind: str  # "gemini" | "vertex"
    base: str
    version: str
    model_prefix: str
    resource: str = ""

    @classmethod
    def gemini(cls, base_url: str | None = None, version: str | None = None) -> Endpoint:
        base, named = _split_version(base_url or GEMINI_DEFAULT_BASE)
        version = version or named or "v1beta"
        return cls("gemini", base, version, f"{base}/{version}/models/")

    @classmethod
    def vertex(cls, project: str, location: str, base_url: str | None = None, version: str | None = None) -> Endpoint:
        base, named = _split_version(base_url or vertex_host(location))
        version = version or named or "v1"
        resource = f"projects/{project}/locations/{location}/publishers/google/"
        return cls("vertex", base, version, f"{base}/{version}/{resource}models/", resource)

    def url(self, model: str, verb: str, stream: bool = False) -> str:
        """`models/{model}:{verb}` (generateContent, embedContent, predict, ...); streams as SSE."""
        return f"{self.model_prefix}{model}:{verb}?alt=sse" if stream else f"{self.model_prefix}{model}:{verb}"

    def generate_url(self, model: str) -> str:
        return self.url(model, "generateContent")

    def stream_url(self, model: str) -> str:
        return self.url(model, "streamGenerateContent", stream=True)

    def models_url(self) -> str:
        if self.kind == "vertex":  # publisher models are listed by the v1beta1 API only
            return f"{self.base}/v1beta1/publishers/google/models"
        return f"{self.base}/{self.version}/models"

    def native_url(self, version: str, model: str, verb: str) -> str:
        """`models/{model}:{verb}` in the API version a native-route client asked for (Vertex: its equivalent)."""
        if self.kind == "vertex":
            version = _VERTEX_VERSIONS.get(version, self.version)
        return f"{self.base}/{version}/{self.resource}models/{model}:{verb}"

    def native_model_url(self, version: str, model: str = "") -> str:
        """The model resource (`models/{model}`), or the model list without `model`, for a native-route client.

        On Vertex AI these are the publisher models (`publishers.models.get` / `.list`, v1beta1 only).
        """
        if self.kind == "vertex":
            return self.models_url() + (f"/{model}" if model else "")
        return f"{self.base}/{version}/models" + (f"/{model}" if model else "")


@dataclass(frozen=True)
class Timeouts:
    connect: float
    first_byte: float
    total: float
    stream_idle: float


def _google_error(status: int, data: bytes, content_type: str) -> UpstreamError:
    """Google's error answer as an `UpstreamError`, keeping the answer itself for the native routes."""
    error = error_from_google(status, data)
    error.answer = (status, content_type, data)
    return error


def _stream_failure(exc: BaseException) -> UpstreamUnavailable:
    if isinstance(exc, TimeoutError):  # also aiohttp's ServerTimeoutError
        return UpstreamUnavailable("The upstream answer took longer than the total timeout.", status=504)
    return UpstreamUnavailable(f"The upstream connection failed mid-stream ({type(exc).__name__}).")


class UpstreamStream:
    """An open streamed answer: read raw bytes as they arrive; close to cancel.

    Silence is watched by one lazily re-armed timer per stream, not one per read
    (a timer per read cost more than all the translation of a chunk: bench/):
    `read()` notes when data last came; the timer wakes up once per interval,
    and only when the reader has been waiting long enough does it interrupt the
    wait, either for a keep-alive (`keepalive` seconds without data or
    keep-alive, when set) or because the stream stalled (`idle` seconds without
    data).
    """

    __slots__ = (
        "_response", "_content", "_idle", "_keepalive", "done", "_loop", "_timer", "_reader", "_rang",
        "_last_data", "_last_beat",
    )

    def __init__(self, response: aiohttp.ClientResponse, idle: float) -> None:
        self._response = response
        self._content = response.content
        self._idle = idle
        self._keepalive: float | None = None
        self.done = False
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[Any] | None = None  # the task waiting in read(), if any
        self._rang = False
        self._last_data = self._last_beat = self._loop.time()

    @property
    def content_type(self) -> str:
        return self._response.headers.get("content-type", "text/event-stream")

    @property
    def keepalive(self) -> float | None:
        return self._keepalive

    @keepalive.setter
    def keepalive(self, seconds: float | None) -> None:
        """Keep-alive interval (None: none); the next read arms the timer for it."""
        self._keepalive = seconds
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _due(self) -> float:
        due = self._last_data + self._idle
        if self._keepalive is not None:
            due = min(due, self._last_beat + self._keepalive)
        return due

    def _alarm(self) -> None:
        self._timer = None
        if self._reader is None:
            return  # not waiting: the next wait arms the timer again
        due = self._due()
        if self._loop.time() >= due:
            self._rang = True
            self._reader.cancel()
        else:
            self._timer = self._loop.call_at(due, self._alarm)

    async def read(self) -> bytes | None:
        """Next bytes (b"" at the end of the body), or None when a keep-alive is due.

        Silence longer than the stream-idle timeout, the total timeout and a
        broken connection raise UpstreamUnavailable.
        """
        if self._timer is None:  # (an armed timer is never late: the due time only moves later)
            self._timer = self._loop.call_at(self._due(), self._alarm)
        reader = self._reader = asyncio.current_task()
        try:
            data = await self._content.readany()  # returns at once when data is already buffered
        except asyncio.CancelledError:
            if not self._rang:
                raise
            self._rang = False
            if reader is not None and reader.uncancel():  # someone else wants this task cancelled too
                raise
            now = self._loop.time()
            if now >= self._last_data + self._idle:
                raise UpstreamUnavailable("The upstream stream stalled.", status=504) from None
            self._last_beat = now
            return None
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:  # TimeoutError: aiohttp's total timeout
            raise _stream_failure(exc) from None
        finally:
            self._reader = None
        self._last_data = self._last_beat = self._loop.time()
        if not data:
            self.done = True
        return data

    def close(self) -> None:
        """Release the connection after a complete body, else drop it (cancelling Google's work)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.done:
            self._response.release()
        else:
            self._response.close()


class UpstreamClient:
    def __init__(self, timeouts: Timeouts, pool_size: int = 256) -> None:
        self.timeouts = timeouts
        self.pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._stream_timeout = aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect)

    @property
    def ready(self) -> bool:
        return self._session is not None and not self._session.closed

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.pool_size, ttl_dns_cache=300, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=self.timeouts.total, sock_connect=self.timeouts.connect, sock_read=self.timeouts.first_byte
            ),
            # (a user-agent here keeps aiohttp's own out; `skip_auto_headers` would copy the headers per request)
            headers={"user-agent": "gemini-proxy", "content-type": "application/json"},  # not aiohttp's octet-stream
            cookie_jar=aiohttp.DummyCookieJar(),  # one session serves every client: nothing Google sets is sent back
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        return self._session

    async def post_json(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """POST a JSON body, return the parsed JSON answer; raise UpstreamError for non-2xx."""
        return await self._json("POST", url, headers, body)

    async def post_raw(self, url: str, body: bytes, headers: dict[str, str]) -> bytes:
        """POST a JSON body, return the answer's bytes unparsed (a 200); raise UpstreamError otherwise."""
        return (await self.request("POST", url, headers, body))[0]

    async def get_json(self, url: str, headers: dict[str, str]) -> dict[str, Any]:
        return await self._json("GET", url, headers)

    async def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[bytes, str]:
        """One call, its answer's body bytes and content type as they came; raise UpstreamError for non-200."""
        try:
            async with self.session.request(method, url, data=body, headers=headers) as response:
                data = await response.read()
                status = response.status
                content_type = response.headers.get("content-type", "application/json")
        except TimeoutError:
            raise UpstreamUnavailable("The upstream did not answer in time.", status=504) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"Could not reach the upstream ({type(exc).__name__}).") from None
        if status != 200:
            raise _google_error(status, data, content_type)
        return data, content_type

    async def _json(self, method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> dict[str, Any]:
        data, _ = await self.request(method, url, headers, body)
        try:
            result = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable("The upstream sent an answer that is not JSON.") from None
        if isinstance(result, list):  # the array form some Google front ends use
            result = result[0] if result else {}
        return result

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamStream:
        """POST and wait for the response headers (bounded by `first_byte`); raise on non-2xx."""
        headers = {**headers, "accept-encoding": "identity"}
        response = None
        try:
            async with asyncio.timeout(self.timeouts.first_byte):
                response = await self.session.post(url, data=body, headers=headers, timeout=self._stream_timeout)
                if response.status != 200:
                    data = await response.read()
                    response.release()
                    raise _google_error(response.status, data, response.headers.get("content-type", "application/json"))
        except TimeoutError:
            if response is not None:
                response.close()
            raise UpstreamUnavailable("The upstream did not start answering in time.", status=504) from None
        except (aiohttp.ClientError, OSError) as exc:
            if response is not None:
                response.close()
            raise UpstreamUnavailable(f"Could not reach the upstream ({type(exc).__name__}).") from None
        return UpstreamStream(response, self.timeouts.stream_idle)
