"""Runtime upstreams: endpoint, credentials and the key pool with cool-downs.

Owns the policy for spending credentials:

* keys are taken round-robin among those not cooling down;
* quotas belong to a Google project, so a cool-down applies to every key of
  the same project (`ApiKey.project`; a key without one is its own group);
* a 429 cools the group down for Google's `retryDelay` (or a default);
* a daily-quota exhaustion (QuotaFailure id `...PerDay...`) parks the group
  until the next midnight Pacific time, when Google resets daily quotas;
* refused credentials park that key for a long time (the operator must act);
* a client error (400) never penalises a key.

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
CREDENTIAL_FAILURE_PARK = 600.0
_PACIFIC = ZoneInfo("America/Los_Angeles")


def seconds_until_daily_reset(now: float) -> float:
    """Google resets daily quotas at midnight Pacific time."""
    local = datetime.fromtimestamp(now, _PACIFIC)
    midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(60.0, midnight.timestamp() - now)


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
    _cooling: dict[str, float] = field(default_factory=dict)  # group -> monotonic time it is usable again
    _next: int = 0

    _parked: dict[str, float] = field(default_factory=dict)  # credential label -> usable again

    def _usable_at(self, cred: Credential) -> float:
        return max(self._cooling.get(cred.group, 0.0), self._parked.get(cred.label, 0.0))

    def pick(self) -> Credential | None:
        """The next usable credential, or None when every one is cooling down."""
        now = self.clock()
        n = len(self.credentials)
        for step in range(n):
            cred = self.credentials[(self._next + step) % n]
            if self._usable_at(cred) <= now:
                self._next = (self._next + step + 1) % n
                return cred
        return None

    def all_parked(self) -> bool:
        """No credential at all, or every one taken out of rotation because Google refused it."""
        now = self.clock()
        return all(self._parked.get(c.label, 0.0) > now for c in self.credentials)

    def wait_time(self) -> float:
        """Seconds until some credential is usable again (0 if one is now)."""
        now = self.clock()
        return min((max(0.0, self._usable_at(c) - now) for c in self.credentials), default=0.0)

    def cool_down(self, cred: Credential, seconds: float | None, *, daily: bool = False) -> float:
        """Rest every credential of `cred`'s quota group; returns the seconds chosen."""
        if daily:
            seconds = seconds_until_daily_reset(self.wall_clock())
        seconds = DEFAULT_COOLDOWN if seconds is None else seconds
        until = self.clock() + seconds
        self._cooling[cred.group] = max(until, self._cooling.get(cred.group, 0.0))
        return seconds

    def park(self, cred: Credential, seconds: float = CREDENTIAL_FAILURE_PARK) -> None:
        """Take one credential (not its whole group) out of rotation, e.g. after Google refused it."""
        self._parked[cred.label] = self.clock() + seconds


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
            creds.append(
                Credential(ApiKeyAuth(key.key.get_secret_value()), label, f"project:{key.project}" if key.project else f"key:{label}")
            )
    return Upstream(settings.name, settings.type, endpoint, creds)
