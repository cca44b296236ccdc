"""The policy around upstream calls: credentials, retries, fall-back, attempts.

Generic over what is sent: a handler prepares an `UpstreamCall` (a Gemini
verb such as `generateContent`, `streamGenerateContent`, `embedContent`,
`batchEmbedContents`, `predict` or `countTokens`, and its JSON body) for each
target of the route, and `Dispatcher.complete()` / `Dispatcher.open_stream()`
run the same loop over the targets (docs/design.md#retries):

* pick a credential from the target's pool (or use the client's own key in
  bring-your-own-key mode) and call Google;
* every failure is classified (`classify`) and one small table (`decide`)
  says what follows: retry the same target after a backoff, another
  credential, the next target, a token refresh, or give up;
* the whole retry policy before the first byte is bounded in time: no retry
  whose backoff would end after the budget (`retry.max_total_wait` for
  non-streamed calls, less than one keep-alive interval for streams) is
  started, so a client gets its 429 / 503 with `Retry-After` instead of a
  long wait (a stream that already answered 200 with keep-alives, because a
  slow call was in flight, gets `retry.max_total_wait`);
* when no credential of any target is usable because Google refused them,
  the one whose backoff ends first is tried anyway: the gateway never
  answers "could not authenticate" without calling Google;
* a refused credential leaves rotation for a short, growing backoff and is
  restored by its first success (gateway/upstreams.py); client errors (400,
  a 403 about a resource) never penalise one.

Every attempt is recorded in the request context (upstream, outcome) for the
metrics and the access log; the outcome headers `x-gemini-proxy-attempts` /
`x-gemini-proxy-target` tell the client. Credentials appear in logs only as
labels.

A stream counts as started once `start` (the handler's reading of its first
events) returned; until then every failure is still retried. After that the
handler turns failures into an in-stream error event; nothing is retried.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from app.errors import (
    AuthenticationFailed,
    GatewayError,
    ModelNotFound,
    RateLimited,
    RetryableAnswer,
    UpstreamCredentialsFailed,
    UpstreamError,
)
from app.gateway.routing import Target
from app.gateway.upstreams import Credential, Upstream
from app.pipeline.context import RequestContext
from app.settings import RetrySettings
from app.upstream.auth import ApiKeyAuth
from app.upstream.client import UpstreamClient, UpstreamStream
from app.upstream.errors import SDK_MAX_RETRY_AFTER, is_credentials_error

log = logging.getLogger("gemini_proxy.dispatch")

M = TypeVar("M")
T = TypeVar("T")
RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass(eq=False)
class UpstreamCall(Generic[M]):
    """One request for one target: the verb, the JSON body, and the handler's own data (`meta`)."""

    verb: str
    body: bytes
    meta: M
    stream: bool = False


class Failure(enum.Enum):
    CLIENT = "client"  # the request's own fault: 400, 403 about a resource, ...
    NOT_FOUND = "not_found"  # this upstream lacks the model
    CREDENTIALS = "credentials"  # Google refused the credential itself
    RATE_LIMITED = "rate_limited"  # 429
    UNAVAILABLE = "unavailable"  # 5xx, connection failure, timeout
    BAD_ANSWER = "bad_answer"  # a 200 answer a new try may fix (malformed function call)


class Action(enum.Enum):
    GIVE_UP = "give_up"
    RETRY = "retry"  # the same target again, after a backoff
    REFRESH_TOKEN = "refresh_token"  # the same call with a fresh access token
    NEXT_CREDENTIAL = "next_credential"  # another credential of the same target, at once
    NEXT_TARGET = "next_target"


@dataclass(frozen=True, slots=True)
class Position:
    """Where the loop stands when a failure comes in."""

    can_wait: bool = False  # another try of this target fits the attempt count, the delay bound and the budget
    other_credential: bool = False  # another credential of this target is usable now
    last_target: bool = True
    answers_left: bool = False  # retries left for a bad answer
    token_refreshable: bool = False  # an access token not refreshed yet in this request
    byok: bool = False  # the client's own key: nothing to rotate, a refusal is the client's


def classify(exc: GatewayError) -> Failure:
    if isinstance(exc, RetryableAnswer):
        return Failure.BAD_ANSWER
    if not isinstance(exc, UpstreamError):
        return Failure.CLIENT
    if is_credentials_error(exc):
        return Failure.CREDENTIALS
    if exc.google_code == 429:
        return Failure.RATE_LIMITED
    if exc.status == 404:
        return Failure.NOT_FOUND
    if exc.google_code in RETRYABLE or exc.status in (502, 504):
        return Failure.UNAVAILABLE
    return Failure.CLIENT


