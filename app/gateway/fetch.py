"""The outbound-fetch guard: every URL the gateway fetches on a client's behalf.

Policy and reasons: docs/security.md, "What the gateway fetches on a client's
behalf, and how that is guarded". For the first URL and each redirect (followed
here by hand, at most `MAX_REDIRECTS`), before connecting: http(s) only; a host
in `media.allow_hosts` may use any port and address, for its own hop only; any
other host must use a port in `PUBLIC_PORTS`, and every address it stands for
must be public unicast (`is_public`). IP literals are checked in `check` (the
connector skips the resolver for them; a numeric host that is not a canonical
address is refused); names are checked at connect time by the connector's own
resolver, which hands it exactly the addresses it checked (no DNS cache, no
pooled connections), so a rebinding name cannot slip by. One deadline covers
the whole chain, `max_bytes` the final body (redirect bodies are never read).
Refusals are 400s naming the parameter and nothing of the internal network.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from yarl import URL

from app.errors import InvalidRequest
from app.schemas.openai import ChatCompletionRequest
from app.schemas.responses import InputItem
from app.translate.media import is_reference_url, mime_from_name

if TYPE_CHECKING:
    from aiohttp.abc import ResolveResult

MAX_REDIRECTS = 3
PUBLIC_PORTS = frozenset({80, 443})  # ports a host outside `media.allow_hosts` may be fetched on

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MEDIA_PREFIXES = ("image/", "audio/", "video/", "text/", "application/pdf")
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE)  # a last label that makes a host an IPv4 form
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_URL_REFUSED = "the gateway fetches only http(s) URLs of public hosts on the standard ports"
_REDIRECT_REFUSED = "the URL redirects to a location the gateway may not fetch"


class Refused(Exception):
    """A URL or an address the policy forbids; the client learns only that it was refused."""


@dataclass(frozen=True, slots=True)
class FetchedMedia:
    mime: str
    data: bytes

    def inline_data(self) -> dict[str, str]:
        """Gemini's `inlineData` blob."""
        return {"mimeType": self.mime, "data": base64.b64encode(self.data).decode("ascii")}


def is_public(ip: IPAddress) -> bool:
    """Global unicast, also for an IPv4 address embedded in IPv6 (mapped, compatible, NAT64, 6to4, Teredo)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # the connection goes to the IPv4 address itself
            return is_public(ip.ipv4_mapped)
        embedded = [ip.sixtofour, *(ip.teredo or ())]
        if ip in _NAT64 or ip in _V4_COMPATIBLE:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if not all(is_public(v4) for v4 in embedded if v4 is not None):
            return False
    return ip.is_global and not ip.is_multicast


def _address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise Refused from None


def ip_literal(host: str) -> IPAddress | None:
    """The address of a host that is an IP literal, None for a name.

    "Literal" is a superset of what aiohttp's connector takes as one (any ':', or
    only digits and dots) and of what the WHATWG URL standard takes as IPv4 (a
    last label that is a decimal or 0x number): such a host must be a canonical
    address, or it is refused.
    """
    last = host.rstrip(".").rpartition(".")[2]
    if ":" in host or host.replace(".", "").isdigit() or _NUMERIC_LABEL.fullmatch(last):
        return _address(host)
    return None


def _normal_host(host: str) -> str:
    """A host as yarl spells it (lower case, IDNA, compressed IPv6), less a trailing dot: for allow-list matches."""
    host = host.strip().strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return (URL.build(scheme="http", host=host).raw_host or "") if host else ""


class _CheckingResolver(AbstractResolver):
    """Resolves a name for the connector and returns the answers only if every one may be connected to."""

    def __init__(self, guard: FetchGuard, inner: AbstractResolver) -> None:
        self._guard, self._inner = guard, inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        infos = await self._inner.resolve(host, port, family)
        if not self._guard.allowed(host):
            if port not in self._guard.public_ports:
                raise Refused
            for info in infos:
                if not is_public(_address(info["host"])):
                    raise Refused
        return infos  # the connector connects to exactly these addresses

    async def close(self) -> None:
        await self._inner.close()


class FetchGuard:
    """Fetches http(s) URLs for clients under the policy above; `start()` before use, `close()` after."""

    def __init__(
        self,
        max_bytes: int,
        timeout: float,
        allow_hosts: Iterable[str] = (),
        resolver: AbstractResolver | None = None,  # the DNS lookup the checks wrap (a test seam)
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.allow_hosts = frozenset(_normal_host(h) for h in allow_hosts)
        self.public_ports = PUBLIC_PORTS
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    def allowed(self, host: str) -> bool:
        return _normal_host(host) in self.allow_hosts

    def check(self, url: URL) -> None:
        """The rule for one hop, before connecting; raises `Refused` (a name's addresses: at connect time)."""
        host = url.raw_host or ""
        if url.scheme not in ("http", "https") or not host:
            raise Refused
        if self.allowed(host):
            return
        if url.port not in self.public_ports:
            raise Refused
        literal = ip_literal(host)
        if literal is not None and not is_public(literal):
            raise Refused

    async def start(self) -> None:
        resolver = _CheckingResolver(self, self._resolver or DefaultResolver())
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True, limit=32)
        self._session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.DummyCookieJar(), headers={"user-agent": "gemini-proxy"}
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, param: str) -> FetchedMedia:
        """GET `url` for the client, following redirects under the policy; any failure is a 400 naming `param`."""
        assert self._session is not None, "FetchGuard.start() was not called"
        hop = 0
        try:
            async with asyncio.timeout(self.timeout):
                target = URL(url)
                for hop in range(MAX_REDIRECTS + 1):  # noqa: B007 - `hop` tells the refusal below which URL it was
                    self.check(target)
                    async with self._session.get(target, allow_redirects=False) as response:
                        location = response.headers.get("location")
                        if response.status not in _REDIRECT_STATUSES or location is None:
                            return await self._read(response, url, param)
                    try:
                        target = target.join(URL(location))
                    except ValueError:
                        raise Refused from None
                raise _invalid(param, f"the URL redirects more than {MAX_REDIRECTS} times")
        except Refused:
            raise _invalid(param, _REDIRECT_REFUSED if hop else _URL_REFUSED) from None
        except TimeoutError:
            raise _invalid(param, "fetching the URL timed out") from None
        except (aiohttp.ClientError, OSError, ValueError):
            raise _invalid(param, "could not fetch the URL") from None

    async def _read(self, response: aiohttp.ClientResponse, url: str, param: str) -> FetchedMedia:
        if response.status != 200:
            raise _invalid(param, f"fetching the URL gave HTTP {response.status}")
        too_large = _invalid(param, f"the media is larger than {self.max_bytes} bytes")
        if (response.content_length or 0) > self.max_bytes:
            raise too_large
        data = bytearray()
        async for piece in response.content.iter_chunked(65536):
            data += piece
            if len(data) > self.max_bytes:
                raise too_large
        mime = (response.content_type or "").lower()
        if not mime.startswith(_MEDIA_PREFIXES):
            mime = mime_from_name(url) or ""
        if not mime:
            raise _invalid(param, "the URL did not return a media type Gemini accepts")
        return FetchedMedia(mime, bytes(data))


