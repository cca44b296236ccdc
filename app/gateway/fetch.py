"""Opt-in fetching of http(s) media URLs, to inline them (`media.fetch_urls`).

Guarded against server-side request forgery: every address a host name
resolves to (for the first request and for each redirect) must be a public
unicast address; loopback, private, link-local, multicast, reserved and
unspecified addresses are refused unless the host is in `media.allow_hosts`.
Bounded in size (`media.fetch_max_bytes`) and time (`media.fetch_timeout`).
Runs before translation; the translator receives the bytes.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from app.errors import InvalidRequest
from app.schemas.openai import ChatCompletionRequest
from app.translate.media import is_reference_url, mime_from_name

_MEDIA_PREFIXES = ("image/", "audio/", "video/", "text/", "application/pdf")


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _PublicOnlyResolver(AbstractResolver):
    def __init__(self, allow_hosts: frozenset[str]) -> None:
        self._inner = DefaultResolver()
        self._allow = allow_hosts

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[dict[str, Any]]:
        infos = await self._inner.resolve(host, port, family)
        if host.lower() not in self._allow:
            for info in infos:
                if not is_public(info["host"]):
                    raise aiohttp.ClientConnectorError(
                        None, OSError(f"refusing to fetch from non-public address for host {host!r}")  # type: ignore[arg-type]
                    )
        return infos

    async def close(self) -> None:
        await self._inner.close()


def urls_to_fetch(req: ChatCompletionRequest) -> list[tuple[str, str]]:
    """(url, param) of every http(s) image URL that Gemini cannot read by reference."""
    out = []
    for i, msg in enumerate(req.messages):
        if not isinstance(msg.content, list):
            continue
        for j, part in enumerate(msg.content):
            if part.type != "image_url" or part.image_url is None:
                continue
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            if url.startswith(("http://", "https://")) and not is_reference_url(url):
                out.append((url, f"messages[{i}].content[{j}].image_url.url"))
    return out


class MediaFetcher:
    def __init__(self, max_bytes: int, timeout: float, allow_hosts: Iterable[str] = ()) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._allow = frozenset(h.lower() for h in allow_hosts)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(resolver=_PublicOnlyResolver(self._allow), limit=32)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout), headers={"user-agent": "gemini-proxy"}
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, param: str) -> dict[str, str]:
        assert self._session is not None
        host = (urlsplit(url).hostname or "").lower()
        literal = None
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass
        if literal is not None and host not in self._allow and not is_public(str(literal)):
            raise InvalidRequest(f"Invalid '{param}': refusing to fetch from a non-public address.", param=param, code="invalid_value")
        try:
            async with self._session.get(url, max_redirects=3) as response:
                if response.status != 200:
                    raise InvalidRequest(
                        f"Invalid '{param}': fetching the URL gave HTTP {response.status}.", param=param, code="invalid_value"
                    )
                if (response.content_length or 0) > self.max_bytes:
                    raise InvalidRequest(f"Invalid '{param}': the media is larger than {self.max_bytes} bytes.", param=param, code="invalid_value")
                data = bytearray()
                async for piece in response.content.iter_chunked(65536):
                    data += piece
                    if len(data) > self.max_bytes:
                        raise InvalidRequest(
                            f"Invalid '{param}': the media is larger than {self.max_bytes} bytes.", param=param, code="invalid_value"
                        )
                mime = (response.content_type or "").lower()
        except asyncio.TimeoutError:
            raise InvalidRequest(f"Invalid '{param}': fetching the URL timed out.", param=param, code="invalid_value") from None
        except aiohttp.ClientError as exc:
            raise InvalidRequest(
                f"Invalid '{param}': could not fetch the URL ({type(exc).__name__}).", param=param, code="invalid_value"
            ) from None
        if not mime.startswith(_MEDIA_PREFIXES):
            mime = mime_from_name(url) or ""
        if not mime:
            raise InvalidRequest(f"Invalid '{param}': the URL did not return a media type Gemini accepts.", param=param, code="invalid_value")
        return {"mimeType": mime, "data": base64.b64encode(bytes(data)).decode("ascii")}

    async def fetch_all(self, req: ChatCompletionRequest) -> dict[str, dict[str, str]]:
        wanted = dict(urls_to_fetch(req))  # one fetch per distinct URL
        if not wanted:
            return {}
        results = await asyncio.gather(*(self.fetch(url, param) for url, param in wanted.items()))
        return dict(zip(wanted, results))
