"""Helpers of the team gateway's tests: the CLI in a subprocess, gateway subprocesses, waiting for a change.

The CLI runs as users run it (`python -m app keys ...`), against the database
named by `GEMINI_PROXY_STORAGE__DATABASE_URL`; gateway processes run
`python -m app serve` against the session's fake Gemini, output to a file.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
from cli_gateway import CliGateway, clean_env

from app.pipeline.context import Limits
from app.team.prices import PriceTable

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "adm-0123456789-secret"
MODEL = "gemini-2.5-flash"
REVOCATION_BOUND = 5.0  # seconds: a revoked, rotated or expired key stops working within this, on every replica


def cli(database_url: str, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m app <args>` against the database at `database_url`."""
    environ = env if env is not None else clean_env()
    environ = {**environ, "GEMINI_PROXY_STORAGE__DATABASE_URL": database_url}
    result = subprocess.run(
        [sys.executable, "-m", "app", *args], env=environ, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
    return result


def cli_json(database_url: str, *args: str) -> Any:
    return json.loads(cli(database_url, *args, "--json").stdout)


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def chat(url: str, key: str, model: str = MODEL, text: str = "hello") -> httpx.Response:
    return httpx.post(
        url + "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {key}"}, timeout=30,
    )


def wait_until(predicate: Callable[[], bool], bound: float, step: float = 0.1) -> float:
    """Seconds until `predicate()` held; fails after `bound` seconds."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        elapsed = time.monotonic() - start
        assert elapsed < bound, f"not within {bound} s"
        time.sleep(step)


class GatewayProcess(CliGateway):
    """`python -m app serve` on a free port, stdout and stderr together in a file beside `log`; `stop()` by its pid."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        super().__init__(log.parent, env, *args, name=log.stem)




def limited_request(limits: Limits, key_id: str = "k") -> Any:
    """A RequestContext of a chat request by key `key_id` with these limits (for a Limiter driven directly)."""
    from app.pipeline.context import Principal, RequestContext

    return RequestContext("r", "POST", "/v1/chat/completions", principal=Principal.of_key(key_id, key_id, limits=limits))


async def admitted_once(limiter: Any, ctx: Any, prompt: int, max_output: int | None,
                        refused: type[BaseException] = Exception) -> bool:
    """Whether the limiter admits `ctx` (then settled at once), or refuses it with `refused`."""
    try:
        await limiter.admit(ctx, prompt, max_output)
    except refused:
        return False
    await limiter.settle(ctx)
    return True


async def check_budget_reservations(limiter: Any) -> None:
    """Budgets are reserved before the call, so concurrent requests never overspend them together: a token budget
    takes the prompt and the maximum output (without one, the default output, cut to what is left: one such
    request at a time near the end), a USD budget the same priced by the model asked; settled with the real usage.
    `request(limits, key_id)`: a RequestContext of that key, with these limits."""
    from app.gateway.ratelimit import QuotaExceeded
    from app.pipeline.context import Usage

    keys = iter(range(1000))

    async def admitted(limits: Limits, n: int, max_output: int | None, key: str = "") -> list[Any]:
        key = key or f"budget{next(keys)}"  # a key of its own, unless named
        ctxs = [limited_request(limits, key) for _ in range(n)]
        results = await asyncio.gather(*(limiter.admit(c, 50, max_output, MODEL) for c in ctxs), return_exceptions=True)
        assert all(r is None or isinstance(r, QuotaExceeded) for r in results), results
        return [c for c, r in zip(ctxs, results, strict=True) if r is None]

    tokens = Limits(tokens_per_day=500)
    first = await admitted(tokens, 20, None, "tokens")
    assert len(first) == 1  # its default output does not fit: it takes what is left, the others wait
    first[0].usage = Usage(prompt=50, completion=70)
    await limiter.settle(first[0])  # 120 spent: 380 left
    assert len(await admitted(tokens, 20, 100, "tokens")) == 2  # 150 each: two fit in 380 (a third would not)
    assert len(await admitted(tokens, 20, 100)) == 3  # and three in a fresh key's 500
    usd = Limits(usd_per_month=0.001)  # 1000 micro-USD; gemini-2.5-flash: 50 prompt tokens ~15, 4096 output ~10,240
    assert len(await admitted(usd, 20, None)) == 1
    each = PriceTable().lookup(MODEL).cost_micro(Usage(prompt=50, completion=100))  # ~265 micro-USD
    assert len(await admitted(Limits(usd_per_month=0.01), 60, 100)) == 10_000 // each
