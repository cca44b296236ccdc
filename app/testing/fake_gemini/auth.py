"""Who may call the fake: Gemini API keys, Vertex bearer tokens, and the token endpoint.

Owns: the key check of the Gemini Developer API (`x-goog-api-key` header or
`?key=`; missing -> 403, not accepted -> 400 API_KEY_INVALID), the bearer
check of the Vertex paths (missing/unknown/expired -> 401), and `POST /token`,
an OAuth2 token endpoint that google-auth's real refresh code can use (JWT
bearer grant from service-account credentials; refresh-token grant from
authorized-user credentials). JWT signatures are not verified: the fake does
not know the keys; the claims are checked.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

import orjson
from aiohttp import web

from app.testing.fake_gemini.state import STATE, FakeState
from app.testing.google_errors import ERROR_INFO, GoogleError

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
BAD_KEY = "API key not valid. Please pass a valid API key."
BAD_TOKEN = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


def _error_info(reason: str, service: str) -> dict[str, Any]:
    return {
        "@type": ERROR_INFO,
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": service},
    }


def api_key_of(request: web.Request) -> str | None:
    return request.headers.get("x-goog-api-key") or request.query.get("key")


def check_api_key(request: web.Request, state: FakeState) -> str:
    """The caller's API key, or Google's 403 (none) / 400 API_KEY_INVALID (not accepted)."""
    key = api_key_of(request)
    if not key:
        raise GoogleError(403, UNREGISTERED, "PERMISSION_DENIED")
    if state.api_keys and key not in state.api_keys:
        details = [
            _error_info("API_KEY_INVALID", "generativelanguage.googleapis.com"),
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": BAD_KEY,
            },
        ]
        raise GoogleError(400, BAD_KEY, "INVALID_ARGUMENT", details)
    return key


def check_bearer(request: web.Request, state: FakeState) -> str:
    """The caller's access token if this server issued it and it has not expired; else 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        reason = "CREDENTIALS_MISSING"
    else:
        status = state.token_status(token)
        if status == "valid":
            return token
        reason = "ACCESS_TOKEN_EXPIRED" if status == "expired" else "ACCESS_TOKEN_TYPE_UNSUPPORTED"
    raise GoogleError(401, BAD_TOKEN, "UNAUTHENTICATED", [_error_info(reason, "aiplatform.googleapis.com")])


class OAuthError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _jwt_claims(assertion: str) -> dict[str, Any]:
    pieces = assertion.split(".")
    if len(pieces) != 3:
        raise OAuthError("invalid_grant", "Invalid JWT: the assertion is not a compact JWS.")
    payload = pieces[1] + "=" * (-len(pieces[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        raise OAuthError("invalid_grant", "Invalid JWT: could not decode the claims.") from None
    if not isinstance(claims, dict):
        raise OAuthError("invalid_grant", "Invalid JWT: the claims are not an object.")
    return claims


def _check_jwt(claims: dict[str, Any]) -> None:
    for claim in ("iss", "aud"):
        if not claims.get(claim):
            raise OAuthError("invalid_grant", f"Invalid JWT: the `{claim}` claim is missing.")
    if CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
        raise OAuthError("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
    now = time.time()
    exp, iat = claims.get("exp"), claims.get("iat", now)
    if not isinstance(exp, (int, float)) or exp <= now or not isinstance(iat, (int, float)) or iat > now + 300:
        raise OAuthError(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
            "timeframe. Check your iat and exp values in the JWT claim.",
        )


def _grant(form: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    """(subject, scope, what to record) for a valid grant; OAuthError otherwise."""
    grant_type = form.get("grant_type", "")
    if grant_type == JWT_BEARER:
        claims = _jwt_claims(form.get("assertion", ""))
        _check_jwt(claims)
        return str(claims["iss"]), str(claims["scope"]), {"grant_type": grant_type, "claims": claims}
    if grant_type == "refresh_token":
        missing = [k for k in ("client_id", "client_secret", "refresh_token") if not form.get(k)]
        if missing:
            raise OAuthError("invalid_request", f"Missing required parameter: {missing[0]}")
        shown = {k: v for k, v in form.items() if k != "client_secret"}
        return form["client_id"], form.get("scope", CLOUD_PLATFORM), shown
    raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")


async def token_endpoint(request: web.Request) -> web.Response:
    """`POST /token`: OAuth2 access tokens for google-auth, remembered with their expiry."""
    state = request.app[STATE]
    state.counters["token_requests"] += 1
    form = {k: str(v) for k, v in (await request.post()).items()}
    entry = state.record(
        {"method": "POST", "path": request.path, "backend": "oauth", "body": None, "status": None}
    )
    try:
        subject, scope, shown = _grant(form)
    except OAuthError as exc:
        entry.update(body={"grant_type": form.get("grant_type")}, status=400)
        body: dict[str, Any] = {"error": exc.error, "error_description": exc.description}
        return web.json_response(body, status=400, dumps=lambda o: orjson.dumps(o).decode())
    token = state.issue_token(subject, scope)
    entry.update(body=shown, status=200, token=token)
    body = {"access_token": token, "expires_in": state.token_lifetime, "token_type": "Bearer"}
    return web.json_response(body, dumps=lambda o: orjson.dumps(o).decode())
