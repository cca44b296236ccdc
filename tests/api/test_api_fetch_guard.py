"""The outbound-fetch guard (app/gateway/fetch.py), end to end and at the unit level.

Real local HTTP servers on three loopback addresses stand for the network:
`victim` (127.0.0.1) is an internal service no fetch may reach; `alpha`
(127.0.0.2) and `beta` (127.0.0.3) are trusted media servers in
`media.allow_hosts`. Through the gateway (over HTTP, against the fake Gemini)
each refusal must be a 400 naming the parameter, say nothing of the target,
and leave the victim without a single request. The victim listens on a random
port, which the tests add to the guard's public ports, so that what refuses it
is the address rule and not merely the port rule.

The unit tests drive a `FetchGuard` with a scripted resolver and record every
address the connector dials (each one is routed to `alpha`, standing in for
"the Internet"), to show that a name is checked at connect time, on exactly
the addresses the connection then uses.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohappyeyeballs
import httpx
import openai
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from app.errors import InvalidRequest
from app.gateway.fetch import PUBLIC_PORTS, FetchGuard, Refused, ip_literal, is_public
from gateway_harness import FakeGemini, GatewayServer, LoopThread, gateway_settings

from .api_helpers import assert_openai_error
from .test_api_media import PNG, PNG_B64, image_message

MODEL = "gemini-2.5-flash"
PARAM = "messages[0].content[1].image_url.url"
MAX_BYTES = 1000
TIMEOUT = 1.0
INLINED_PNG = {"inlineData": {"mimeType": "image/png", "data": PNG_B64}}


class Server:
    """A local HTTP server on one address; records the path of every request it gets."""

    def __init__(self, loop: LoopThread, host: str) -> None:
        self.host = host
        self.hits: list[str] = []
        loop.run(self._start())

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, 0).start()
        self.port: int = self.runner.addresses[0][1]
        self.url = f"http://{self.host}:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request.path_qs)
        name = request.match_info["name"]
        if name == "pic":
            return web.Response(body=PNG, content_type="image/png")
        if name == "big":
            return web.Response(body=b"\0" * (MAX_BYTES * 5), content_type="image/png")
        if name == "r":  # ?to=<location>[&delay=<seconds>]
            await asyncio.sleep(float(request.query.get("delay", 0)))
            raise web.HTTPFound(request.query["to"])
        if name == "fat-r":  # a redirect with a body far over the size bound: never read
            response = web.StreamResponse(status=302, headers={"location": request.query["to"]})
            response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                for _ in range(64):
                    await response.write(b"\0" * 65536)
                await response.write_eof()
            except (ConnectionError, RuntimeError):
                pass
            return response
        return web.Response(status=404)


class Network:
    def __init__(self) -> None:
        self.loop = LoopThread("fetch-guard-servers")
        self.victim = Server(self.loop, "127.0.0.1")
        self.alpha = Server(self.loop, "127.0.0.2")
        self.beta = Server(self.loop, "127.0.0.3")

    def reset(self) -> None:
        for server in (self.victim, self.alpha, self.beta):
            server.hits.clear()

    def stop(self) -> None:
        for server in (self.victim, self.alpha, self.beta):
            self.loop.run(server.runner.cleanup())
        self.loop.stop()


def via(server: Server, to: str, delay: float = 0.0, kind: str = "r") -> str:
    """A URL on `server` that redirects to `to`."""
    query = {"to": to, "delay": str(delay)} if delay else {"to": to}
    return str(URL(f"{server.url}/{kind}").with_query(query))


@pytest.fixture(scope="module")
def net() -> Iterator[Network]:
    network = Network()
    try:
        yield network
    finally:
        network.stop()


@pytest.fixture(scope="module")
def guarded(fake_gemini: FakeGemini, net: Network) -> Iterator[GatewayServer]:
    media = {"fetch_urls": True, "allow_hosts": ["127.0.0.2", "127.0.0.3"], "fetch_max_bytes": MAX_BYTES}
    server = GatewayServer(gateway_settings(fake_gemini.url, media={**media, "fetch_timeout": TIMEOUT}))
    server.state.fetcher.public_ports = PUBLIC_PORTS | {net.victim.port}
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gw(guarded: GatewayServer, net: Network, fake: FakeGemini) -> GatewayServer:
    net.reset()
    return guarded


def post(gw: GatewayServer, url: str) -> httpx.Response:
    body = {"model": MODEL, "messages": image_message(url)}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=30)


def assert_refused(r: httpx.Response, fake: FakeGemini, *hidden: str) -> str:
    err = assert_openai_error(r, 400, param=PARAM, type="invalid_request_error", code="invalid_value")
    assert PARAM in err["message"]
    for text in hidden:
        assert text not in err["message"], err["message"]
    assert fake.stats()["requests"] == 0
    return str(err["message"])


# -- end to end --------------------------------------------------------------------------------------------

INTERNAL = [
    "http://127.0.0.1:{port}/x",
    "http://2130706433:{port}/x",  # decimal
    "http://0x7f000001:{port}/x",  # hex
    "http://0x7f.1:{port}/x",
    "http://0177.0.0.1:{port}/x",  # octal
    "http://127.1:{port}/x",  # short
    "http://127.0.0.1.:{port}/x",  # trailing dot
    "http://[::ffff:127.0.0.1]:{port}/x",  # IPv4-mapped IPv6
    "http://[::127.0.0.1]:{port}/x",  # IPv4-compatible IPv6
    "http://127.0.0.2@127.0.0.1:{port}/x",  # userinfo naming an allowed host; the host is the victim
    "http://localhost:{port}/x",  # a name that resolves to loopback
    "http://0.0.0.0:{port}/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",  # NAT64 of 169.254.169.254
    "file:///etc/passwd",
    "gopher://127.0.0.1:{port}/_x",
]


@pytest.mark.parametrize("how", ["direct", "redirect"])
@pytest.mark.parametrize("spelling", INTERNAL)
def test_internal_targets_are_refused(gw, net, fake, how, spelling):
    target = spelling.format(port=net.victim.port)
    url = target if how == "direct" else via(net.alpha, target)
    hidden = [URL(target).raw_host or target, str(net.victim.port)] if how == "redirect" else []  # never echoed
    message = assert_refused(post(gw, url), fake, *hidden)
    if how == "redirect":
        assert "redirects" in message
        assert len(net.alpha.hits) == 1 and net.alpha.hits[0].startswith("/r?")
    assert net.victim.hits == []


def test_allowed_host_is_fetched_and_inlined(gw, net, fake):
    r = post(gw, net.alpha.url + "/pic")
    assert r.status_code == 200, r.text
    assert fake.last_body()["contents"][0]["parts"][1] == INLINED_PNG
    assert net.alpha.hits == ["/pic"]


def test_allowed_host_may_redirect_to_another_allowed_host(gw, net, fake):
    r = post(gw, via(net.alpha, net.beta.url + "/pic"))
    assert r.status_code == 200, r.text
    assert fake.last_body()["contents"][0]["parts"][1] == INLINED_PNG
    assert net.beta.hits == ["/pic"]


def test_trust_is_not_lent_through_a_redirect(gw, net, fake):
    """alpha is trusted, the victim is not: alpha's redirect does not make it reachable (openai SDK's view)."""
    messages: Any = image_message(via(net.alpha, net.victim.url + "/pic"))
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    with client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert caught.value.param == PARAM
    assert "127.0.0.1" not in caught.value.message
    assert net.victim.hits == []
    assert fake.stats()["requests"] == 0


def test_three_redirects_are_followed_four_are_not(gw, net, fake):
    three = via(net.alpha, via(net.beta, via(net.alpha, net.beta.url + "/pic")))
    r = post(gw, three)
    assert r.status_code == 200, r.text
    net.reset()
    fake.reset()
    four = via(net.beta, three)
    message = assert_refused(post(gw, four), fake)
    assert "more than 3" in message
    assert net.beta.hits.count("/pic") == 0  # the fourth redirect was not followed
    assert len(net.alpha.hits) + len(net.beta.hits) == 4


def test_size_bound_holds_after_redirects(gw, net, fake):
    message = assert_refused(post(gw, via(net.alpha, via(net.beta, net.alpha.url + "/big"))), fake)
    assert str(MAX_BYTES) in message


def test_redirect_bodies_are_not_read(gw, net, fake):
    start = time.monotonic()
    r = post(gw, via(net.alpha, net.beta.url + "/pic", kind="fat-r"))
    assert r.status_code == 200, r.text
    assert time.monotonic() - start < TIMEOUT


def test_one_deadline_covers_the_whole_chain(gw, net, fake):
    """Each hop answers well within fetch_timeout; together they do not."""
    hop = TIMEOUT * 0.45
    chain = via(net.alpha, via(net.beta, via(net.alpha, net.beta.url + "/pic", delay=hop), delay=hop), delay=hop)
    start = time.monotonic()
    message = assert_refused(post(gw, chain), fake)
    elapsed = time.monotonic() - start
    assert "timed out" in message
    assert TIMEOUT * 0.9 < elapsed < TIMEOUT + 1.0
    assert "/pic" not in net.beta.hits


# -- unit level: names are checked at connect time, on the addresses the connection uses ------------------------


class ScriptedResolver(AbstractResolver):
    """Answers each lookup with the next list of addresses (the last one repeats)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls.append(host)
        addresses = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        pass


