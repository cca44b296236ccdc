"""The command line, as users run it: `gemini-proxy serve | check-config | fake-gemini`
and `python -m app`, in subprocesses with a clean environment and free ports.

The fake Gemini runs as its own subprocess (`gemini-proxy fake-gemini`); every
process is stopped by a finalizer, workers included.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

BIN = Path(sys.executable).parent
GEMINI_PROXY = str(BIN / "gemini-proxy")
ROOT = Path(__file__).resolve().parent.parent
FAKE_KEYS = ("cli-key-1", "cli-key-2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without anything that configures Gemini or the gateway."""
    drop = ("GEMINI_", "GOOGLE_", "VERTEX_", "OPENAI_", "CLOUDSDK_")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _group_members(pgid: int) -> list[int]:
    """Pids of the live processes in a process group (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


class Proc:
    """A subprocess in its own session; output goes to a file (a pipe could fill up and block it)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.args = args
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_http(self, url: str, timeout: float = 30) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.args} exited with {self.proc.returncode}:\n{self.output()}")
            try:
                response = httpx.get(url, timeout=2)
                if response.status_code == 200:
                    return response
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} not ready after {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.args} still running after {timeout}s:\n{self.output()}") from None

    def stop(self) -> None:
        members = _group_members(self.proc.pid) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in members:  # workers that outlived their supervisor, by pid
            if pid != self.proc.pid and pid in _group_members(self.proc.pid):
                os.kill(pid, signal.SIGKILL)
        self._out.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        proc = Proc(list(args), env if env is not None else clean_env(), cwd or tmp_path, tmp_path / f"proc-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture(scope="module")
def fake_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`gemini-proxy fake-gemini` in a subprocess; yields its URL."""
    port = free_port()
    tmp = tmp_path_factory.mktemp("fake")
    args = [GEMINI_PROXY, "fake-gemini", "--port", str(port), "--seed", "5"]
    for key in FAKE_KEYS:
        args += ["--api-key", key]
    proc = Proc(args, clean_env(), tmp, tmp / "fake.log")
    url = f"http://127.0.0.1:{port}"
    try:
        proc.wait_http(url + "/_fake/stats")
        assert f"listening on {url}" in proc.output()
        yield url
    finally:
        proc.stop()


@pytest.fixture
def fake_admin(fake_proc: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake_proc, timeout=10) as admin:
        assert admin.post("/_fake/reset").status_code == 200
        yield admin


def sdk(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def wait_listening(proc: Proc, port: int, timeout: float = 30) -> str:
    """Ready, and it is this process that listens on the port (not another program that took it)."""
    url = f"http://127.0.0.1:{port}"
    proc.wait_http(url + "/readyz", timeout)
    deadline = time.monotonic() + 5
    while f"running on {url}" not in proc.output():
        assert time.monotonic() < deadline, f"another process answers on port {port}:\n{proc.output()}"
        time.sleep(0.05)
    return url


def serve(spawn: Any, *args: str, env: dict[str, str], python_m: bool = False) -> tuple[Proc, str]:
    command = [sys.executable, "-m", "app"] if python_m else [GEMINI_PROXY]
    for attempt in range(3):  # a free port can be taken by someone else before the server binds it
        port = free_port()
        proc = spawn(*command, "serve", "--port", str(port), *args, env=env)
        try:
            return proc, wait_listening(proc, port)
        except AssertionError:
            if attempt == 2 or "address already in use" not in proc.output().lower():
                raise
    raise AssertionError("unreachable")


# -- serve, zero-config ------------------------------------------------------------------------------------


def test_serve_zero_config_serves_every_gemini_model(spawn, fake_proc, fake_admin):
    env = clean_env(GEMINI_API_KEY=",".join(FAKE_KEYS), GEMINI_BASE_URL=fake_proc)
    proc, url = serve(spawn, env=env)
    with sdk(url) as client:
        listed = {m.id: m.model_extra["endpoints"] for m in client.models.list()}
        ids = [model for model, endpoints in listed.items() if "chat" in endpoints]
        assert {"gemini-2.0-flash", "gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview"} <= set(ids)
        assert listed["gemini-embedding-001"] == ["embeddings"]
        for model in ids:
            completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi " + model}])
            assert completion.model == model
            assert completion.choices[0].finish_reason in ("stop", "length")
        stream = client.chat.completions.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "stream me please now"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "Echo: stream me please now"
    recorded = fake_admin.get("/_fake/requests").json()["requests"]
    generated = {r["model"] for r in recorded if r["path"].endswith(":generateContent")}
    assert generated == set(ids)  # each under its own name
    assert {r["api_key"] for r in recorded} == set(FAKE_KEYS)  # the comma-separated pool, both keys used
    assert all(r["path"].startswith("/v1beta/") for r in recorded)
    banner = proc.output()
    assert "DEMO" not in banner
    assert "cli-key-1" not in banner and "cli-key-2" not in banner


def test_python_dash_m_app_serves(spawn, fake_proc, fake_admin):
    env = clean_env(GEMINI_API_KEY=FAKE_KEYS[0], GEMINI_BASE_URL=fake_proc)
    _, url = serve(spawn, env=env, python_m=True)
    with sdk(url) as client:
        completion = client.chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": "via -m"}])
    assert completion.choices[0].message.content == "Echo: via -m"


def test_serve_refused_key_is_502_and_not_logged(spawn, fake_proc, fake_admin):
    secret = "AIzaSy-refused-by-the-fake-42"
    env = clean_env(GEMINI_API_KEY=secret, GEMINI_BASE_URL=fake_proc)
    proc, url = serve(spawn, env=env)
    with sdk(url) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502 and secret not in info.value.response.text
    time.sleep(0.2)
    output = proc.output()
    assert "refused the credentials" in output or "credential" in output.lower()
    assert secret not in output


# -- demo mode ----------------------------------------------------------------------------------------------


def test_demo_mode_with_nothing_configured(spawn, tmp_path):
    proc, url = serve(spawn, env=clean_env())
    assert "DEMO" in proc.output()
    models = httpx.get(url + "/v1/models")
    assert models.headers["x-gemini-proxy-demo"] == "true"
    body = models.json()
    assert body["demo"] is True
    assert body["data"] and all(m["owned_by"] == "gemini-proxy-demo" for m in body["data"])
    assert httpx.get(url + "/readyz").json()["demo"] is True
    with sdk(url) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "hello demo"}]
        )
        assert raw.headers["x-gemini-proxy-demo"] == "true"
        assert raw.parse().choices[0].message.content == "Echo: hello demo"
        streamed = client.chat.completions.with_raw_response.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "hello demo stream"}], stream=True
        )
        assert streamed.headers["x-gemini-proxy-demo"] == "true"
        assert "".join(c.choices[0].delta.content or "" for c in streamed.parse()) == "Echo: hello demo stream"
        bad = httpx.post(url + "/v1/chat/completions", content=b"{")
        assert bad.status_code == 400 and bad.headers["x-gemini-proxy-demo"] == "true"


def test_configured_upstream_never_falls_back_to_demo(spawn, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "real.yaml"
    config.write_text(f"upstreams:\n  - name: real\n    base_url: {dead}\n    api_keys: [k]\nretry:\n  max_attempts: 1\n")
    proc, url = serve(spawn, "--config", str(config), env=clean_env())
    assert "DEMO" not in proc.output()
    models = httpx.get(url + "/v1/models")
    assert "demo" not in models.json() and "x-gemini-proxy-demo" not in models.headers
    r = httpx.post(url + "/v1/chat/completions", json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code >= 500 and "x-gemini-proxy-demo" not in r.headers
    assert httpx.get(url + "/readyz").json() == {"status": "ready", "demo": False, "upstreams": ["real"]}


def test_config_with_unset_key_variable_fails_instead_of_demo(spawn, tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text("upstreams:\n  - name: real\n    api_keys: ['${MY_GEMINI_KEY}']\n")
    proc = spawn(GEMINI_PROXY, "serve", "--config", str(config), "--port", str(free_port()), env=clean_env())
    assert proc.wait_exit() != 0
    output = proc.output()
    assert str(config) in output and "upstreams[0].api_keys[0]" in output and "MY_GEMINI_KEY" in output
    assert "DEMO" not in output


# -- serve --config, interpolation and env overrides -----------------------------------------------------------


CONFIG = """
server:
  port: 1            # overridden by GEMINI_PROXY_SERVER__PORT (port 1 could not be bound)
  keepalive_seconds: 5
upstreams:
  - name: local
    base_url: ${FAKE_URL}
    api_keys: ["${MY_KEY}"]
aliases:
  gpt-4o-mini: ${ALIAS_TARGET:-gemini-2.5-flash}
"""


@pytest.mark.parametrize("how", ["--config", "GEMINI_PROXY_CONFIG"])
def test_serve_config_file_with_interpolation_and_env_override(spawn, fake_proc, fake_admin, tmp_path, how):
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    port = free_port()
    env = clean_env(FAKE_URL=fake_proc, MY_KEY=FAKE_KEYS[1], GEMINI_PROXY_SERVER__PORT=str(port))
    args = [GEMINI_PROXY, "serve"]
    if how == "--config":
        args += ["--config", str(config)]
    else:
        env["GEMINI_PROXY_CONFIG"] = str(config)
    proc = spawn(*args, env=env)
    url = wait_listening(proc, port)
    with sdk(url) as client:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "alias"}])
        assert completion.model == "gpt-4o-mini" and completion.choices[0].message.content == "Echo: alias"
        assert "gpt-4o-mini" in [m.id for m in client.models.list()]
    last = [r for r in fake_admin.get("/_fake/requests").json()["requests"] if r["model"]][-1]
    assert last["model"] == "gemini-2.5-flash" and last["api_key"] == FAKE_KEYS[1]
    assert FAKE_KEYS[1] not in proc.output()


def test_port_flag_beats_env(spawn, fake_proc):
    env = clean_env(GEMINI_API_KEY=FAKE_KEYS[0], GEMINI_BASE_URL=fake_proc, GEMINI_PROXY_SERVER__PORT=str(free_port()))
    _, url = serve(spawn, env=env)  # serve() passes --port with another free port
    assert httpx.get(url + "/healthz").json()["status"] == "ok"


def test_client_keys_from_env(spawn, fake_proc, fake_admin):
    env = clean_env(
        GEMINI_API_KEY=FAKE_KEYS[0], GEMINI_BASE_URL=fake_proc, GEMINI_PROXY_AUTH__CLIENT_KEYS='["sk-team-1", "sk-team-2"]'
    )
    _, url = serve(spawn, env=env)
    with sdk(url, "sk-team-2") as client:
        assert client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "k"}]).choices
    with sdk(url, "sk-other") as client:
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


# -- check-config and start-up failures ---------------------------------------------------------------------


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GEMINI_PROXY, *args], env=env or clean_env(), cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_check_config_good(tmp_path):
    config = tmp_path / "good.yaml"
    config.write_text(CONFIG)
    result = run("check-config", str(config), env=clean_env(FAKE_URL="http://127.0.0.1:9", MY_KEY="k"))
    assert result.returncode == 0, result.stderr
    assert str(config) in result.stdout and "OK" in result.stdout
    assert "local" in result.stdout  # what it found


SECRET = "AIzaSy-do-not-print-me-0123456789"

BAD_CONFIGS = {
    "yaml": ("server:\n  port: [1, 2\n", ["YAML", "line"]),
    "type": ("server:\n  port: eighty\n", ["server.port", "integer"]),
    "unknown-setting": ("server:\n  portt: 80\n", ["server.portt", "not permitted"]),
    "missing-variable": ("upstreams:\n  - name: a\n    api_keys: ['${NOT_SET_ANYWHERE}']\n", ["upstreams[0].api_keys[0]", "NOT_SET_ANYWHERE"]),
    "no-upstream": ("server:\n  port: 8000\n", ["upstreams", "no upstream"]),
    "no-key": ("upstreams:\n  - name: a\n", ["upstreams[0].api_keys", "at least one key"]),
    "secret-in-bad-value": (f"upstreams:\n  - name: a\n    api_keys: {SECRET}\n", ["upstreams[0].api_keys", "list"]),
    "secret-in-yaml-error": (f"upstreams:\n  - name: a\n    api_keys: ['{SECRET}\n", ["YAML"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_check_config_bad(tmp_path, case):
    text, expected = BAD_CONFIGS[case]
    config = tmp_path / f"{case}.yaml"
    config.write_text(text)
    result = run("check-config", str(config))
    assert result.returncode != 0
    message = result.stderr
    assert str(config) in message
    for fragment in expected:
        assert fragment in message, message
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in message


def test_check_config_missing_file(tmp_path):
    result = run("check-config", str(tmp_path / "absent.yaml"))
    assert result.returncode != 0 and "absent.yaml" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("case", ["type", "missing-variable", "secret-in-yaml-error"])
def test_serve_fails_at_startup_with_the_same_message(tmp_path, case):
    text, expected = BAD_CONFIGS[case]
    config = tmp_path / f"{case}.yaml"
    config.write_text(text)
    checked = run("check-config", str(config))
    served = run("serve", "--config", str(config))  # (a --port flag would replace the bad server.port)
    assert served.returncode != 0
    assert checked.stderr.strip() and served.stderr.strip() == checked.stderr.strip()
    for fragment in expected:
        assert fragment in served.stderr
    assert SECRET not in served.stderr


def test_serve_fails_on_bad_env_override(tmp_path):
    served = run("serve", env=clean_env(GEMINI_API_KEY="k", GEMINI_PROXY_SERVER__PORT="not-a-port"))
    assert served.returncode != 0
    assert "server.port" in served.stderr and "GEMINI_PROXY_SERVER__PORT" in served.stderr


def test_version_and_help():
    assert run("--version").stdout.startswith("gemini-proxy ")
    result = run("--help")
    assert result.returncode == 0 and all(cmd in result.stdout for cmd in ("serve", "check-config", "fake-gemini"))


# -- several workers -----------------------------------------------------------------------------------------


def test_workers_two(spawn, fake_proc, fake_admin):
    env = clean_env(GEMINI_API_KEY=FAKE_KEYS[0], GEMINI_BASE_URL=fake_proc, GEMINI_PROXY_ALIASES='{"fast": "gemini-2.5-flash"}')
    proc, url = serve(spawn, "--workers", "2", env=env)

    def ask(i: int) -> str:
        with sdk(url) as client:
            completion = client.chat.completions.create(model="fast", messages=[{"role": "user", "content": f"worker {i}"}])
            return completion.choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(16)))
    assert answers == [f"Echo: worker {i}" for i in range(16)]
    # a supervisor and two worker processes
    deadline = time.monotonic() + 10
    while len(_group_members(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_group_members(proc.pid)) >= 3, proc.output()


def test_check_config_on_the_shipped_example():
    result = run("check-config", str(ROOT / "config.example.yaml"), env=clean_env(GEMINI_API_KEY="k"))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
