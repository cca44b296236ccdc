"""The fake Gemini server: an offline stand-in for the Gemini Developer API and Vertex AI.

Owns the public surface only; see docs/fake-gemini.md for the behaviour.

    create_fake_app(options) -> aiohttp.web.Application
    await start_fake(options, host=None, port=None) -> RunningFake (.url, .port, .state, await .close())
    add_cli_arguments(parser); run_from_args(args) -> int     # `gemini-proxy fake-gemini`

Modules: catalogue (models), body (reading requests), strictness (per-model
400s), signatures, directives, failures, schema_synth, reply (what to say),
extras, render (wire shapes), delivery (framing, faults, disconnects),
auth (keys, tokens, /token), api / admin (endpoints), state, options, server.
"""

from app.testing.fake_gemini.options import FakeOptions, add_cli_arguments
from app.testing.fake_gemini.server import RunningFake, create_fake_app, run_from_args, start_fake

__all__ = [
    "FakeOptions",
    "RunningFake",
    "add_cli_arguments",
    "create_fake_app",
    "run_from_args",
    "start_fake",
]
