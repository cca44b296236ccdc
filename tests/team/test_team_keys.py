"""Keys made at run time, end to end: the CLI in a subprocess writes a real SQLite file, the gateway
(real HTTP) honours them through the openai SDK: they work, revoked / rotated / expired keys get 401
within 5 s, a model the key may not use is a 403 naming it, `/v1/models` lists only what it may call.
Config-file keys (with team and models) keep working beside them.
"""

from __future__ import annotations

import hashlib
import re
import time

import httpx
import openai
import pytest

from .conftest import limits
from .team_support import MODEL, REVOCATION_BOUND, chat, cli, cli_json, sdk, wait_until

KEY_FIELDS = ["id", "key", "name", "team", "models", "limits", "expires_at", "created_at"]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_cli_create_shape_and_the_key_works(team_gateway, database_url, fake):
    created = cli_json(
        database_url, "keys", "create", "--name", "alice", "--team", "red", "--models", "gemini-2.5-*, gpt-4o",
        "--rpm", "60", "--tpm", "100000", "--concurrency", "4", "--tokens-per-day", "1000000",
        "--tokens-per-month", "20000000", "--usd-per-month", "25.5", "--expires", "30d",
    )
    assert list(created) == KEY_FIELDS
    assert created["id"].startswith("key_")
    assert re.fullmatch(r"gp-[A-Za-z0-9_-]{43}", created["key"])
    assert created["name"] == "alice" and created["team"] == "red"
    assert created["models"] == ["gemini-2.5-*", "gpt-4o"]
    assert created["limits"] == limits(rpm=60, tpm=100000, concurrency=4, tokens_per_day=1000000,
                                       tokens_per_month=20000000, usd_per_month=25.5)
    assert RFC3339.match(created["created_at"]) and RFC3339.match(created["expires_at"])
    assert created["expires_at"] > created["created_at"]

    with sdk(team_gateway.url, created["key"]) as client:
        completion = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi from alice"}])
        assert completion.choices[0].message.content == "Echo: hi from alice"
        chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "streamed"}], stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: streamed"
    # the client's key never goes to Google
    assert {r["api_key"] for r in fake.requests()} == {"test-key"}

    # list / get: the same shape without the secret
    listed = cli_json(database_url, "keys", "list")
    assert listed["object"] == "list"
    [entry] = listed["data"]
    assert entry == {k: v for k, v in created.items() if k != "key"}
    assert cli_json(database_url, "keys", "get", created["id"]) == entry
    assert created["key"] not in cli(database_url, "keys", "list").stdout


