"""Client authentication into a `Principal`: the gateway's own keys, or bring-your-own-key.

Keys come from two sources that work together: the config file
(`auth.client_keys`) and the database (keys managed at run time with the CLI or
the admin API; app/team/). Both are held here as SHA-256 digests: a key is
found by its digest in a dict, then the digests are compared in constant time,
so a lookup costs the same whatever the key. The database's keys are replaced
wholesale by the team layer's cache (`set_database_keys`), which re-reads them
every `storage.keys_refresh_seconds`; a digest not found asks that cache to
look again first (`resolve`), so a key created a moment ago on another
replica works at once. An expired key is refused on every request, whatever
the cache holds.

Client keys are required once any exist: in the config file, or in the
database (revoked ones included, so that revoking the last key never opens the
gateway). In bring-your-own-key mode the bearer token is the client's own
Gemini API key, passed on to Google. With neither, every caller is the
anonymous principal.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping

from app.errors import AuthenticationFailed
from app.pipeline.context import ANONYMOUS, Limits, Principal
from app.settings import AuthSettings
from app.settings import Limits as LimitSettings

SECRET_PREFIX = "gp-"  # the prefix of the keys the gateway makes (app/team/keys.py)

# OpenAI's own words; an endpoint may say it its own way (the native Gemini routes do).
MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def bearer_token(authorization: str | None, api_key: str | None = None) -> str | None:
    """The client's key from `Authorization: Bearer ...`, or Azure/Anthropic-style `api-key` / `x-api-key`."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return api_key or None


def token_from_headers(headers: list[tuple[bytes, bytes]]) -> str | None:
    """`bearer_token` of raw ASGI headers (also Google's `x-goog-api-key`, as google-genai sends it)."""
    authorization = api_key = None
    for name, value in headers:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name in (b"api-key", b"x-api-key", b"x-goog-api-key"):
            api_key = value.decode("latin-1")
    return bearer_token(authorization, api_key)


def digest_of(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def limits_of(settings: LimitSettings) -> Limits:
    return Limits(settings.rpm, settings.tpm, settings.concurrency, settings.tokens_per_day,
                  settings.tokens_per_month, settings.usd_per_month)


class ClientAuth:
    def __init__(self, settings: AuthSettings) -> None:
        self.byok = settings.byok
        self._config: dict[bytes, tuple[bytes, Principal]] = {}
        self._config_keys = settings.config_keys()
        self._team_limits: Mapping[str, Limits] = {}
        self._build_config()
        self._database: dict[bytes, tuple[bytes, Principal]] = {}
        self._database_required = False
        self.refresh: Callable[[], Awaitable[None]] | None = None  # the team layer's "look again now"

    def _build_config(self) -> None:
        self._config = {}
        for key in self._config_keys:
            assert key.id is not None
            team_limits = self._team_limits.get(key.team) if key.team else None
            digest = key.digest()
            self._config[digest] = (digest, Principal.of_key(
                key.id, key.name or key.id, key.team, key.models, limits_of(key.limits), team_limits or Limits(),
            ))

    @property
    def enabled(self) -> bool:
        return self.byok or bool(self._config) or self._database_required

    def set_database_keys(
        self, keys: dict[bytes, Principal], required: bool, team_limits: Mapping[str, Limits] | None = None
    ) -> None:
        """Replace the database's keys (digest -> principal); `required`: the database has ever held a key."""
        if team_limits is not None and team_limits != self._team_limits:
            self._team_limits = dict(team_limits)
            self._build_config()  # config keys may name a team managed in the database
        self._database = {digest: (digest, principal) for digest, principal in keys.items()}
        self._database_required = required

    def _find(self, token: str) -> Principal | None:
        digest = digest_of(token)
        found = self._config.get(digest) or self._database.get(digest)
        if found is None:
            return None
        reference, principal = found
        # the dict matched by hash and equality; the stored digest is compared again in constant time
        return principal if hmac.compare_digest(digest, reference) else None

    def authenticate(self, token: str | None) -> Principal:
        """The caller behind `token`, from the keys held now; raise 401 when refused."""
        if not self.enabled:
            return ANONYMOUS
        if token is None:
            raise AuthenticationFailed(MISSING_KEY_MESSAGE)  # (invalid_api_key, as an unknown key: the contract)
        if self.byok:
            return Principal(google_key=token)
        principal = self._find(token)
        if principal is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        if principal.expires_at is not None and time.time() >= principal.expires_at:
            raise AuthenticationFailed("The API key provided has expired.")
        return principal

    async def resolve(self, token: str | None) -> Principal:
        """`authenticate`; an unknown key first makes the team layer look in the database again.

        With client keys off, only a token that looks like one of ours (`gp-...`) does
        that: a gateway that just got its first key from another process closes at once.
        """
        try:
            principal = self.authenticate(token)
        except AuthenticationFailed:
            if token is None or self.refresh is None:
                raise
            await self.refresh()
            return self.authenticate(token)
        if principal is ANONYMOUS and token is not None and token.startswith(SECRET_PREFIX) and self.refresh is not None:
            await self.refresh()
            return self.authenticate(token)
        return principal
