"""Helpers of the team gateway's tests: the CLI in a subprocess, gateway subprocesses, waiting for a change.

The CLI runs as users run it (`python -m app keys ...`), against the database
named by `GEMINI_PROXY_STORAGE__DATABASE_URL`; gateway processes run
`python -m app serve` against the session's fake Gemini, output to a file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "adm-0123456789-secret"
MODEL = "gemini-2.5-flash"
REVOCATION_BOUND = 5.0  # seconds: a revoked, rotated or expired key stops working within this, on every replica


def clean_env(**extra: str) -> dict[str, str]:
    drop = ("GEMINI_", "GOOGLE_", "VERTEX_", "OPENAI_", "CLOUDSDK_")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """`python -m app serve` on a free port; output to a file; stopped by `stop()` (by its own pid)."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self._out = open(log, "wb")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(self.port), *args],
            env=env, cwd=log.parent, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200 and "running on" in self.output():
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"gateway not ready:\n{self.output()}"
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
