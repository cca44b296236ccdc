"""The admin API over real HTTP (httpx): keys and teams, its guard, its shapes, and its OpenAPI document."""

from __future__ import annotations

import io
import json
import logging
import time

import httpx
import openai
import pytest

from gateway_harness import metric_value

from .conftest import limits
from .team_support import ADMIN_KEY, REVOCATION_BOUND, chat, cli_json, sdk, wait_until

KEY_FIELDS = ["id", "key", "name", "team", "models", "limits", "expires_at", "created_at"]
KEY_FIELDS_NO_SECRET = [f for f in KEY_FIELDS if f != "key"]


def test_create_get_list_patch_delete_rotate(team_gateway, admin, database_url, fake):
    r = admin.post("/admin/keys", json={"name": "svc", "team": "data", "models": ["gemini-2.5-*"],
                                        "limits": {"rpm": 10, "usd_per_month": 12.5}, "expires_in_seconds": 3600})
    assert r.status_code == 201, r.text
    created = r.json()
    assert list(created) == KEY_FIELDS
    assert r.headers["location"] == f"/admin/keys/{created['id']}"
    assert r.headers["cache-control"] == "no-store"
    assert created["limits"] == limits(rpm=10, usd_per_month=12.5) and created["expires_at"] is not None
    key = created["key"]
    assert chat(team_gateway.url, key).status_code == 200  # usable at once on this replica

    listed = admin.get("/admin/keys").json()
    assert listed["object"] == "list" and [list(k) for k in listed["data"]] == [KEY_FIELDS_NO_SECRET]
    one = admin.get(f"/admin/keys/{created['id']}").json()
    assert one == {k: v for k, v in created.items() if k != "key"} == listed["data"][0]
    # the CLI sees the same key, in the same shape
    assert cli_json(database_url, "keys", "get", created["id"]) == one
    assert admin.get("/admin/keys", params={"team": "data"}).json()["data"] == [one]
    assert admin.get("/admin/keys", params={"team": "other"}).json()["data"] == []

    # PATCH is a merge: absent unchanged, null clears
    patched = admin.patch(f"/admin/keys/{created['id']}", json={"limits": {"tpm": 500, "usd_per_month": None}, "expires_at": None})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert list(body) == KEY_FIELDS_NO_SECRET
    assert body["limits"] == limits(rpm=10, tpm=500) and body["expires_at"] is None
    assert body["models"] == ["gemini-2.5-*"] and body["team"] == "data" and body["name"] == "svc"
    body = admin.patch(f"/admin/keys/{created['id']}", json={"models": None, "team": None, "name": "svc2"}).json()
    assert body["models"] == ["*"] and body["team"] is None and body["name"] == "svc2"
    body = admin.patch(f"/admin/keys/{created['id']}", json={"expires_at": "2031-05-06T07:08:09+02:00"}).json()
    assert body["expires_at"] == "2031-05-06T05:08:09Z"

    rotated = admin.post(f"/admin/keys/{created['id']}/rotate")
    assert rotated.status_code == 200 and list(rotated.json()) == KEY_FIELDS
    new_key = rotated.json()["key"]
    assert new_key != key and chat(team_gateway.url, new_key).status_code == 200
    assert chat(team_gateway.url, key).status_code == 401  # same process: at once

    assert admin.delete(f"/admin/keys/{created['id']}").status_code == 204
    assert chat(team_gateway.url, new_key).status_code == 401
    assert admin.delete(f"/admin/keys/{created['id']}").status_code == 204  # idempotent
    assert admin.get(f"/admin/keys/{created['id']}").status_code == 404
    assert admin.patch(f"/admin/keys/{created['id']}", json={"name": "x"}).status_code == 404
    assert admin.post(f"/admin/keys/{created['id']}/rotate").status_code == 404
    assert admin.get("/admin/keys").json()["data"] == []
    error = admin.delete("/admin/keys/key_unknown").json()["error"]
    assert error["code"] == "key_not_found"