def _invalid(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': {why}.", param=param, code="invalid_value")


# -- chat completions ----------------------------------------------------------------------------------------


def chat_urls_to_fetch(req: ChatCompletionRequest) -> dict[str, str]:
    """url -> param of every http(s) `image_url` that Gemini cannot read by reference (one fetch per URL).

    (`file` parts are never fetched: `file_data` is inline data, an https `file_id` goes to Gemini as a reference.)
    """
    out: dict[str, str] = {}
    for i, msg in enumerate(req.messages):
        if not isinstance(msg.content, list):
            continue
        for j, part in enumerate(msg.content):
            if part.type != "image_url" or part.image_url is None:
                continue
            spec = part.image_url
            url, param = (spec, "image_url") if isinstance(spec, str) else (spec.url, "image_url.url")
            if url.startswith(("http://", "https://")) and not is_reference_url(url):
                out.setdefault(url, f"messages[{i}].content[{j}].{param}")
    return out


async def fetch_chat_media(guard: FetchGuard, req: ChatCompletionRequest) -> dict[str, dict[str, str]]:
    """url -> `inlineData` of every chat media URL the gateway must fetch (the translator's `fetched`)."""
    return await fetch_all(guard, chat_urls_to_fetch(req))


async def fetch_all(guard: FetchGuard, wanted: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """url -> `inlineData` of each wanted URL (url -> the parameter a refusal names), fetched concurrently."""
    if not wanted:
        return {}
    results = await asyncio.gather(*(guard.fetch(url, param) for url, param in wanted.items()))
    return {url: media.inline_data() for url, media in zip(wanted, results, strict=True)}


# -- Responses -------------------------------------------------------------------------------------------------


def responses_urls_to_fetch(items: Iterable[tuple[InputItem, str]]) -> dict[str, str]:
    """url -> param of every http(s) `input_image.image_url` / `input_file.file_url` Gemini cannot read by reference.

    `items` are the request's input items (and those of its stored history) with the parameter that names them.
    """
    out: dict[str, str] = {}
    for item, param in items:
        parts, where = (item.output, "output") if item.type == "function_call_output" else (item.content, "content")
        if not isinstance(parts, list):
            continue
        for j, part in enumerate(parts):
            if part.type == "input_image" and part.image_url:
                url, field = part.image_url, "image_url"
            elif part.type == "input_file" and part.file_url and not part.file_data:
                url, field = part.file_url, "file_url"
            else:
                continue
            if url.startswith(("http://", "https://")) and not is_reference_url(url):
                out.setdefault(url, f"{param}.{where}[{j}].{field}")
    return out
