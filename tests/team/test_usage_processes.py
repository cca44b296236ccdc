"""No usage record is lost: PostgreSQL stopped for 10 s under traffic (records spooled, then written back;
`gemini_proxy_usage_records_pending` goes up, then to 0), and SIGTERM flushes what is queued (a real
`python -m app serve` process). `gemini-proxy usage` prints what /admin/usage answers."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from gateway_harness import FakeGemini, metric_value

from .team_support import ADMIN_KEY, GatewayProcess, chat, clean_env, cli, wait_until
from .usage_support import usage, wait_for_requests


def test_a_database_outage_loses_no_record(make_gateway, postgres, tmp_path: Path, fake):
    database_url = postgres.new_database()
    gateway = make_gateway(
        storage={"database_url": database_url, "usage_flush_seconds": 0.2, "usage_spool": str(tmp_path / "spool")},
        auth={"admin_keys": [ADMIN_KEY]},
    )
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        key = admin.post("/admin/keys", json={"name": "steady", "team": "ops"}).json()["key"]
        served: list[int] = []
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                served.append(chat(gateway.url, key).status_code)
                time.sleep(0.05)

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            time.sleep(1.0)
            postgres.pause()
            try:
                pending_seen = 0.0
                up_seen = 1.0
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    pending_seen = max(pending_seen, metric_value(gateway, "gemini_proxy_usage_records_pending"))
                    up_seen = min(up_seen, metric_value(gateway, "gemini_proxy_storage_up", backend="database"))
                    time.sleep(0.5)
                spooled = list((tmp_path / "spool").glob("usage-*.jsonl"))
                assert spooled and any(p.stat().st_size > 0 for p in spooled), "records are spooled to disk"
            finally:
                postgres.resume()
            time.sleep(1.0)
        finally:
            stop.set()
            worker.join(30)
        assert pending_seen > 0, "the pending gauge rose during the outage"
        assert up_seen == 0, "storage_up said the database was down"
        assert set(served) == {200}, "requests went on with the keys held in memory"
        deadline = time.monotonic() + 15
        while metric_value(gateway, "gemini_proxy_usage_records_pending") > 0:
            assert time.monotonic() < deadline, "the spool was not written back"
            time.sleep(0.2)
        # up again once both the usage writer and the key cache (it polls every 2 s) have seen it answer
        wait_until(lambda: metric_value(gateway, "gemini_proxy_storage_up", backend="database") == 1, 10)
        data = wait_for_requests(admin, len(served))
        assert data["rows"][0]["requests"] == len(served) > 20
        assert all(p.stat().st_size == 0 or not p.exists() for p in (tmp_path / "spool").glob("usage-*.jsonl"))


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_flushes_the_queue(tmp_path: Path, fake_gemini: FakeGemini, fake, workers: int):
    database_url = f"sqlite+aiosqlite:///{tmp_path}/gateway.db"
    config_key = "sk-usage-config-key-0123456789"
    env = clean_env(
        GEMINI_API_KEY="test-key", GEMINI_BASE_URL=fake_gemini.url, GEMINI_PROXY_STORAGE__DATABASE_URL=database_url,
        GEMINI_PROXY_AUTH__CLIENT_KEYS=json.dumps([{"id": "cfg-batch", "name": "batch", "team": "etl", "key": config_key}]),
        GEMINI_PROXY_STORAGE__USAGE_FLUSH_SECONDS="60", GEMINI_PROXY_STORAGE__USAGE_BATCH_SIZE="10000",
    )
    gateway = GatewayProcess(env, tmp_path / "gateway.log", "--workers", str(workers))
    try:
        for _ in range(6):
            assert chat(gateway.url, config_key).status_code == 200
        before = json.loads(cli(database_url, "usage", "--json").stdout)
        assert before["rows"] == [], "nothing written yet: the batch waits for 60 s or 10000 records"
    finally:
        gateway.stop()  # SIGTERM
    assert gateway.proc.returncode in (0, -15) and "Application shutdown complete" in gateway.output(), gateway.output()
    after = json.loads(cli(database_url, "usage", "--json").stdout)
    assert [(r["group"], r["requests"], r["errors"]) for r in after["rows"]] == [("cfg-batch", 6, 0)]
    assert after["rows"][0]["prompt_tokens"] > 0 and after["rows"][0]["cost_usd"] > 0
    teams = json.loads(cli(database_url, "usage", "--by", "team", "--json").stdout)
    assert teams["rows"][0]["group"] == "etl"
    assert not list(tmp_path.glob("gateway.db.usage-spool/usage-*.jsonl")), "nothing was left in a spool"


@pytest.fixture
def usage_cli_data(make_gateway, database_url, fake):
    gateway = make_gateway(storage={"database_url": database_url, "usage_flush_seconds": 0.1}, auth={"admin_keys": [ADMIN_KEY]})
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        one = admin.post("/admin/keys", json={"name": "one", "team": "a"}).json()["key"]
        two = admin.post("/admin/keys", json={"name": "two", "team": "b"}).json()["key"]
        for key in (one, one, two):
            assert chat(gateway.url, key).status_code == 200
        wait_for_requests(admin, 3)
        yield database_url, admin


def test_usage_cli_table_and_json(usage_cli_data):
    database_url, admin = usage_cli_data
    window = ("--since", "2026-01-01", "--until", "2099-01-01")
    for by in ("key", "team", "model", "day"):
        printed = json.loads(cli(database_url, "usage", "--by", by, *window, "--json").stdout)
        assert printed == usage(admin, by, since="2026-01-01", until="2099-01-01")
    table = cli(database_url, "usage", "--by", "team", *window).stdout.splitlines()
    assert table[0].startswith("Usage by team, 2026-01-01T00:00:00Z to 2099-01-01T00:00:00Z")
    assert table[1].split() == ["TEAM", "REQUESTS", "ERRORS", "PROMPT", "COMPLETION", "REASONING", "CACHED", "COST_USD"]
    cells = {line.split()[0]: line.split() for line in table[2:]}
    assert set(cells) == {"a", "b", "TOTAL"}
    assert cells["a"][1] == "2" and cells["b"][1] == "1" and cells["TOTAL"][1] == "3"
    refused = cli(database_url, "usage", "--since", "last week", check=False)
    assert refused.returncode == 2 and "--since" in refused.stderr and "last week" in refused.stderr
    refused = cli(database_url, "usage", "--by", "user", check=False)
    assert refused.returncode == 2 and "--by" in refused.stderr
    refused = cli(database_url, "usage", "--until", "9999-12-31T23:59:59-14:00", check=False)
    assert refused.returncode == 2 and "--until" in refused.stderr and "out of range" in refused.stderr, refused.stderr
    widest = cli(database_url, "usage", "--since", "0001-01-01", "--until", "9999-12-31T23:59:59Z", "--json")
    assert sum(r["requests"] for r in json.loads(widest.stdout)["rows"]) == 3
    bad = admin.get("/admin/usage", params={"since": "0001-01-01T00:00:00+14:00"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "since", bad.text
