"""What one request is and what happened to it: `Principal` and `RequestContext`.

The pipeline (app/pipeline/seam.py) opens a context for every request before
the endpoint's handler runs, the handler and the dispatcher fill it in, and
one `finally` records it (access log, metrics; docs/design.md#architecture). It
holds figures and names only: never a key, a prompt or an answer.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

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
class Principal:
    """Who is calling: one of the gateway's client keys, or a BYOK caller with their own Google key.

    `google_key` is set only in bring-your-own-key mode; it is passed on to
    Google and never logged.
    """

    key_id: str | None = None
    name: str | None = None
    team: str | None = None
    google_key: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """How logs name the caller (never the key)."""
        if self.google_key is not None:
            return "byok"
        return self.name or self.key_id or "anonymous"


ANONYMOUS = Principal()


@dataclass(slots=True)
class Usage:
    prompt: int = 0
    completion: int = 0
    reasoning: int = 0
    cached: int = 0


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
    status: int = 0
    error_code: str | None = None
    error_type: str | None = None
    in_flight_since: float | None = None  # streams: time.monotonic() the current upstream call was sent
    credentials_changed: bool = False  # a credential was refused or restored while serving it

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
