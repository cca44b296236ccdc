"""Client authentication: the gateway's own keys, or bring-your-own-key.

Client keys are kept only as SHA-256 digests and compared in constant time
(every configured digest is compared, whatever matches). In bring-your-own-key
mode the bearer token is the client's own Gemini API key, passed on to Google.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request

from app.errors import AuthenticationFailed
from app.settings import AuthSettings, ClientKey


def bearer_token(authorization: str | None, api_key: str | None = None) -> str | None:
    """The client's key from `Authorization: Bearer ...`, or Azure/Anthropic-style `api-key` / `x-api-key`."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return api_key or None


class ClientAuth:
    def __init__(self, settings: AuthSettings) -> None:
        self.byok = settings.byok
        self._digests = [
            (k if isinstance(k, ClientKey) else ClientKey(key=k)).digest() for k in settings.client_keys
        ]

    @property
    def enabled(self) -> bool:
        return self.byok or bool(self._digests)

    def check(self, request: Request) -> str | None:
        headers = request.headers
        return self.check_token(bearer_token(headers.get("authorization"), headers.get("api-key") or headers.get("x-api-key")))

    def check_token(self, token: str | None) -> str | None:
        """Return the client's Gemini key in BYOK mode, else None; raise 401 when refused."""
        if not self.enabled:
            return None
        if token is None:
            raise AuthenticationFailed(
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="missing_api_key" if not self.byok else "invalid_api_key",
            )
        if self.byok:
            return token
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        matched = False
        for reference in self._digests:
            matched |= hmac.compare_digest(digest, reference)
        if not matched:
            raise AuthenticationFailed("Incorrect API key provided.")
        return None