def decide(failure: Failure, at: Position) -> Action:
    """What to do after a failure (the retry policy as one table; tests/gateway/test_gw_decide.py)."""
    if failure is Failure.CLIENT:
        return Action.GIVE_UP
    if failure is Failure.BAD_ANSWER:
        return Action.RETRY if at.answers_left else Action.GIVE_UP
    if failure is Failure.NOT_FOUND:
        return Action.GIVE_UP if at.last_target else Action.NEXT_TARGET
    if failure is Failure.CREDENTIALS:
        if at.byok:
            return Action.GIVE_UP
        if at.token_refreshable:
            return Action.REFRESH_TOKEN
        if at.other_credential:
            return Action.NEXT_CREDENTIAL
        return Action.GIVE_UP if at.last_target else Action.NEXT_TARGET
    if failure is Failure.RATE_LIMITED:
        if at.other_credential and not at.byok:
            return Action.NEXT_CREDENTIAL  # another quota group can serve it right now
        if not at.last_target:
            return Action.NEXT_TARGET  # a fall-back serves now; waiting is the last resort
        return Action.RETRY if at.can_wait else Action.GIVE_UP
    # UNAVAILABLE: the same target again first (a blip), then the fall-back
    if at.can_wait:
        return Action.RETRY
    return Action.GIVE_UP if at.last_target else Action.NEXT_TARGET


_ATTEMPT_OUTCOME = {
    Failure.RATE_LIMITED: "rate_limited",
    Failure.CREDENTIALS: "credentials",
}


@dataclass
class Outcome:
    """Which target served the request, after how many attempts."""

    target: Target
    call: UpstreamCall[Any]
    attempts: int
    credential: str = ""

    def headers(self) -> dict[str, str]:
        return {"x-gemini-proxy-attempts": str(self.attempts), "x-gemini-proxy-target": self.target.label}


Once = Callable[[Target, UpstreamCall[Any], dict[str, str]], Awaitable[T]]


