"""The policy around one upstream call: keys, retries, fall-back, attempts.

`Dispatcher.complete()` (non-streamed) and `Dispatcher.open_stream()` run the
same loop over the route's targets:

* for each target, translate the request for that model (`prepare(target)`);
* pick a credential from the target's pool (or the client's own key in
  bring-your-own-key mode) and call Google;
* before the first byte reaches the client, retry 429, 500, 502, 503, 504 and
  connection failures with exponential backoff and jitter, honouring Google's
  `RetryInfo` up to `retry.max_retry_delay`; a 429 first moves to another key
  of a different quota group; when a target is exhausted, fall back to the
  next target of the route;
* MALFORMED_FUNCTION_CALL / UNEXPECTED_TOOL_CALL answers are retried
  `retry.malformed_function_call` times, then reported as an error;
* client errors (400, 403) end the loop at once and never penalise a key;
* refused credentials: an access token Google refused although google-auth
  still trusted it (revoked, clock skew) is refreshed and the call repeated
  once; a refused API key (or a token refused again) is parked and the next
  key or target is tried; an upstream whose credentials cannot get a token at
  all falls back to the next target.

Every request's outcome is reported in `x-gemini-proxy-attempts` /
`x-gemini-proxy-target` and in the log (attempts, target, credential label;
never a key): at info level when it took more than one attempt or failed.

A stream counts as started once its first event arrived; until then every
failure is still retryable. (If that takes longer than a keep-alive interval,
the route has meanwhile answered 200 and sends keep-alive comments, so a final
failure becomes an error event instead of an HTTP error.) After the first
event, the route turns failures into an in-stream error event; nothing is
retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from app.errors import (
    AuthenticationFailed,
    GatewayError,
    ModelNotFound,
    RateLimited,
    UpstreamCredentialsFailed,
    UpstreamError,
)
from app.gateway.routing import Target
from app.gateway.upstreams import Credential
from app.settings import RetrySettings
from app.translate.chat_request import GeminiCall
from app.translate.chat_response import BrokenToolCall, broken_finish
from app.upstream.auth import ApiKeyAuth
from app.upstream.client import UpstreamClient, UpstreamStream
from app.upstream.errors import SDK_MAX_RETRY_AFTER, error_from_google, is_credentials_error
from app.upstream.sse import SSEDecoder

log = logging.getLogger("gemini_proxy.dispatch")

T = TypeVar("T")
RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass
class Outcome:
    """Which target served the request, after how many attempts."""

    target: Target
    call: GeminiCall
    attempts: int
    credential: str = ""

    def headers(self) -> dict[str, str]:
        return {"x-gemini-proxy-attempts": str(self.attempts), "x-gemini-proxy-target": self.target.label}


@dataclass
class OpenedStream:
    stream: UpstreamStream
    decoder: SSEDecoder
    first_events: list[bytes | dict[str, Any]] = field(default_factory=list)  # as `SSEDecoder.feed_payloads`
    started: Any = None  # what the caller's `begin` made of the first events


class Dispatcher:
    def __init__(
        self,
        client: UpstreamClient,
        retry: RetrySettings,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.retry = retry
        self._sleep = sleep
        self._rng = rng

    def backoff(self, tries: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = min(self.retry.backoff_max, self.retry.backoff_initial * 2 ** (tries - 1))
        return base * (0.5 + self._rng() / 2)

    async def _run(
        self,
        targets: list[Target],
        prepare: Callable[[Target], GeminiCall],
        once: Callable[[Target, GeminiCall, bytes, dict[str, str]], Awaitable[T]],
        client_key: str | None,
    ) -> tuple[T, Outcome]:
        attempts = 0
        malformed_left = self.retry.malformed_function_call
        token_renewed = False
        last: GatewayError | None = None
        for target in targets:
            call = prepare(target)
            body = orjson.dumps(call.body)
            upstream = target.upstream
            tries = 0
            while tries < self.retry.max_attempts:
                cred: Credential | None
                if client_key is not None:
                    cred = Credential(ApiKeyAuth(client_key), "client-key", "client")
                else:
                    cred = upstream.pick()
                if cred is None:
                    if upstream.all_parked():  # Google refused every credential: the operator's problem
                        last = UpstreamCredentialsFailed()
                        break
                    wait = upstream.wait_time()
                    if target is targets[-1] and wait <= self.retry.max_retry_delay:
                        await self._sleep(wait)
                        continue
                    resting = {"retry-after": str(max(1, int(wait + 0.999)))}
                    if wait > SDK_MAX_RETRY_AFTER:  # e.g. a daily quota: SDKs should not keep trying
                        resting["x-should-retry"] = "false"
                    last = last or RateLimited(
                        f"Every key of upstream '{upstream.name}' is resting after rate limits.", headers=resting
                    )
                    break
                try:
                    headers = await cred.auth.headers()
                except UpstreamCredentialsFailed as exc:  # no token (logged by auth): try the next target
                    last = exc
                    break
                tries += 1
                attempts += 1
                try:
                    result = await once(target, call, body, headers)
                except BrokenToolCall as exc:
                    log.warning("%s ended with %s (attempt %d)", target.label, exc.reason, attempts)
                    if malformed_left > 0:
                        malformed_left -= 1
                        tries -= 1
                        continue
                    exc.headers.update(Outcome(target, call, attempts).headers())
                    raise
                except UpstreamError as exc:
                    last = exc
                    if is_credentials_error(exc):
                        if client_key is not None:
                            raise AuthenticationFailed(
                                "Google rejected the API key you sent as your bearer token.",
                                headers=Outcome(target, call, attempts).headers(),
                            ) from None
                        refused = getattr(cred.auth, "refused", None)
                        if refused is not None and not token_renewed:
                            token_renewed = True
                            refused(headers)
                            log.warning(
                                "Google refused the access token of %s (%s); refreshing it", cred.label,
                                exc.reason or exc.google_status,
                            )
                            tries -= 1  # the same call with a new token: not a retry of a failure
                            continue
                        log.error(
                            "Google refused the credentials %s of upstream %s (%s %s); check the configuration",
                            cred.label, upstream.name, exc.google_code, exc.reason or exc.google_status,
                        )
                        upstream.park(cred)
                        last = UpstreamCredentialsFailed()
                        if upstream.wait_time() > 0:
                            break  # no other key of this upstream is usable: next target
                        tries -= 1  # another key: not a retry of the same call
                        continue
                    if exc.status == 404:
                        break  # this upstream lacks the model: try the next target
                    if exc.google_code not in RETRYABLE and exc.status not in (502, 504):
                        exc.headers.update(Outcome(target, call, attempts).headers())
                        raise
                    log.info(
                        "%s attempt %d failed: %s %s", target.label, attempts, exc.google_code or exc.status, exc.message[:200]
                    )
                    if exc.google_code == 429 and client_key is None:
                        rest = upstream.cool_down(cred, exc.retry_after, daily=exc.daily_quota)
                        if upstream.wait_time() == 0:
                            tries -= 1  # another quota group can serve it right now
                            continue
                        if rest > self.retry.max_retry_delay:
                            break
                    if tries >= self.retry.max_attempts:
                        break
                    delay = self.backoff(tries, exc.retry_after)
                    if delay > self.retry.max_retry_delay:
                        break
                    await self._sleep(delay)
                    continue
                outcome = Outcome(target, call, attempts, cred.label)
                if attempts > 1:
                    log.info("%s served the request after %d attempts (credential %s)", target.label, attempts, cred.label)
                else:
                    log.debug("%s served the request at the first attempt (credential %s)", target.label, cred.label)
                return result, outcome
        if last is None:
            raise ModelNotFound(targets[0].model if targets else "")
        log.log(
            logging.WARNING if last.status >= 429 else logging.INFO,
            "request failed after %d attempt(s) on %s: %s %s",
            attempts, ", ".join(dict.fromkeys(t.label for t in targets)), last.status, last.message[:200],
        )
        last.headers.setdefault("x-gemini-proxy-attempts", str(attempts))
        raise last

    async def complete(
        self, targets: list[Target], prepare: Callable[[Target], GeminiCall], client_key: str | None = None
    ) -> tuple[dict[str, Any], Outcome]:
        async def once(target: Target, call: GeminiCall, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
            response = await self.client.post_json(target.upstream.endpoint.generate_url(target.model), body, headers)
            broken = broken_finish(response)
            if broken is not None:
                raise broken
            return response

        return await self._run(targets, prepare, once, client_key)

    async def open_stream(
        self,
        targets: list[Target],
        prepare: Callable[[Target], GeminiCall],
        client_key: str | None,
        begin: Callable[[GeminiCall, list[bytes | dict[str, Any]]], Any],
    ) -> tuple[OpenedStream, Outcome]:
        """Open a stream and wait for its first events.

        `begin(call, first_events)` (the route's translation of them, from
        `SSEDecoder.feed_payloads`) runs here, inside the retry loop: an error
        event, a malformed function call or a blocked prompt it raises is handled
        like any failure before the first byte.
        """
        async def once(target: Target, call: GeminiCall, body: bytes, headers: dict[str, str]) -> OpenedStream:
            stream = await self.client.open_stream(target.upstream.endpoint.stream_url(target.model), body, headers)
            opened = OpenedStream(stream, SSEDecoder())
            try:
                while not opened.first_events:
                    data = await stream.read()
                    if not data:
                        opened.first_events = opened.decoder.flush()
                        break
                    opened.first_events = opened.decoder.feed_payloads(data)
                opened.started = begin(call, opened.first_events)
            except BaseException:
                stream.close()
                raise
            return opened

        return await self._run(targets, prepare, once, client_key)
