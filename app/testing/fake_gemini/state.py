"""Everything one fake server remembers between requests.

Owns: runtime configuration (accepted keys, token lifetime, latency, stall
timeout), recorded requests, counters, the FIFO of scripted directives, the
`fail_times` counters, issued access tokens with their expiry, the signing
secret, response ids, and the transports used to count open connections.
One `FakeState` lives on the app (`app[STATE]`); it is touched only from the
server's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import os
import secrets
import time
import weakref
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from app.testing.fake_gemini.options import FakeOptions
from app.testing.fake_gemini.signatures import Signer

COUNTER_NAMES = (
    "requests",
    "generate_requests",
    "stream_requests",
    "streams_started",
    "streams_completed",
    "streams_aborted_by_client",
    "requests_aborted_by_client",
    "errors_returned",
    "errors_injected",
    "connection_resets",
    "stalls",
    "token_requests",
    "tokens_issued",
    "signature_bypasses",
    "signatures_reencoded",
    "scripts_applied",
    "embed_requests",
    "embeddings_returned",
)
CONFIG_KEYS = ("api_keys", "token_lifetime", "latency_ms", "stall_timeout_s")


@dataclass
class TokenGrant:
    expires_at: float
    subject: str
    scope: str


class FakeState:
    def __init__(self, options: FakeOptions) -> None:
        self.options = options
        self.api_keys: set[str] = set(options.api_keys)
        self.token_lifetime = options.token_lifetime
        self.latency_ms = options.latency_ms
        self.stall_timeout_s = options.stall_timeout_s
        if options.seed is None:
            secret = os.urandom(32)
        else:
            secret = hashlib.sha256(f"fake-gemini:{options.seed}".encode()).digest()
        self._id_key = secret
        self.signer = Signer(secret)
        self.tokens: dict[str, TokenGrant] = {}
        self.transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self.connections_seen = 0
        self.active_requests = 0  # API requests being handled right now
        self.closing = False
        self.reset()

    def reset(self) -> None:
        """Forget records, counters, scripts and `fail_times` counters (tokens stay valid)."""
        self.requests: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=self.options.max_recorded
        )
        self.counters: collections.Counter[str] = collections.Counter()
        self.scripts: collections.deque[dict[str, Any]] = collections.deque()
        self.fail_counts: dict[str, int] = {}
        self._record_seq = 0
        self._response_seq = 0

    # --- records and counters -------------------------------------------------

    def record(self, entry: dict[str, Any]) -> dict[str, Any]:
        self._record_seq += 1
        entry = {"seq": self._record_seq, "time": time.time(), **entry}
        self.requests.append(entry)
        return entry

    def track(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None and transport not in self.transports:
            self.transports.add(transport)
            self.connections_seen += 1

    def open_connections(self, exclude: asyncio.BaseTransport | None = None) -> int:
        return sum(1 for t in self.transports if t is not exclude and not t.is_closing())

    def stats(self, exclude: asyncio.BaseTransport | None = None) -> dict[str, int]:
        counts = {name: self.counters[name] for name in COUNTER_NAMES}
        counts.update(
            (name, value) for name, value in self.counters.items() if name not in counts
        )
        counts["open_connections"] = self.open_connections(exclude)
        counts["active_requests"] = self.active_requests
        counts["connections_seen"] = self.connections_seen
        counts["scripts_queued"] = len(self.scripts)
        counts["tokens_active"] = sum(1 for g in self.tokens.values() if g.expires_at > time.time())
        return counts

    def next_response_id(self) -> str:
        self._response_seq += 1
        digest = hashlib.sha256(self._id_key + self._response_seq.to_bytes(8, "big")).digest()
        return base64.urlsafe_b64encode(digest[:17]).decode().rstrip("=")

    # --- tokens --------------------------------------------------------------

    def issue_token(self, subject: str, scope: str) -> str:
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        self.tokens[token] = TokenGrant(time.time() + self.token_lifetime, subject, scope)
        self.counters["tokens_issued"] += 1
        return token

    def token_status(self, token: str) -> str:
        """"valid", "expired" or "unknown"."""
        grant = self.tokens.get(token)
        if grant is None:
            return "unknown"
        return "valid" if grant.expires_at > time.time() else "expired"

    def expire_tokens(self) -> int:
        now = time.time()
        for grant in self.tokens.values():
            grant.expires_at = min(grant.expires_at, now)
        return len(self.tokens)

    # --- runtime config ------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {
            "api_keys": sorted(self.api_keys),
            "token_lifetime": self.token_lifetime,
            "latency_ms": self.latency_ms,
            "stall_timeout_s": self.stall_timeout_s,
        }

    def update_config(self, changes: dict[str, Any]) -> None:
        """Apply `changes` (keys of `config()`); raise ValueError naming a bad one."""
        unknown = set(changes) - set(CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        keys = changes.get("api_keys", self.api_keys)
        if not isinstance(keys, (list, tuple, set)) or not all(isinstance(k, str) for k in keys):
            raise ValueError("api_keys must be a list of strings")
        numbers = {k: changes[k] for k in CONFIG_KEYS[1:] if k in changes}
        for name, value in numbers.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
        self.api_keys = set(keys)
        self.token_lifetime = int(numbers.get("token_lifetime", self.token_lifetime))
        self.latency_ms = int(numbers.get("latency_ms", self.latency_ms))
        self.stall_timeout_s = float(numbers.get("stall_timeout_s", self.stall_timeout_s))


STATE = web.AppKey("fake_gemini_state", FakeState)
