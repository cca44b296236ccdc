"""Credentials for Google, as request headers. A transport concern only.

* `ApiKeyAuth`: the Gemini Developer API key in `x-goog-api-key` (never in the URL).
* `GoogleCredentialsAuth`: Vertex AI through google-auth (service-account file,
  authorized-user file, Application Default Credentials, metadata server).
  The token is cached by google-auth and refreshed when it is no longer
  `valid` (google-auth counts a token as expired 3 min 45 s early, so refreshes
  happen before the real expiry), under one asyncio lock and in a worker
  thread: however many requests wait, one refresh runs (a request that waited
  while another refreshed uses that token), and the event loop never blocks on
  the token endpoint. A token Google refused although google-auth still
  trusted it (revoked, clock skew) is marked with `refused()`: the next
  `headers()` refreshes once for all the requests that saw it refused.
* Calls to the token endpoint are bounded (`timeout`, from the connect and
  first-byte timeouts).
* The token endpoint is the one the credentials name (`token_uri`), also for
  authorized-user files, whose `token_uri` google-auth itself replaces with
  Google's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import warnings
from typing import Any, Protocol

from app.errors import UpstreamCredentialsFailed

log = logging.getLogger("gemini_proxy.auth")

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class UpstreamAuth(Protocol):
    async def headers(self) -> dict[str, str]: ...


class ApiKeyAuth:
    __slots__ = ("_headers",)

    def __init__(self, key: str) -> None:
        self._headers = {"x-goog-api-key": key}

    async def headers(self) -> dict[str, str]:
        return self._headers


class _TimedRequest:
    """google-auth's HTTP transport with a bound on every call (it would wait 120 s by default)."""

    def __init__(self, timeout: float) -> None:
        import google.auth.transport.requests

        self._inner = google.auth.transport.requests.Request()
        self.timeout = timeout

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        return self._inner(*args, **kwargs)


class GoogleCredentialsAuth:
    def __init__(self, credentials: Any, quota_project: str | None = None, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self._request = _TimedRequest(timeout)
        self._lock = asyncio.Lock()
        self.refreshes = 0  # also the generation of the current token
        self._refused: str | None = None  # a token Google refused while google-auth still trusted it
        project = quota_project or getattr(credentials, "quota_project_id", None)
        self._extra = {"x-goog-user-project": project} if project else {}

    def refused(self, headers: dict[str, str]) -> None:
        """Google refused the token in `headers`: refresh before it is used again."""
        token = headers.get("authorization", "").removeprefix("Bearer ")
        if token and token == self.credentials.token:
            self._refused = token

    async def _refresh(self, seen: int) -> None:
        async with self._lock:
            if self.refreshes != seen:  # another request refreshed while we waited: use its token
                return
            try:
                await asyncio.to_thread(self.credentials.refresh, self._request)
            except Exception as exc:  # google.auth.exceptions.RefreshError, TransportError, ...
                log.error("Google credentials could not be refreshed: %s", type(exc).__name__)
                log.debug("refresh failure detail", exc_info=True)
                raise UpstreamCredentialsFailed() from None
            self.refreshes += 1
            self._refused = None

    async def headers(self) -> dict[str, str]:
        if not self.credentials.valid or self.credentials.token == self._refused:
            await self._refresh(self.refreshes)
        return {"authorization": f"Bearer {self.credentials.token}", **self._extra}


def load_google_credentials(credentials_file: str | None) -> Any:
    """Service-account / authorized-user file, or Application Default Credentials."""
    import google.auth

    if credentials_file:
        with warnings.catch_warnings():  # the operator's own file, not one from an untrusted source
            warnings.simplefilter("ignore", DeprecationWarning)
            credentials, _ = google.auth.load_credentials_from_file(credentials_file, scopes=[CLOUD_PLATFORM_SCOPE])
    else:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return _with_files_token_uri(credentials, credentials_file or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"))


def _with_files_token_uri(credentials: Any, path: str | None) -> Any:
    """google-auth replaces an authorized-user file's `token_uri` with Google's; keep the file's."""
    import google.oauth2.credentials

    if not path or not isinstance(credentials, google.oauth2.credentials.Credentials):
        return credentials
    try:
        with open(path, encoding="utf-8") as file:
            info = json.load(file)
    except (OSError, ValueError):
        return credentials
    token_uri = info.get("token_uri") if isinstance(info, dict) else None
    if isinstance(token_uri, str) and token_uri and token_uri != credentials.token_uri:
        return credentials.with_token_uri(token_uri)
    return credentials
