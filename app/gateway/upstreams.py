"""Runtime upstreams: endpoint, credentials and the key pool with its rests.

Owns the policy for spending credentials (docs/design.md#credentials):

* keys are taken round-robin among those that are usable now;
* quotas belong to a Google project and a model, so a rate-limit rest
  applies to every key of the same project (`ApiKey.project`; a key without
  one is its own group), for that model only: a 429 on one model never stops
  another model;
* a 429 rests the (group, model) for Google's `retryDelay` (or a default); a
  daily-quota exhaustion (QuotaFailure id `...PerDay...`) rests it until the
  next midnight Pacific time, when Google resets daily quotas;
* a credential Google refuses leaves rotation with a short backoff that grows
  on repeated refusals (1 s, 2 s, 4 s ... capped at 5 minutes); the first
  request after the backoff probes it and a success restores it at once. It
  is never parked for long: a key that was revoked by mistake and restored, or
  a refusal caused by a glitch, costs seconds, not a lock-out;
* a client error (400, a 403 about a resource) never penalises a key;
* `on_rest` lets other replicas learn of a rest (gateway/shared.py publishes
  it through Redis; `rest_group` applies one that another replica published).

Keys appear in logs only as labels (`<upstream>#<n>`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from app.settings import UpstreamSettings
from app.upstream.auth import ApiKeyAuth, GoogleCredentialsAuth, UpstreamAuth, load_google_credentials
from app.upstream.client import Endpoint

DEFAULT_COOLDOWN = 10.0
REFUSAL_BACKOFF_FIRST = 1.0
REFUSAL_BACKOFF_MAX = 300.0
_PACIFIC = ZoneInfo("America/Los_Angeles")


def seconds_until_daily_reset(now: float) -> float:
    """Google resets daily quotas at midnight Pacific time."""
    local = datetime.fromtimestamp(now, _PACIFIC)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(60.0, midnight.timestamp() - now)


def refusal_backoff(refusals: int) -> float:
    """Seconds out of rotation after the n-th refusal in a row: 1, 2, 4 ... 300."""
    return min(REFUSAL_BACKOFF_MAX, REFUSAL_BACKOFF_FIRST * 2 ** max(0, refusals - 1))


@dataclass(eq=False)
class Credential:
    auth: UpstreamAuth
    label: str
    group: str


@dataclass(eq=False)
class Upstream:
    name: str
    kind: str  # "gemini" | "vertex"
    endpoint: Endpoint
    credentials: list[Credential]
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    _cooling: dict[tuple[str, str], float] = field(default_factory=dict)  # (group, model) -> usable again
    _parked: dict[str, float] = field(default_factory=dict)  # credential label -> usable again (refused)
    _refusals: dict[str, int] = field(default_factory=dict)  # credential label -> refusals in a row
    _next: int = 0
    # Called with (upstream, group, model, seconds) when a rate limit rests a group (shared with other replicas).
    on_rest: Callable[[Upstream, str, str, float], None] | None = None

    @property
    def provider(self) -> str:
        """OpenTelemetry's `gen_ai.provider.name` for this upstream."""
        return "gcp.vertex_ai" if self.kind == "vertex" else "gcp.gemini"

    def _rest_until(self, cred: Credential, model: str) -> float:
        return self._cooling.get((cred.group, model), 0.0)

    def _usable_at(self, cred: Credential, model: str) -> float:
        return max(self._rest_until(cred, model), self._parked.get(cred.label, 0.0))

    def pick(self, model: str = "") -> Credential | None:
        """The next credential usable now for `model`, or None when every one rests or is refused."""
        n = len(self.credentials)
        if not self._cooling and not self._parked and n:  # nothing has ever rested: the next in turn, no clock
            cred = self.credentials[self._next % n]
            self._next = (self._next + 1) % n
            return cred
        now = self.clock()
        for step in range(n):
            cred = self.credentials[(self._next + step) % n]
            if self._usable_at(cred, model) <= now:
                self._next = (self._next + step + 1) % n
                return cred
        return None

    def probe(self, model: str = "") -> Credential | None:
        """When none is usable: the refused credential whose backoff ends first (not resting on a rate limit).

        Used so that the gateway never refuses a request without calling
        Google: a credential that Google refused may work again (a glitch, a
        key restored), and only a call can tell.
        """
        now = self.clock()
        candidates = [c for c in self.credentials if self._rest_until(c, model) <= now]
        return min(candidates, key=lambda c: self._parked.get(c.label, 0.0), default=None)

    def usable(self, model: str = "") -> bool:
        """Whether some credential is usable now for `model` (the dispatcher asks on every request)."""
        if not self._cooling and not self._parked:
            return bool(self.credentials)
        now = self.clock()
        return any(self._usable_at(c, model) <= now for c in self.credentials)

    def available(self, model: str = "") -> int:
        """How many credentials are usable now (the operator's gauge)."""
        now = self.clock()
        return sum(1 for c in self.credentials if self._usable_at(c, model) <= now)

    def wait_time(self, model: str = "") -> float:
        """Seconds until some credential is usable again for `model` (0 if one is now)."""
        now = self.clock()
        return min((max(0.0, self._usable_at(c, model) - now) for c in self.credentials), default=0.0)

    def cool_down(self, cred: Credential, seconds: float | None, *, model: str = "", daily: bool = False) -> float:
        """Rest every credential of `cred`'s quota group for `model`; returns the seconds chosen."""
        if daily:
            seconds = seconds_until_daily_reset(self.wall_clock())
        seconds = DEFAULT_COOLDOWN if seconds is None else seconds
        self.rest_group(cred.group, model, seconds)
        if self.on_rest is not None:
            self.on_rest(self, cred.group, model, seconds)
        return seconds

    def rest_group(self, group: str, model: str, seconds: float) -> None:
        """Rest every credential of `group` for `model` for `seconds` (also: a rest another replica published)."""
        key = (group, model)
        self._cooling[key] = max(self.clock() + seconds, self._cooling.get(key, 0.0))

    def refuse(self, cred: Credential) -> float:
        """Google refused `cred` (not its group): out of rotation for a backoff that grows; returns it."""
        refusals = self._refusals[cred.label] = self._refusals.get(cred.label, 0) + 1
        seconds = refusal_backoff(refusals)
        self._parked[cred.label] = self.clock() + seconds
        return seconds

    def restore(self, cred: Credential) -> bool:
        """A call with `cred` succeeded: back in rotation at once. True if it had been refused."""
        if not self._refusals:
            return False
        self._parked.pop(cred.label, None)
        return self._refusals.pop(cred.label, None) is not None


def build_upstream(settings: UpstreamSettings, token_timeout: float = 30.0) -> Upstream:
    if settings.type == "vertex":
        assert settings.project is not None
        endpoint = Endpoint.vertex(settings.project, settings.location, settings.base_url, settings.api_version)
        auth = GoogleCredentialsAuth(load_google_credentials(settings.credentials_file), timeout=token_timeout)
        creds = [Credential(auth, f"{settings.name}#1", f"project:{settings.project}")]
    else:
        endpoint = Endpoint.gemini(settings.base_url, settings.api_version)
        creds = []
        for i, key in enumerate(settings.keys(), start=1):
            label = f"{settings.name}#{i}"
            group = f"project:{key.project}" if key.project else f"key:{label}"
            creds.append(Credential(ApiKeyAuth(key.key.get_secret_value()), label, group))
    return Upstream(settings.name, settings.type, endpoint, creds)
