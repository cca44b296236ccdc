"""The gateway as users start it: `python -m app serve` in a subprocess, on a free port (tests that need a process).

One starter for every test that needs the real CLI: graceful shutdown on
SIGTERM, the access log on stderr, several replicas sharing a database or
Redis. The environment is the test's own (`clean_env` drops every
GEMINI_/GOOGLE_/... variable of the machine running the tests); stdout and
stderr go to files in the working directory, apart or together.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

_MACHINE_VARIABLES = ("GEMINI_", "GOOGLE_", "VERTEX_", "OPENAI_", "CLOUDSDK_", "PROMETHEUS_")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the variables that would configure a gateway, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_MACHINE_VARIABLES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CliGateway:
    """`python -m app serve [--config F] --port P [args]`, ready once /readyz answers and it said where it runs.

    `config`: YAML text written to `workdir/gateway.yaml` and passed with
    `--config`. `apart`: stdout and stderr in two files (else one, `output()`).
    A port taken by someone else between choosing and binding it is retried.
    """

    def __init__(
        self, workdir: Path, env: dict[str, str], *args: str, config: str | None = None, apart: bool = False,
        name: str = "gateway", ready_within: float = 60,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "app", "serve"]
        if config is not None:
            path = workdir / f"{name}.yaml"
            path.write_text(config)
            command += ["--config", str(path)]
        for attempt in range(3):
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.out = workdir / f"{name}-{attempt}.out"
            self.err = workdir / f"{name}-{attempt}.err" if apart else self.out
            with open(self.out, "wb") as out, open(self.err, "ab") as err:
                self.proc = subprocess.Popen(
                    [*command, "--port", str(self.port), *args], env=env, cwd=workdir,
                    stdout=out, stderr=err if apart else subprocess.STDOUT, start_new_session=True,
                )
            if self._ready(ready_within):
                return
            self.kill()
            if attempt == 2 or "address already in use" not in self.stderr().lower():
                raise AssertionError(f"the gateway did not start:\n{self.output()}")

    def _ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return f"running on {self.url}" in self.stderr()
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def output(self) -> str:
        """Everything it wrote (stdout, then stderr when they are apart)."""
        return self.stdout() if self.err == self.out else self.stdout() + self.stderr()

    def stop(self, timeout: float = 15, strict: bool = False) -> int | None:
        """SIGTERM and wait; killed after `timeout` (an AssertionError when `strict`). The exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                if strict:
                    raise AssertionError(f"the gateway did not stop on SIGTERM:\n{self.output()}") from None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