def test_database_keys_close_an_open_gateway_at_once(team_gateway, database_url, fake):
    """Without keys the gateway is open; the first key made by another process closes it, without waiting for a poll."""
    assert chat(team_gateway.url, "anything").status_code == 200
    created = cli_json(database_url, "keys", "create", "--name", "first", "--models", "gemini-3*")
    # a key the cache has not seen yet makes it look again at once: the restriction applies from the first request
    r = chat(team_gateway.url, created["key"], model=MODEL)
    assert r.status_code == 403 and r.json()["error"]["code"] == "model_not_allowed"
    assert chat(team_gateway.url, created["key"], model="gemini-3-pro-preview").status_code == 200
    wait_until(lambda: chat(team_gateway.url, "anything").status_code == 401, REVOCATION_BOUND)
    r = httpx.post(team_gateway.url + "/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 401


def test_model_not_allowed_is_403_naming_the_model(team_gateway, database_url, fake):
    created = cli_json(database_url, "keys", "create", "--name", "narrow", "--models", "gemini-2.5-flash*")
    with sdk(team_gateway.url, created["key"]) as client:
        assert client.chat.completions.create(model="gemini-2.5-flash-lite", messages=[{"role": "user", "content": "ok"}]).choices
        assert client.chat.completions.create(model="models/gemini-2.5-flash", messages=[{"role": "user", "content": "ok"}]).choices
        for stream in (False, True):
            with pytest.raises(openai.PermissionDeniedError) as info:
                result = client.chat.completions.create(model="gemini-2.5-pro", messages=[{"role": "user", "content": "no"}], stream=stream)
                list(result)
            error = info.value.response.json()["error"]
            assert info.value.status_code == 403
            assert error["code"] == "model_not_allowed" and error["param"] == "model"
            assert "`gemini-2.5-pro`" in error["message"] and "narrow" in error["message"]
            assert created["key"] not in info.value.response.text
    assert fake.stats()["requests"] == 2  # the refused calls never reached Google


def test_models_list_shows_only_what_the_key_may_call(team_gateway, database_url, fake):
    everything = {m["id"] for m in httpx.get(team_gateway.url + "/v1/models").json()["data"]}
    assert {"gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview"} <= everything
    created = cli_json(database_url, "keys", "create", "--name", "lister", "--models", "gemini-2.5-*")
    with sdk(team_gateway.url, created["key"]) as client:
        ids = {m.id for m in client.models.list()}
        assert ids == {m for m in everything if m.startswith("gemini-2.5-")} and ids
        assert client.models.retrieve("gemini-2.5-pro").id == "gemini-2.5-pro"
        with pytest.raises(openai.PermissionDeniedError):
            client.models.retrieve("gemini-3-pro-preview")
    every = cli_json(database_url, "keys", "create", "--name", "all-models")
    assert every["models"] == ["*"]
    with sdk(team_gateway.url, every["key"]) as client:
        assert {m.id for m in client.models.list()} == everything


def test_revoked_key_stops_within_5s(team_gateway, database_url, fake):
    created = cli_json(database_url, "keys", "create", "--name", "doomed")
    keep = cli_json(database_url, "keys", "create", "--name", "kept")
    assert chat(team_gateway.url, created["key"]).status_code == 200
    result = cli(database_url, "keys", "revoke", created["id"])
    assert "Revoked" in result.stdout
    took = wait_until(lambda: chat(team_gateway.url, created["key"]).status_code == 401, REVOCATION_BOUND)
    r = chat(team_gateway.url, created["key"])
    assert r.json()["error"]["code"] == "invalid_api_key" and created["key"] not in r.text
    assert chat(team_gateway.url, keep["key"]).status_code == 200
    # revoked keys are no longer listed nor found; revoking again is fine
    assert [k["id"] for k in cli_json(database_url, "keys", "list")["data"]] == [keep["id"]]
    assert cli(database_url, "keys", "get", created["id"], check=False).returncode == 1
    cli(database_url, "keys", "revoke", created["id"])
    missing = cli(database_url, "keys", "revoke", "key_doesnotexist", check=False)
    assert missing.returncode == 1 and "key_doesnotexist" in missing.stderr
    assert took < REVOCATION_BOUND


def test_rotated_key_old_secret_stops_new_one_works(team_gateway, database_url, fake):
    created = cli_json(database_url, "keys", "create", "--name", "rotating", "--team", "blue", "--rpm", "7")
    assert chat(team_gateway.url, created["key"]).status_code == 200
    rotated = cli_json(database_url, "keys", "rotate", created["id"])
    assert list(rotated) == KEY_FIELDS
    assert rotated["id"] == created["id"] and rotated["key"] != created["key"]
    assert {k: v for k, v in rotated.items() if k != "key"} == {k: v for k, v in created.items() if k != "key"}
    assert chat(team_gateway.url, rotated["key"]).status_code == 200  # at once (an unknown key makes the cache look)
    wait_until(lambda: chat(team_gateway.url, created["key"]).status_code == 401, REVOCATION_BOUND)
    assert chat(team_gateway.url, rotated["key"]).status_code == 200


def test_a_new_key_that_would_already_be_expired_is_refused(team_gateway, database_url, admin, fake):
    r = admin.post("/admin/keys", json={"name": "dead", "expires_at": "2020-01-01T00:00:00Z"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "expires_at"
    done = cli(database_url, "keys", "create", "--name", "dead", "--expires", "2020-01-01", check=False)
    assert done.returncode == 1 and "in the past" in done.stderr
    assert all(k["name"] != "dead" for k in admin.get("/admin/keys").json()["data"])


def test_expired_key_is_401(team_gateway, database_url, admin, fake):
    """Expiry needs no change in the database: the clock is checked on every request."""
    made = time.monotonic()
    created = admin.post("/admin/keys", json={"name": "brief", "expires_in_seconds": 4}).json()
    works = chat(team_gateway.url, created["key"]).status_code
    if time.monotonic() - made < 3:  # (a machine slower than that has let it expire already)
        assert works == 200
    wait_until(lambda: chat(team_gateway.url, created["key"]).status_code == 401, 4 + REVOCATION_BOUND)
    r = chat(team_gateway.url, created["key"])
    assert r.json()["error"]["code"] == "invalid_api_key" and "expired" in r.json()["error"]["message"]
    # the CLI gives it a new life, then ends it with a time in the past; each within 5 s
    cli(database_url, "keys", "update", created["id"], "--expires", "never")
    wait_until(lambda: chat(team_gateway.url, created["key"]).status_code == 200, REVOCATION_BOUND)
    cli(database_url, "keys", "update", created["id"], "--expires", "2020-01-01T00:00:00Z")
    wait_until(lambda: chat(team_gateway.url, created["key"]).status_code == 401, REVOCATION_BOUND)


def test_update_changes_models_within_5s(team_gateway, database_url, fake):
    created = cli_json(database_url, "keys", "create", "--name", "changing", "--models", "gemini-2.5-pro")
    assert chat(team_gateway.url, created["key"], model=MODEL).status_code == 403
    updated = cli_json(database_url, "keys", "update", created["id"], "--models", "gemini-2.5-flash", "--rpm", "5",
                       "--usd-per-month", "3", "--team", "green", "--name", "changed")
    assert updated["models"] == ["gemini-2.5-flash"] and updated["team"] == "green" and updated["name"] == "changed"
    assert updated["limits"] == limits(rpm=5, usd_per_month=3.0)
    wait_until(lambda: chat(team_gateway.url, created["key"], model=MODEL).status_code == 200, REVOCATION_BOUND)
    assert chat(team_gateway.url, created["key"], model="gemini-2.5-pro").status_code == 403
    cleared = cli_json(database_url, "keys", "update", created["id"], "--rpm", "none", "--team", "none", "--models", "*")
    assert cleared["limits"] == limits(usd_per_month=3.0) and cleared["team"] is None and cleared["models"] == ["*"]
    nothing = cli(database_url, "keys", "update", created["id"], check=False)
    assert nothing.returncode == 2


def test_teams_cli(database_url):
    team = cli_json(database_url, "teams", "create", "red", "--rpm", "100", "--usd-per-month", "500")
    assert team == {"name": "red", "limits": limits(rpm=100, usd_per_month=500.0), "created_at": team["created_at"]}
    assert cli(database_url, "teams", "create", "--name", "red", check=False).returncode == 1  # exists
    updated = cli_json(database_url, "teams", "update", "red", "--rpm", "none", "--tpm", "5000")
    assert updated["limits"] == limits(tpm=5000, usd_per_month=500.0)
    cli_json(database_url, "keys", "create", "--name", "k", "--team", "blue")  # a key's new team is made for it
    listed = cli_json(database_url, "teams", "list")
    assert [t["name"] for t in listed["data"]] == ["red", "blue"]
    table = cli(database_url, "teams", "list").stdout
    assert "red" in table and "5000" in table and "NAME" in table
    assert cli(database_url, "teams", "update", "nope", "--rpm", "1", check=False).returncode == 1


@pytest.mark.parametrize(
    "args",
    [["keys", "create"], ["keys", "create", "--name", "x", "--rpm", "0"], ["keys", "create", "--name", "x", "--expires", "soon"],
     ["keys", "create", "--name", "x", "--usd-per-month", "-1"], ["keys", "frobnicate"]],
    ids=["no-name", "rpm-0", "bad-expiry", "negative-usd", "unknown-command"],
)
def test_cli_usage_errors_exit_2(database_url, args):
    result = cli(database_url, *args, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_cli_storage_error_is_reported(tmp_path):
    result = cli(f"sqlite:///{tmp_path}/missing-dir/x.db", "keys", "list", check=False)
    assert result.returncode == 1 and "missing-dir" in result.stderr and "Traceback" not in result.stderr


# -- config keys beside database keys ------------------------------------------------------------------------

CONFIG_KEY = "sk-config-key-with-team"
PLAIN_KEY = "sk-config-plain"


def test_config_keys_with_team_and_models_work_beside_database_keys(make_gateway, database_url, fake):
    gateway = make_gateway(
        storage={"database_url": database_url},
        auth={"client_keys": [
            {"name": "ci-bot", "key": CONFIG_KEY, "team": "platform", "models": ["gemini-2.5-flash"], "limits": {"rpm": 30}},
            {"key_sha256": hashlib.sha256(PLAIN_KEY.encode()).hexdigest()},
        ]},
    )
    assert chat(gateway.url, CONFIG_KEY).status_code == 200
    r = chat(gateway.url, CONFIG_KEY, model="gemini-2.5-pro")
    assert r.status_code == 403 and "ci-bot" in r.json()["error"]["message"]
    with sdk(gateway.url, CONFIG_KEY) as client:
        assert [m.id for m in client.models.list()] == ["gemini-2.5-flash"]
    assert chat(gateway.url, PLAIN_KEY, model="gemini-2.5-pro").status_code == 200
    created = cli_json(database_url, "keys", "create", "--name", "runtime")
    assert chat(gateway.url, created["key"]).status_code == 200
    assert chat(gateway.url, "sk-neither").status_code == 401
    principal = gateway.state.auth.authenticate(CONFIG_KEY)
    assert (principal.key_id, principal.name, principal.team, principal.models) == ("cfg-ci-bot", "ci-bot", "platform", ("gemini-2.5-flash",))
    assert principal.limits.rpm == 30


def test_team_limits_reach_the_principal(team_gateway, database_url, admin):
    admin.post("/admin/teams", json={"name": "red", "limits": {"tpm": 999}}).raise_for_status()
    created = admin.post("/admin/keys", json={"name": "member", "team": "red", "limits": {"rpm": 3}}).json()
    principal = team_gateway.state.auth.authenticate(created["key"])
    assert (principal.key_id, principal.name, principal.team) == (created["id"], "member", "red")
    assert principal.limits.rpm == 3 and principal.team_limits.tpm == 999
    admin.patch("/admin/teams/red", json={"limits": {"tpm": 5}}).raise_for_status()
    assert team_gateway.state.auth.authenticate(created["key"]).team_limits.tpm == 5  # same process: at once


def test_revoking_the_last_key_does_not_open_the_gateway(team_gateway, database_url, admin):
    created = admin.post("/admin/keys", json={"name": "only"}).json()
    assert chat(team_gateway.url, "no-such-key").status_code == 401
    assert admin.delete(f"/admin/keys/{created['id']}").status_code == 204
    assert chat(team_gateway.url, created["key"]).status_code == 401
    assert chat(team_gateway.url, "no-such-key").status_code == 401
    time.sleep(0.1)
    assert httpx.get(team_gateway.url + "/v1/models").status_code == 401
