"""Fuzzing (hypothesis) the admin API's inputs and the key headers: never a 5xx, never a way past a key."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from .team_support import ADMIN_KEY

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["name", "team", "models", "limits", "expires_at", "expires_in_seconds", "rpm", "key", "id"])
limit_names = st.sampled_from(["rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month", "usd_per_month", "x"])
bodies = st.one_of(
    json_values,
    st.dictionaries(fields, json_values, max_size=5),
    st.fixed_dictionaries({"name": st.text(max_size=300)}, optional={
        "team": st.none() | st.text(max_size=140), "models": st.none() | st.lists(st.text(max_size=20), max_size=3),
        "limits": st.dictionaries(limit_names, json_values, max_size=3),
        "expires_at": st.none() | st.text(max_size=30) | st.datetimes().map(lambda d: d.isoformat()),
        "expires_in_seconds": st.integers(min_value=-10, max_value=2**64),
    }),
)
routes = st.sampled_from([
    ("POST", "/admin/keys"), ("PATCH", "/admin/keys/{id}"), ("POST", "/admin/teams"), ("PATCH", "/admin/teams/{id}"),
    ("GET", "/admin/keys/{id}"), ("DELETE", "/admin/keys/{id}"), ("POST", "/admin/keys/{id}/rotate"), ("GET", "/admin/teams/{id}"),
])
ids = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1, max_size=70)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(route=routes, body=bodies, ident=ids, authorised=st.booleans())
@example(route=("PATCH", "/admin/keys/{id}"), body={}, ident=".", authorised=False)  # the client's URL: /admin/keys/
def test_admin_api_never_5xx_nor_open_without_the_key(plain, route, body, ident, authorised):
    method, path = route
    headers = {"authorization": f"Bearer {ADMIN_KEY}"} if authorised else {"authorization": "Bearer " + ADMIN_KEY[:-1]}
    r = plain.request(method, path.replace("{id}", quote(ident, safe="")), json=body, headers=headers)
    assert r.status_code < 500, (r.status_code, r.text)
    if not authorised:
        # 404: a path that is no admin route at all; 405: a method its path does not serve (`.` and `..` ids are
        # resolved away by the client): routing answers before the key is checked, and says nothing about keys
        assert r.status_code in (401, 404, 405), r.text
    elif method == "POST" and path == "/admin/keys" and r.status_code == 201:
        assert r.json()["key"].startswith("gp-")


header_names = st.sampled_from(["authorization", "api-key", "x-api-key", "x-goog-api-key", "Authorization", "x-key"])


printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)
header_values = st.one_of(printable, printable.map("Bearer ".__add__), printable.map("Bearer gp-".__add__),
                          printable.map("gp-".__add__)).map(str.strip)


@FUZZ
@given(headers=st.lists(st.tuples(header_names, header_values), max_size=3))
def test_client_key_headers_never_let_a_stranger_in(plain, headers):
    # one real key exists (made once, before the examples), so keys are required; the fuzzed headers never carry it
    r = plain.post("/v1/chat/completions", headers=headers,
                   json={"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401, r.text
    r = plain.get("/v1/models", headers=headers)
    assert r.status_code == 401, r.text


@pytest.fixture
def plain(team_gateway) -> Iterator[httpx.Client]:
    """A client without any key; one real key exists in the database."""
    with httpx.Client(base_url=team_gateway.url, timeout=30) as client:
        created = client.post("/admin/keys", json={"name": "real"}, headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert created.status_code == 201
        yield client
