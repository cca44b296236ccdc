"""Start-up options of the fake Gemini server.

Owns: `FakeOptions` (what `create_fake_app` / `start_fake` take) and its
command-line form (`add_cli_arguments`, `options_from_args`), shared by
`gemini-proxy fake-gemini` and `run_from_args`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

DEFAULT_PORT = 8089


@dataclass(frozen=True)
class FakeOptions:
    """How the fake runs. Runtime-changeable ones can also be set via `POST /_fake/config`."""

    host: str = "127.0.0.1"
    port: int = 0
    # Accepted Gemini API keys; empty = any non-empty key is accepted.
    api_keys: tuple[str, ...] = ()
    # Lifetime (seconds) of access tokens issued by `POST /token`.
    token_lifetime: int = 3600
    # Added before the response headers of every API request.
    latency_ms: int = 0
    # Fixes the signature secret and response ids across restarts; None = random secret.
    seed: int | None = None
    # How long `stall_after_chunks` keeps a silent connection open before dropping it.
    stall_timeout_s: float = 300.0
    # Recorded requests kept for `GET /_fake/requests` (oldest dropped first).
    max_recorded: int = 10_000


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the fake's options to `parser` (used by `gemini-proxy fake-gemini`)."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)"
    )
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        default=[],
        metavar="KEY",
        help="accepted API key (repeatable); without any, every non-empty key is accepted",
    )
    parser.add_argument(
        "--token-lifetime",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="lifetime of issued OAuth access tokens (default 3600)",
    )
    parser.add_argument(
        "--latency-ms", type=int, default=0, help="delay before every response (default 0)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="fix signatures and response ids across restarts"
    )


def options_from_args(args: argparse.Namespace) -> FakeOptions:
    return FakeOptions(
        host=args.host,
        port=args.port,
        api_keys=tuple(args.api_keys or ()),
        token_lifetime=args.token_lifetime,
        latency_ms=args.latency_ms,
        seed=args.seed,
    )