@pytest.fixture
def dialled(monkeypatch: pytest.MonkeyPatch, net: Network) -> list[str]:
    """Every address this test's connector dials; each dial really goes to alpha.

    (Only dials from the test's own thread are intercepted; the gateways and the
    fake Gemini run in other threads and connect as usual.)
    """
    real = aiohappyeyeballs.start_connection
    seen: list[str] = []
    alpha = [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (net.alpha.host, net.alpha.port))]

    async def start_connection(addr_infos: Any, **kwargs: Any) -> socket.socket:
        if threading.current_thread() is not threading.main_thread():
            return await real(addr_infos, **kwargs)
        seen.extend(info[4][0] for info in addr_infos)
        return await real(list(alpha), **kwargs)

    monkeypatch.setattr(aiohappyeyeballs, "start_connection", start_connection)
    net.reset()
    return seen


async def guard_with(resolver: AbstractResolver, **kwargs: Any) -> FetchGuard:
    guard = FetchGuard(MAX_BYTES, 5.0, resolver=resolver, **kwargs)
    await guard.start()
    return guard


@pytest.mark.anyio
async def test_rebinding_name_never_leads_to_a_connection_to_loopback(dialled, net):
    """The lookup that is checked is the lookup the connection uses; the next lookup is checked anew."""
    resolver = ScriptedResolver(["93.184.216.34"], ["127.0.0.1"])
    guard = await guard_with(resolver)
    try:
        media = await guard.fetch("http://rebind.example/pic", "p")
        assert (media.mime, media.data) == ("image/png", PNG)
        assert resolver.calls == ["rebind.example"] and dialled == ["93.184.216.34"]
        with pytest.raises(InvalidRequest) as caught:
            await guard.fetch("http://rebind.example/pic", "p")
    finally:
        await guard.close()
    assert caught.value.param == "p" and "127.0.0.1" not in caught.value.message
    assert resolver.calls == ["rebind.example"] * 2 and dialled == ["93.184.216.34"]
    assert net.alpha.hits == ["/pic"]


