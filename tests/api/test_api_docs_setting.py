"""`server.docs`: the API docs (`/docs`, `/openapi.json`) are served by default, and not at all when false."""

from __future__ import annotations

import httpx
import pytest

from app.settings import load_settings

from .api_helpers import assert_openai_error

DOC_PATHS = ("/docs", "/openapi.json")


def test_docs_served_by_default(raw, fake):
    assert raw.get("/docs").status_code == 200
    spec = raw.get("/openapi.json")
    assert spec.status_code == 200 and "/v1/models" in spec.json()["paths"]
    assert_openai_error(raw.get("/redoc"), 404)  # never served


@pytest.mark.parametrize("how", ["setting", "env"])
def test_docs_off_is_404_like_any_unknown_url(make_gateway, fake, how):
    if how == "setting":
        gw = make_gateway(server={"docs": False})
    else:
        gw = make_gateway(environ={"GEMINI_PROXY_SERVER__DOCS": "false"})
    assert gw.settings.server.docs is False
    for path in (*DOC_PATHS, "/redoc", "/docs/oauth2-redirect"):
        err = assert_openai_error(httpx.get(gw.url + path), 404, code="unknown_url")
        assert path in err["message"]
    assert httpx.get(gw.url + "/v1/models").status_code == 200  # the API itself is unchanged


@pytest.mark.parametrize("value, expected", [("false", False), ("0", False), ("true", True)])
def test_docs_setting_from_env_and_file(tmp_path, value, expected):
    environ = {"GEMINI_API_KEY": "k", "GEMINI_PROXY_SERVER__DOCS": value}
    assert load_settings(environ=environ).server.docs is expected
    config = tmp_path / "c.yaml"
    config.write_text(f"server:\n  docs: {value}\nupstreams:\n  - name: a\n    api_keys: [k]\n")
    assert load_settings(config, environ={}).server.docs is expected
    assert load_settings(environ={"GEMINI_API_KEY": "k"}).server.docs is True