class Dispatcher:
    def __init__(
        self,
        client: UpstreamClient,
        retry: RetrySettings,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.retry = retry
        self._sleep = sleep
        self._rng = rng
        self._clock = clock

    def backoff(self, tries: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after
        base = min(self.retry.backoff_max, self.retry.backoff_initial * 2 ** (tries - 1))
        return base * (0.5 + self._rng() / 2)

    def _probe(self, targets: list[Target]) -> tuple[Target, Credential] | None:
        """When no target has a usable credential: the refused one whose backoff ends first."""
        for t in targets:
            if t.upstream.usable(t.model):
                return None
        best: tuple[float, Target, Credential] | None = None
        for target in targets:
            cred = target.upstream.probe(target.model)
            if cred is not None:
                until = target.upstream.wait_time(target.model)
                if best is None or until < best[0]:
                    best = (until, target, cred)
        return None if best is None else (best[1], best[2])

    async def run(
        self,
        targets: list[Target],
        prepare: Callable[[Target], UpstreamCall[Any]],
        once: Once[T],
        *,
        byok_key: str | None = None,
        ctx: RequestContext | None = None,
        budget: float | None = None,
    ) -> tuple[T, Outcome]:
        """Call the targets in order until one answers; raise the error the client should see."""
        started = self._clock()
        late_budget = self.retry.max_total_wait if budget is None else max(budget, self.retry.max_total_wait)
        early_budget = late_budget if budget is None else budget

        def deadline() -> float:
            # A stream already answered 200 (keep-alives) has nothing to gain from an early HTTP
            # error: it gets the non-streamed budget instead of its keep-alive one.
            committed = ctx is not None and ctx.status == 200
            return started + (late_budget if committed else early_budget)

        attempts = 0
        answers_left = self.retry.malformed_function_call
        refreshed = False
        last: GatewayError | None = None
        forced = self._probe(targets) if byok_key is None else None
        if forced is not None:
            targets = [forced[0], *(t for t in targets if t is not forced[0])]
        for index, target in enumerate(targets):
            last_target = index == len(targets) - 1
            upstream, model = target.upstream, target.model
            call = prepare(target)
            tries = 0
            while True:
                cred: Credential | None
                if byok_key is not None:
                    cred = Credential(ApiKeyAuth(byok_key), "client-key", "client")
                elif forced is not None and forced[0] is target:
                    cred, forced = forced[1], None
                    log.warning("every credential is out of rotation; probing %s of upstream %s", cred.label, upstream.name)
                else:
                    cred = upstream.pick(model)
                if cred is None:  # every credential of this target rests after rate limits
                    wait = upstream.wait_time(model)
                    if last_target and wait <= self.retry.max_retry_delay and self._clock() + wait <= deadline():
                        await self._sleep(wait)
                        continue
                    last = last or _resting(upstream, wait)
                    break
                try:
                    headers = await cred.auth.headers()
                except UpstreamCredentialsFailed as exc:  # no token at all (logged by auth): the next target
                    last = exc
                    if ctx is not None:
                        ctx.attempt(upstream.name, "credentials")
                    break
                tries += 1
                attempts += 1
                try:
                    result = await once(target, call, headers)
                except GatewayError as exc:
                    failure = classify(exc)
                    if failure is Failure.RATE_LIMITED and byok_key is None and isinstance(exc, UpstreamError):
                        upstream.cool_down(cred, exc.retry_after, model=model, daily=exc.daily_quota)
                    if failure is Failure.CREDENTIALS and byok_key is None and (refreshed or not hasattr(cred.auth, "refused")):
                        rest = upstream.refuse(cred)
                        if ctx is not None:
                            ctx.credentials_changed = True
                        log.error(
                            "Google refused the credentials %s of upstream %s (%s %s); out of rotation for %.0f s. "
                            "Check the configuration.",
                            cred.label, upstream.name, getattr(exc, "google_code", ""),
                            getattr(exc, "reason", None) or getattr(exc, "google_status", ""), rest,
                        )
                    delay = self.backoff(tries, getattr(exc, "retry_after", None))
                    if failure is Failure.RATE_LIMITED and byok_key is None:
                        delay = max(delay, upstream.wait_time(model))
                    position = Position(
                        can_wait=tries < self.retry.max_attempts
                        and delay <= self.retry.max_retry_delay
                        and self._clock() + delay <= deadline(),
                        other_credential=byok_key is None and upstream.available(model) > 0,
                        last_target=last_target,
                        answers_left=answers_left > 0,
                        token_refreshable=not refreshed and hasattr(cred.auth, "refused"),
                        byok=byok_key is not None,
                    )
                    action = decide(failure, position)
                    if ctx is not None:
                        outcome = _ATTEMPT_OUTCOME.get(failure) or ("error" if action is Action.GIVE_UP else "retry")
                        ctx.attempt(upstream.name, outcome)
                    if action is not Action.GIVE_UP:
                        log.info(
                            "%s attempt %d failed (%s: %s %s); %s", target.label, attempts, failure.value,
                            exc.status, exc.message[:200], action.value,
                        )
                    if action is Action.REFRESH_TOKEN:
                        refreshed = True
                        cred.auth.refused(headers)  # type: ignore[attr-defined]
                        tries -= 1  # the same call with a new token: not a retry of a failure
                        continue
                    if action is Action.NEXT_CREDENTIAL:
                        tries -= 1
                        last = exc
                        continue
                    if action is Action.RETRY:
                        if failure is Failure.BAD_ANSWER:
                            answers_left -= 1
                            tries -= 1
                        elif delay > 0:
                            await self._sleep(delay)
                        continue
                    if action is Action.NEXT_TARGET:
                        last = _client_facing(exc, failure)
                        break
                    error = _client_facing(exc, failure, byok=byok_key is not None)
                    if ctx is not None:  # the upstream and model that gave the answer it ends with (its record's)
                        ctx.served(upstream.name, upstream.provider, model)
                    if failure not in (Failure.CLIENT, Failure.BAD_ANSWER, Failure.NOT_FOUND):
                        _log_failure(targets, attempts, error)
                    error.headers.update(Outcome(target, call, attempts).headers())
                    if error.status in (429, 503):
                        error.headers.setdefault("retry-after", str(max(1, int(delay + 0.999))))
                    raise error from None
                if ctx is not None:
                    ctx.attempt(upstream.name, "ok")
                    ctx.served(upstream.name, upstream.provider, model)
                if byok_key is None and upstream.restore(cred):
                    if ctx is not None:
                        ctx.credentials_changed = True
                    log.warning("the credentials %s of upstream %s work again; back in rotation", cred.label, upstream.name)
                if attempts > 1:
                    log.info("%s served the request after %d attempts (credential %s)", target.label, attempts, cred.label)
                return result, Outcome(target, call, attempts, cred.label)
        if last is None:
            raise ModelNotFound(targets[0].model if targets else "")
        _log_failure(targets, attempts, last)
        last.headers.setdefault("x-gemini-proxy-attempts", str(attempts))
        raise last

    async def complete(
        self,
        targets: list[Target],
        prepare: Callable[[Target], UpstreamCall[Any]],
        *,
        check: Callable[[dict[str, Any]], None] | None = None,
        byok_key: str | None = None,
        ctx: RequestContext | None = None,
    ) -> tuple[dict[str, Any], Outcome]:
        """A non-streamed call; `check(answer)` may raise `RetryableAnswer` to have it tried again."""

        async def once(target: Target, call: UpstreamCall[Any], headers: dict[str, str]) -> dict[str, Any]:
            url = target.upstream.endpoint.url(target.model, call.verb)
            response = await self.client.post_json(url, call.body, headers)
            if check is not None:
                check(response)
            return response

        return await self.run(targets, prepare, once, byok_key=byok_key, ctx=ctx)

    async def complete_raw(
        self,
        targets: list[Target],
        prepare: Callable[[Target], UpstreamCall[Any]],
        *,
        byok_key: str | None = None,
        ctx: RequestContext | None = None,
    ) -> tuple[bytes, Outcome]:
        """`complete()` whose answer stays unparsed bytes (embeddings: megabytes of numbers the gateway may copy as they are)."""

        async def once(target: Target, call: UpstreamCall[Any], headers: dict[str, str]) -> bytes:
            return await self.client.post_raw(target.upstream.endpoint.url(target.model, call.verb), call.body, headers)

        return await self.run(targets, prepare, once, byok_key=byok_key, ctx=ctx)

    async def open_stream(
        self,
        targets: list[Target],
        prepare: Callable[[Target], UpstreamCall[Any]],
        start: Callable[[UpstreamStream, UpstreamCall[Any]], Awaitable[T]],
        *,
        byok_key: str | None = None,
        ctx: RequestContext | None = None,
        budget: float | None = None,
    ) -> tuple[T, Outcome]:
        """Open a stream and let `start` read its first events, inside the retry loop.

        `start(stream, call)` raises for a broken start (an error event, a
        malformed function call, a blocked prompt), which is handled like any
        failure before the first byte; it closes nothing (this does, on failure).
        `ctx.in_flight_since` tells since when a call is in flight (None while
        the loop waits between attempts).
        """

        async def once(target: Target, call: UpstreamCall[Any], headers: dict[str, str]) -> T:
            url = target.upstream.endpoint.url(target.model, call.verb, stream=True)
            if ctx is not None:
                ctx.in_flight_since = time.monotonic()  # Google may hold its headers while it thinks
            try:
                stream = await self.client.open_stream(url, call.body, headers)
                try:
                    return await start(stream, call)
                except BaseException:
                    stream.close()
                    raise
            except BaseException:
                if ctx is not None:
                    ctx.in_flight_since = None  # failed: the dispatcher decides, within its budget
                raise

        return await self.run(targets, prepare, once, byok_key=byok_key, ctx=ctx, budget=budget)


def _resting(upstream: Upstream, wait: float) -> RateLimited:
    headers = {"retry-after": str(max(1, int(wait + 0.999)))}
    if wait > SDK_MAX_RETRY_AFTER:  # e.g. a daily quota: SDKs should not keep trying
        headers["x-should-retry"] = "false"
    return RateLimited(f"Every key of upstream '{upstream.name}' is resting after rate limits.", headers=headers)


def _client_facing(exc: GatewayError, failure: Failure, *, byok: bool = False) -> GatewayError:
    """What the client sees for a failure: a refused gateway credential is the operator's problem."""
    if failure is Failure.CREDENTIALS:
        if byok:
            return AuthenticationFailed("Google rejected the API key you sent (your own Google API key).")
        return UpstreamCredentialsFailed()
    return exc


def _log_failure(targets: list[Target], attempts: int, error: GatewayError) -> None:
    log.log(
        logging.WARNING if error.status >= 429 else logging.INFO,
        "request failed after %d attempt(s) on %s: %s %s",
        attempts, ", ".join(dict.fromkeys(t.label for t in targets)), error.status, error.message[:200],
    )