def test_created_key_revoked_through_the_cli_stops_within_5s(team_gateway, admin, database_url, fake):
    created = admin.post("/admin/keys", json={"name": "svc"}).json()
    with sdk(team_gateway.url, created["key"]) as client:
        assert client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "x"}]).choices
        from .team_support import cli

        cli(database_url, "keys", "revoke", created["id"])

        def refused() -> bool:
            try:
                client.models.list()
            except openai.AuthenticationError:
                return True
            return False

        wait_until(refused, REVOCATION_BOUND)


def test_teams(admin):
    r = admin.post("/admin/teams", json={"name": "red", "limits": {"rpm": 100, "concurrency": 3}})
    assert r.status_code == 201 and r.headers["location"] == "/admin/teams/red"
    team = r.json()
    assert list(team) == ["name", "limits", "created_at"]
    assert team["limits"] == limits(rpm=100, concurrency=3)
    duplicate = admin.post("/admin/teams", json={"name": "red"})
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "conflict"
    assert admin.get("/admin/teams/red").json() == team
    patched = admin.patch("/admin/teams/red", json={"limits": {"rpm": None, "tokens_per_month": 10**9}}).json()
    assert patched["limits"] == limits(concurrency=3, tokens_per_month=10**9)
    admin.post("/admin/keys", json={"name": "k", "team": "blue"}).raise_for_status()
    assert [t["name"] for t in admin.get("/admin/teams").json()["data"]] == ["red", "blue"]
    assert admin.get("/admin/teams/none").status_code == 404
    assert admin.patch("/admin/teams/none", json={"limits": {"rpm": 1}}).json()["error"]["code"] == "team_not_found"


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "x", "surprise": 1}, {"name": "x", "limits": {"rpm": 0}}, {"name": "x", "limits": {"rps": 1}},
     {"name": "x", "models": []}, {"name": "x", "limits": {"usd_per_month": -5}}, {"name": "x", "expires_at": "soon"},
     {"name": "x", "expires_at": "2030-01-01T00:00:00Z", "expires_in_seconds": 5}, {"name": "bad\u0000name"},
     {"name": "x", "limits": {"tpm": 10**30}}],
    ids=["empty", "empty-name", "unknown-field", "rpm-0", "unknown-limit", "no-models", "negative-usd", "bad-time",
         "two-expiries", "nul", "huge"],
)
def test_create_refuses_bad_bodies_with_400(admin, body):
    r = admin.post("/admin/keys", json=body)
    assert r.status_code == 400, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert admin.get("/admin/keys").json()["data"] == []


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {ADMIN_KEY}"},
                                     {"x-api-key": "wrong"}], ids=["none", "wrong", "basic", "wrong-x-api-key"])
@pytest.mark.parametrize("method,path", [("GET", "/admin/keys"), ("POST", "/admin/keys"), ("GET", "/admin/keys/key_x"),
                                         ("PATCH", "/admin/keys/key_x"), ("DELETE", "/admin/keys/key_x"),
                                         ("POST", "/admin/keys/key_x/rotate"), ("GET", "/admin/teams"),
                                         ("POST", "/admin/teams"), ("GET", "/admin/teams/red"), ("PATCH", "/admin/teams/red")])
def test_admin_routes_need_the_admin_key(team_gateway, headers, method, path):
    r = httpx.request(method, team_gateway.url + path, headers=headers, content=b"{not json")  # refused before the body
    assert r.status_code == 401, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_client_keys_are_not_admin_keys_and_back(team_gateway, admin):
    created = admin.post("/admin/keys", json={"name": "client"}).json()
    assert httpx.get(team_gateway.url + "/admin/keys", headers={"authorization": f"Bearer {created['key']}"}).status_code == 401
    assert chat(team_gateway.url, ADMIN_KEY).status_code == 401


def test_admin_api_is_off_without_admin_keys(make_gateway, database_url, fake):
    gateway = make_gateway(storage={"database_url": database_url})
    r = httpx.get(gateway.url + "/admin/keys", headers={"authorization": "Bearer anything"})
    assert r.status_code == 401 and "no admin key is configured" in r.json()["error"]["message"]


