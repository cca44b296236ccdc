"""Credentials for Google, as request headers. A transport concern only.

* `ApiKeyAuth`: the Gemini Developer API key in `x-goog-api-key` (never in the URL).
* `GoogleCredentialsAuth`: Vertex AI through google-auth (service-account file,
  authorized-user file, Application Default Credentials, metadata server).
  The token is cached by google-auth and refreshed when it is no longer
  `valid` (google-auth counts a token as expired 3 min 45 s early, so refreshes
  happen before the real expiry), under one asyncio lock and in a worker
  thread: however many requests wait, one refresh runs, and the event loop
  never blocks on the token endpoint.
"""

from __future__ import annotations

import asyncio
import logging
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


class GoogleCredentialsAuth:
    def __init__(self, credentials: Any, quota_project: str | None = None) -> None:
        import google.auth.transport.requests

        self.credentials = credentials
        self._request = google.auth.transport.requests.Request()
        self._lock = asyncio.Lock()
        self.refreshes = 0
        project = quota_project or getattr(credentials, "quota_project_id", None)
        self._extra = {"x-goog-user-project": project} if project else {}

    async def _refresh(self) -> None:
        async with self._lock:
            if self.credentials.valid:  # another request refreshed while we waited
                return
            try:
                await asyncio.to_thread(self.credentials.refresh, self._request)
            except Exception as exc:  # google.auth.exceptions.RefreshError, TransportError, ...
                log.error("Google credentials could not be refreshed: %s", type(exc).__name__)
                log.debug("refresh failure detail", exc_info=True)
                raise UpstreamCredentialsFailed() from None
            self.refreshes += 1

    async def headers(self) -> dict[str, str]:
        if not self.credentials.valid:
            await self._refresh()
        return {"authorization": f"Bearer {self.credentials.token}", **self._extra}


def load_google_credentials(credentials_file: str | None) -> Any:
    """Service-account / authorized-user file, or Application Default Credentials."""
    import google.auth

    if credentials_file:
        credentials, _ = google.auth.load_credentials_from_file(credentials_file, scopes=[CLOUD_PLATFORM_SCOPE])
    else:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return credentials