@pytest.mark.anyio
async def test_rebinding_between_redirect_hops_is_caught(dialled, net):
    """A name that redirects to itself is looked up and checked again for the second hop."""
    resolver = ScriptedResolver(["93.184.216.34"], ["127.0.0.1"])
    guard = await guard_with(resolver)
    try:
        with pytest.raises(InvalidRequest) as caught:
            await guard.fetch("http://rebind.example/r?to=http://rebind.example/pic", "p")
    finally:
        await guard.close()
    assert "redirects to a location the gateway may not fetch" in caught.value.message
    assert resolver.calls == ["rebind.example"] * 2 and dialled == ["93.184.216.34"]
    assert len(net.alpha.hits) == 1 and net.alpha.hits[0].startswith("/r?")


ANSWERS = [["10.0.0.5"], ["93.184.216.34", "127.0.0.1"], ["2606:4700::1", "fd00::1"], ["::ffff:10.1.2.3"]]


@pytest.mark.anyio
@pytest.mark.parametrize("answer", ANSWERS)
async def test_every_resolved_address_must_be_public(dialled, answer):
    resolver = ScriptedResolver(answer)
    guard = await guard_with(resolver)
    try:
        with pytest.raises(InvalidRequest) as caught:
            await guard.fetch("http://intranet.example/pic", "p")
    finally:
        await guard.close()
    assert caught.value.status == 400 and caught.value.param == "p"
    assert resolver.calls == ["intranet.example"] and dialled == []
    assert not any(a in caught.value.message for a in answer)