def test_admin_key_from_the_environment(fake_gemini, fake, database_url, make_gateway):
    from gateway_harness import GatewayServer, gateway_settings

    settings = gateway_settings(fake_gemini.url, environ={"GEMINI_PROXY_ADMIN_KEY": "env-admin-key"},
                                storage={"database_url": database_url})
    server = GatewayServer(settings)
    try:
        r = httpx.post(server.url + "/admin/keys", json={"name": "x"}, headers={"authorization": "Bearer env-admin-key"})
        assert r.status_code == 201
    finally:
        server.stop()


def test_openapi_documents_the_admin_models(team_gateway):
    spec = httpx.get(team_gateway.url + "/openapi.json").json()
    paths = spec["paths"]
    assert set(paths["/admin/keys"]) == {"get", "post"}
    assert set(paths["/admin/keys/{key_id}"]) == {"get", "patch", "delete"}
    assert set(paths["/admin/keys/{key_id}/rotate"]) == {"post"}
    assert set(paths["/admin/teams"]) == {"get", "post"}
    assert set(paths["/admin/teams/{name}"]) == {"get", "patch"}
    schemas = spec["components"]["schemas"]
    assert {"KeyCreate", "KeyUpdate", "KeyOut", "KeyCreated", "TeamCreate", "TeamUpdate", "TeamOut", "Limits"} <= set(schemas)
    assert list(schemas["KeyCreated"]["properties"]) == KEY_FIELDS
    assert "key" not in schemas["KeyOut"]["properties"]
    assert "201" in paths["/admin/keys"]["post"]["responses"]


def test_secrets_never_reach_the_logs(make_gateway, database_url, fake):
    """Neither a created key, a rotated one, nor the admin key appear in any log line or access log line."""
    gateway = make_gateway(storage={"database_url": database_url}, auth={"admin_keys": [ADMIN_KEY]},
                           server={"access_log": "json", "log_level": "debug"})
    access = io.StringIO()
    gateway.state.recorder.access._stream = access
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
            created = admin.post("/admin/keys", json={"name": "logged-name", "models": ["gemini-2.5-flash"]}).json()
            chat(gateway.url, created["key"])
            rotated = admin.post(f"/admin/keys/{created['id']}/rotate").json()
            chat(gateway.url, created["key"])
            chat(gateway.url, rotated["key"])
            chat(gateway.url, rotated["key"], model="gemini-2.5-pro")
            admin.delete(f"/admin/keys/{created['id']}")
            chat(gateway.url, rotated["key"])
        time.sleep(0.2)  # the access log is flushed within 50 ms
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    lines = [json.loads(line) for line in access.getvalue().splitlines()]
    assert any(line["principal"] == "logged-name" and line["status"] == 200 for line in lines)
    assert any(line["principal"] == "logged-name" and line["error_code"] == "model_not_allowed" for line in lines)
    assert any(line["principal"] == "admin" and line["path"] == "/admin/keys" for line in lines)
    text = "\n".join(records) + access.getvalue()
    for secret in (created["key"], rotated["key"], ADMIN_KEY):
        assert secret not in text


def test_database_failure_under_the_admin_api_is_503(team_gateway, admin, fake):
    """The admin API answers 503 while the database fails; the request path keeps the keys it holds, and
    `gemini_proxy_storage_up{backend="database"}` says 0 until the database answers again."""
    created = admin.post("/admin/keys", json={"name": "held"}).json()
    store = team_gateway.state.keys
    from sqlalchemy.exc import OperationalError

    async def broken(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, Exception("database is down"))

    original = store.list_keys, store.version
    assert metric_value(team_gateway, "gemini_proxy_storage_up", backend="database") == 1
    store.list_keys = store.version = broken
    try:
        r = admin.get("/admin/keys")
        assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"
        assert r.headers["retry-after"] == "5"
        assert chat(team_gateway.url, created["key"]).status_code == 200
        wait_until(lambda: metric_value(team_gateway, "gemini_proxy_storage_up", backend="database") == 0, REVOCATION_BOUND)
        assert chat(team_gateway.url, created["key"]).status_code == 200  # the keys read last stay in force
    finally:
        store.list_keys, store.version = original
    wait_until(lambda: metric_value(team_gateway, "gemini_proxy_storage_up", backend="database") == 1, REVOCATION_BOUND)
