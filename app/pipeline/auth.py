"""Client authentication into a `Principal`: the gateway's own keys, or bring-your-own-key.

Client keys are kept only as SHA-256 digests and compared in constant time
(every configured digest is compared, whatever matches). In bring-your-own-key
mode the bearer token is the client's own Gemini API key, passed on to Google.
With neither configured, every caller is the anonymous principal.
"""

from __future__ import annotations

import hashlib
import hmac

from app.errors import AuthenticationFailed
from app.pipeline.context import ANONYMOUS, Principal
from app.settings import AuthSettings, ClientKey

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


class ClientAuth:
    def __init__(self, settings: AuthSettings) -> None:
        self.byok = settings.byok
        self._keys: list[tuple[bytes, Principal]] = []
        for i, entry in enumerate(settings.client_keys, start=1):
            key = entry if isinstance(entry, ClientKey) else ClientKey(key=entry)
            name = key.name or f"key#{i}"
            self._keys.append((key.digest(), Principal(key_id=f"key#{i}", name=name)))

    @property
    def enabled(self) -> bool:
        return self.byok or bool(self._keys)

    def authenticate(self, token: str | None) -> Principal:
        """The caller behind `token`; raise 401 when refused."""
        if not self.enabled:
            return ANONYMOUS
        if token is None:
            raise AuthenticationFailed(
                MISSING_KEY_MESSAGE,
                code="missing_api_key" if not self.byok else "invalid_api_key",
            )
        if self.byok:
            return Principal(google_key=token)
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for reference, principal in self._keys:
            if hmac.compare_digest(digest, reference):
                found = principal
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return found