@pytest.mark.anyio
async def test_other_ports_only_for_allowed_hosts(dialled):
    resolver = ScriptedResolver(["93.184.216.34"])
    guard = await guard_with(resolver, allow_hosts=["media.internal"])
    try:
        with pytest.raises(InvalidRequest):
            await guard.fetch("http://public.example:8080/pic", "p")
        assert resolver.calls == [] and dialled == []  # refused before any lookup
        media = await guard.fetch("http://media.internal:8080/pic", "p")
        assert media.data == PNG
    finally:
        await guard.close()


@pytest.mark.anyio
async def test_allowed_name_may_be_internal_for_its_own_hop_only(dialled):
    resolver = ScriptedResolver(["10.0.0.5"])
    guard = await guard_with(resolver, allow_hosts=["media.internal"])
    try:
        assert (await guard.fetch("http://media.internal/pic", "p")).data == PNG
        with pytest.raises(InvalidRequest) as caught:
            await guard.fetch("http://media.internal/r?to=http://other.internal/pic", "p")
        assert "other.internal" not in caught.value.message
    finally:
        await guard.close()
    assert dialled == ["10.0.0.5", "10.0.0.5"]
    assert resolver.calls == ["media.internal", "media.internal", "other.internal"]


# -- unit level: the address and URL rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, public",
    [
        ("8.8.8.8", True),
        ("2606:4700::1", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("169.254.169.254", False),
        ("0.0.0.0", False),
        ("255.255.255.255", False),
        ("224.0.0.1", False),
        ("ff0e::1", False),  # global multicast
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("::127.0.0.1", False),  # IPv4-compatible
        ("64:ff9b::7f00:1", False),  # NAT64
        ("2002:7f00:1::", False),  # 6to4
        ("2002:a00:1::", False),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo
    ],
)
def test_is_public(address, public):
    assert is_public(ipaddress.ip_address(address)) is public


NON_CANONICAL = ["2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "127.1", "127.0.0.1.", "1.2.3.4.5", "0", "a.0x1"]


@pytest.mark.parametrize("host", NON_CANONICAL)
def test_numeric_hosts_must_be_canonical(host):
    with pytest.raises(Refused):
        ip_literal(host)


@pytest.mark.parametrize("host, literal", [("8.8.8.8", "8.8.8.8"), ("::1", "::1"), ("example.com", None), ("1x.com", None)])
def test_ip_literal(host, literal):
    got = ip_literal(host)
    assert (str(got) if got else None) == literal


def test_check_reads_the_host_as_the_connector_does():
    guard = FetchGuard(MAX_BYTES, 1.0, allow_hosts=["media.internal", "127.0.0.2"])
    for url in [
        "http://８.８.８.８/x",  # full-width digits: yarl makes it 8.8.8.8
        "https://example.com/x",
        "http://media.internal:8080/x",
        "http://MEDIA.internal./x",
        "http://127.0.0.2:9/x",
        "http://127.0.0.1@example.com/x",
    ]:
        guard.check(URL(url))
    for url in [
        "http://１２７.0.0.1/x",
        "http://example.com@127.0.0.1/x",
        "http://127.0.0.3:8080/x",
        "http://example.com:8080/x",
        "ftp://example.com/x",
        "http:///x",
    ]:
        with pytest.raises(Refused):
            guard.check(URL(url))


# -- the Responses API fetches through the same guard -------------------------------------------------------


def post_responses(gw: GatewayServer, part: dict[str, Any]) -> httpx.Response:
    body = {"model": MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": "Look"}, part]}]}
    return httpx.post(gw.url + "/v1/responses", json=body, timeout=30)


@pytest.mark.parametrize("kind", ["input_image", "input_file"])
def test_responses_media_urls_are_fetched_through_the_guard(gw, net, fake, kind):
    part = {"type": kind, "image_url" if kind == "input_image" else "file_url": net.alpha.url + "/pic"}
    r = post_responses(gw, part)
    assert r.status_code == 200, r.text
    assert fake.last_body()["contents"][0]["parts"][1] == INLINED_PNG
    assert net.alpha.hits == ["/pic"]


@pytest.mark.parametrize("kind", ["input_image", "input_file"])
def test_responses_internal_urls_are_refused(gw, net, fake, kind):
    field = "image_url" if kind == "input_image" else "file_url"
    r = post_responses(gw, {"type": kind, field: via(net.alpha, f"http://127.0.0.1:{net.victim.port}/x")})
    err = assert_openai_error(r, 400, param=f"input[0].content[1].{field}", code="invalid_value")
    assert str(net.victim.port) not in err["message"] and "redirects" in err["message"]
    assert net.victim.hits == [] and fake.stats()["requests"] == 0
