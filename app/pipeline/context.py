"""What one request is and what happened to it: `Principal` and `RequestContext`.

The pipeline (app/pipeline/seam.py) opens a context for every request before
the endpoint's handler runs, the handler and the dispatcher fill it in, and
one `finally` records it (access log, metrics; docs/design.md#architecture). It
holds figures and names only: never a key, a prompt or an answer.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.errors import GatewayError, ModelNotAllowed

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def clean_request_id(value: bytes | None) -> str | None:
    """A client's `x-request-id`, if it has a sane length and charset."""
    if not value:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if _REQUEST_ID.match(text) else None


@dataclass(frozen=True, slots=True)
class Limits:
    """A key's or a team's limits (None: no limit); enforced by app/gateway/ratelimit.py."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    usd_per_month: float | None = None

    def any(self) -> bool:
        return any(getattr(self, name) is not None for name in self.__slots__)


NO_LIMITS = Limits()


def models_pattern(globs: Iterable[str] | None) -> re.Pattern[str] | None:
    """One regex for a key's allowed-model globs (fnmatch syntax, case-sensitive); None: every model."""
    if globs is None:
        return None
    globs = list(globs)
    if "*" in globs:
        return None
    if not globs:
        return re.compile(r"(?!)")  # matches nothing
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: one of the gateway's client keys, or a BYOK caller with their own Google key.

    `google_key` is set only in bring-your-own-key mode; it is passed on to
    Google and never logged. `models` are the globs of the public model names
    the key may call (None: every model); `expires_at` is a Unix time.
    """

    key_id: str | None = None
    name: str | None = None
    team: str | None = None
    google_key: str | None = field(default=None, repr=False)
    models: tuple[str, ...] | None = None
    limits: Limits = NO_LIMITS
    team_limits: Limits = NO_LIMITS
    expires_at: float | None = None
    allowed: re.Pattern[str] | None = field(default=None, repr=False, compare=False)
    limited: bool = field(default=False, compare=False)  # the key or its team has a limit (admission pays)

    @classmethod
    def of_key(
        cls, key_id: str, name: str, team: str | None = None, models: Iterable[str] | None = None,
        limits: Limits = NO_LIMITS, team_limits: Limits = NO_LIMITS, expires_at: float | None = None,
    ) -> Principal:
        globs = None if models is None else tuple(models)
        limited = limits.any() or (team is not None and team_limits.any())
        return cls(key_id, name, team, None, globs, limits, team_limits, expires_at, models_pattern(globs), limited)

    @property
    def label(self) -> str:
        """How logs name the caller (never the key)."""
        if self.google_key is not None:
            return "byok"
        return self.name or self.key_id or "anonymous"

    def allows(self, model: str) -> bool:
        """May this caller use `model` (a public name, as the client spelt it)?"""
        pattern = self.allowed
        if pattern is None:
            return True
        if pattern.fullmatch(model):
            return True
        # `models/gemini-x`, `google/gemini-x`: the same model as `gemini-x`
        _, slash, bare = model.rpartition("/")
        return bool(slash) and pattern.fullmatch(bare) is not None

    def check_model(self, model: str) -> None:
        """403 `model_not_allowed` unless this caller may use `model`; every endpoint calls it before Google."""
        if not self.allows(model):
            raise ModelNotAllowed(model, self.label)


ANONYMOUS = Principal()


@dataclass(slots=True)
class Usage:
    prompt: int = 0
    completion: int = 0
    reasoning: int = 0
    cached: int = 0
    # A billable call was answered without a usage count (Imagen): the cost is unknown (null), not 0.
    unpriced: bool = False


@dataclass(slots=True, eq=False)
class RequestContext:
    request_id: str
    method: str
    path: str
    endpoint: str = ""  # "chat", "embeddings", ... ("" for routes outside the pipeline)
    started: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)
    principal: Principal = ANONYMOUS
    model: str | None = None  # as the client asked
    upstream: str | None = None  # the upstream that served it
    provider: str | None = None  # OpenTelemetry's gen_ai.provider.name of that upstream
    served_model: str | None = None  # the Gemini model that served it
    response_model: str | None = None  # Gemini's modelVersion, when it said
    stream: bool = False
    attempts: int = 0
    attempt_outcomes: list[tuple[str, str]] = field(default_factory=list)  # (upstream, ok|retry|...)
    first_token: float | None = None  # perf_counter of the first content sent
    usage: Usage | None = None
    cost_usd: float | None = None  # set by the recorder first thing in the finally (None: no price known)
    status: int = 0
    error_code: str | None = None
    error_type: str | None = None
    in_flight_since: float | None = None  # streams: time.monotonic() the current upstream call was sent
    credentials_changed: bool = False  # a credential was refused or restored while serving it
    request_bytes: int = 0  # size of the request body
    body: bytes = b""  # the request body as read, until `Services.admit` takes it (the limiter's prompt estimate)
    admission: Any = None  # a limited key's reservations (app/gateway/ratelimit.py Admission), settled in the finally
    answering: Any = None  # (pipeline, ASGI send) while the pipeline serves it: how a stream's answer starts early
    early: Any = None  # a stream's answer begun before its stream opened (app/pipeline/seam.py EarlyAnswer)

    def failed(self, exc: GatewayError) -> None:
        """The error the request ended with (its code, else its type, and its type), for the log and the metrics."""
        self.error_code, self.error_type = exc.code or exc.type, exc.type

    def attempt(self, upstream: str, outcome: str) -> None:
        self.attempts += 1
        self.attempt_outcomes.append((upstream, outcome))

    def served(self, upstream: str, provider: str, model: str) -> None:
        self.upstream, self.provider, self.served_model = upstream, provider, model

    def mark_first_token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started
