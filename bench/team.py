"""The "team" gateways of the bench (owns: their settings, the Redis they share, the checks after a run).

A team cell runs the chat request through a gateway started with one client
key carrying rpm / tpm / concurrency limits far above what the bench sends,
so nothing is refused but the limiter admits and settles every request;
usage records go to a fresh SQLite file under ``bench/results``; metrics and
the JSON access log are on (the defaults, set explicitly). ``team-redis``
is the same gateway with ``GEMINI_PROXY_STORAGE__REDIS_URL`` pointing at a
``redis-server`` started here on a free port, without persistence.

After the run, a cell only counts when the gateway admitted and recorded
every request: ``check()`` reads the limiter's window from one more request's
``x-ratelimit-*`` headers, sums ``gemini_proxy_rate_limited_total`` on
``/metrics`` (must be 0), stops the gateway with SIGTERM (it writes its usage
queue) and counts the key's records with ``gemini-proxy usage --json``
(must equal the requests sent).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from loadgen import descendants  # bench/ is on the path: run.py and compare.py run from it

KEY = "sk-bench-team"  # the client key the loadgen sends (a bench secret, not a real one)
KEY_ID = "cfg-bench-team"
LIMITS = {"rpm": 10_000_000, "tpm": 10_000_000_000, "concurrency": 10_000}  # enforced, never reached
PROFILES = ("team", "team-redis")


def db_path(results: Path, profile: str) -> Path:
    return results / f"usage-{profile}.db"


def fresh_db(results: Path, profile: str) -> str:
    """A new, empty SQLite file for the profile's usage records (what is counted after the run)."""
    path = db_path(results, profile)
    for p in (path, *(Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", ".migrate-lock"))):
        p.unlink(missing_ok=True)
    shutil.rmtree(f"{path}.usage-spool", ignore_errors=True)
    return f"sqlite+aiosqlite:///{path}"


def gateway_env(results: Path, profile: str, redis_url: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """(defaults a --gateway-env may override, settings that define the cell and its checks)."""
    soft = {"GEMINI_PROXY_SERVER__ACCESS_LOG": "json", "GEMINI_PROXY_SERVER__METRICS": "true"}
    hard = {
        "GEMINI_PROXY_AUTH__CLIENT_KEYS": json.dumps([{"name": "bench-team", "key": KEY, "limits": LIMITS}]),
        "GEMINI_PROXY_STORAGE__USAGE_RECORDS": "true",
        "GEMINI_PROXY_STORAGE__DATABASE_URL": fresh_db(results, profile),
    }
    if redis_url:
        hard["GEMINI_PROXY_STORAGE__REDIS_URL"] = redis_url
    return soft, hard


# ---------------------------------------------------------------- redis
def start_redis(procs: Any, free_port: Any) -> str | None:
    """Start a throw-away redis-server (no persistence, in a temp dir); its URL, or None when not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    root = Path(tempfile.mkdtemp(prefix="gp-bench-redis-"))
    procs.dirs.append(root)
    port = free_port()
    procs.start("redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", str(root), "--protected-mode", "no"])
    deadline = time.monotonic() + 30
    while not _ping(port):
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("redis-server did not answer PING within 30 s")
        time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0"


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# ---------------------------------------------------------------- checks
def probe(base: str, model: str) -> dict[str, str]:
    """One chat request with the key: its `x-ratelimit-*` headers (the limiter's view of the key)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}).encode()
    req = urllib.request.Request(f"{base}/v1/chat/completions", data=body, method="POST", headers={
        "content-type": "application/json", "authorization": f"Bearer {KEY}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return {k.lower(): v for k, v in r.headers.items() if k.lower().startswith("x-ratelimit-")}
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"team probe: HTTP {e.code}: {e.read()[:300]!r}") from None


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of one Prometheus metric in an exposition text (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in "{ ":
            total += float(line.rsplit(" ", 1)[1])
    return total


def scrape(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        return r.read().decode()


def count_records(python: str, root: Path, env: dict[str, str]) -> int:
    """Usage records of the bench key, through `gemini-proxy usage --json` on the profile's database."""
    out = subprocess.run([python, "-m", "app", "usage", "--by", "key", "--since", "1d", "--json"], cwd=root,
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"gemini-proxy usage failed ({out.returncode}): {out.stderr[-1000:]}")
    return sum(row["requests"] for row in json.loads(out.stdout)["rows"] if row["group"] == KEY_ID)


def check(procs: Any, name: str, base: str, model: str, sent: int, python: str, root: Path,
          env: dict[str, str]) -> dict[str, Any]:
    """After the run: the limiter counted, refused nothing, and every request sent was recorded.

    A check that cannot be made is a problem of the cell, not an abort: the figures are kept.
    """
    problems = []
    try:
        headers = probe(base, model)
    except (RuntimeError, OSError) as e:
        headers = {"error": str(e)}
    sent += 1
    limit = int(headers.get("x-ratelimit-limit-requests") or 0)
    remaining = int(headers.get("x-ratelimit-remaining-requests") or limit)
    try:
        metrics = scrape(base)
    except OSError as e:
        metrics = ""
        problems.append(f"/metrics not read: {e}")
    out: dict[str, Any] = {
        "requests_sent": sent,
        "limiter_rpm_limit": limit,
        "limiter_requests_in_window": limit - remaining,
        "rate_limited": metric_sum(metrics, "gemini_proxy_rate_limited_total"),
        "requests_total_metric": metric_sum(metrics, "gemini_proxy_requests_total"),
        "peak_rss_mb": peak_rss_mb(procs.procs[name].pid),
    }
    procs.stop(name)  # SIGTERM: the gateway drains and writes its usage queue
    try:
        out["usage_records"] = count_records(python, root, env)
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
        out["usage_records"] = -1
        problems.append(f"usage records not counted: {e}")
    if limit != LIMITS["rpm"] or out["limiter_requests_in_window"] <= 0:
        problems.append(f"the limiter did not count the key's requests (headers: {headers or 'none'})")
    if out["rate_limited"]:
        problems.append(f"{out['rate_limited']:.0f} requests refused by a limit")
    if out["usage_records"] >= 0 and out["usage_records"] != sent:
        problems.append(f"{out['usage_records']} usage records for {sent} requests sent")
    out["problems"] = problems
    return out


# ---------------------------------------------------------------- memory
def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a process tree: the sum of each live process's VmHWM, in MiB."""
    total, seen = 0, False
    for p in [pid, *descendants(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
                        seen = True
        except OSError:
            pass
    return total / 1024 if seen else None
