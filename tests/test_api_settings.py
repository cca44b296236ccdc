"""Settings: YAML, `${VAR}` / `${VAR:-default}` interpolation, GEMINI_PROXY_* env
overrides (nested settings, lists, maps), human sizes, zero-config from
GEMINI_API_KEY / GEMINI_BASE_URL, demo mode, and config errors that name the
file, the setting and the problem without echoing secrets."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from app.settings import ClientKey, ConfigError, Settings, load_settings
from app.upstream.client import GEMINI_DEFAULT_BASE as DEFAULT_GEMINI_BASE_URL


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def keys_of(settings: Settings, index: int = 0) -> list[str]:
    return [k.key.get_secret_value() for k in settings.upstreams[index].keys()]


MINIMAL = """
upstreams:
  - name: main
    api_keys: ["k1"]
"""


# -- YAML and interpolation -----------------------------------------------------------------------------


def test_yaml_file(tmp_path):
    path = write(
        tmp_path,
        """
        server:
          host: 0.0.0.0
          port: 9100
          keepalive_seconds: 2.5
        upstreams:
          - name: main
            base_url: http://gemini.internal:8089
            api_keys: ["k1", {key: "k2", project: "p1"}]
        aliases:
          gpt-4o-mini: gemini-2.5-flash
        timeouts:
          connect: 3
        """,
    )
    s = load_settings(path, environ={})
    assert (s.server.host, s.server.port, s.server.keepalive_seconds) == ("0.0.0.0", 9100, 2.5)
    assert s.upstreams[0].base_url == "http://gemini.internal:8089"
    assert keys_of(s) == ["k1", "k2"]
    assert s.upstreams[0].keys()[1].project == "p1"
    assert s.aliases == {"gpt-4o-mini": "gemini-2.5-flash"}
    assert s.timeouts.connect == 3
    assert s.demo is False


def test_env_interpolation(tmp_path):
    path = write(
        tmp_path,
        """
        upstreams:
          - name: main
            base_url: ${FAKE_URL}
            api_keys: ["${KEY_ONE}", "prefix-${KEY_TWO}-suffix"]
        server:
          host: ${HOST:-127.0.0.2}
          port: ${PORT:-9200}
        aliases:
          fast: ${ALIAS_TARGET:-gemini-2.5-flash}
        """,
    )
    env = {"FAKE_URL": "http://127.0.0.1:1234", "KEY_ONE": "one", "KEY_TWO": "two", "HOST": "10.0.0.1"}
    s = load_settings(path, environ=env)
    assert s.upstreams[0].base_url == "http://127.0.0.1:1234"
    assert keys_of(s) == ["one", "prefix-two-suffix"]
    assert s.server.host == "10.0.0.1"  # set: the variable wins over the default
    assert s.server.port == 9200  # unset: the default, then validated as an int
    assert s.aliases == {"fast": "gemini-2.5-flash"}


def test_empty_default_and_empty_variable(tmp_path):
    path = write(tmp_path, MINIMAL + "server:\n  host: '${EMPTY_HOST:-}x'\n")
    assert load_settings(path, environ={}).server.host == "x"
    assert load_settings(path, environ={"EMPTY_HOST": ""}).server.host == "x"


def test_missing_variable_names_file_setting_and_variable(tmp_path):
    path = write(
        tmp_path,
        """
        upstreams:
          - name: main
            api_keys: ["${GEMINI_KEY_FOR_TEST}"]
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert str(path) in message
    assert "upstreams[0].api_keys[0]" in message
    assert "GEMINI_KEY_FOR_TEST" in message and "not set" in message


def test_empty_file_with_zero_config(tmp_path):
    path = write(tmp_path, "")
    s = load_settings(path, environ={"GEMINI_API_KEY": "k"})
    assert keys_of(s) == ["k"] and not s.demo


# -- environment overrides --------------------------------------------------------------------------------


def test_env_overrides_nested_settings(tmp_path):
    path = write(tmp_path, MINIMAL + "server:\n  port: 9000\n  host: 0.0.0.0\n")
    env = {
        "GEMINI_PROXY_SERVER__PORT": "9300",
        "GEMINI_PROXY_RETRY__MAX_ATTEMPTS": "5",
        "gemini_proxy_media__fetch_urls": "true",  # case-insensitive
    }
    s = load_settings(path, environ=env)
    assert s.server.port == 9300  # env beats the file
    assert s.server.host == "0.0.0.0"  # the rest of the section stays from the file
    assert s.retry.max_attempts == 5
    assert s.media.fetch_urls is True


def test_env_overrides_lists_and_maps():
    env = {
        "GEMINI_PROXY_UPSTREAMS": '[{"name": "env", "base_url": "http://h:1", "api_keys": ["a", "b"]}]',
        "GEMINI_PROXY_AUTH__CLIENT_KEYS": '["c1", {"key_sha256": "' + "ab" * 32 + '"}]',
        "GEMINI_PROXY_ALIASES": '{"gpt-4o": "gemini-2.5-pro"}',
        "GEMINI_PROXY_MEDIA__ALLOW_HOSTS": '["media.internal"]',
    }
    s = load_settings(environ=env)
    assert [u.name for u in s.upstreams] == ["env"] and keys_of(s) == ["a", "b"]
    assert len(s.auth.client_keys) == 2
    assert isinstance(s.auth.client_keys[1], ClientKey) and s.auth.client_keys[1].digest() == bytes.fromhex("ab" * 32)
    assert s.aliases == {"gpt-4o": "gemini-2.5-pro"}
    assert s.media.allow_hosts == ["media.internal"]


def test_overrides_argument_beats_env_and_file(tmp_path):
    path = write(tmp_path, MINIMAL + "server:\n  port: 9000\n")
    s = load_settings(path, overrides={"server": {"port": 9500}}, environ={"GEMINI_PROXY_SERVER__PORT": "9400"})
    assert s.server.port == 9500


def test_only_the_given_environ_is_read(monkeypatch):
    """`environ=` isolates completely: variables of the real process environment do not leak in."""
    monkeypatch.setenv("GEMINI_PROXY_SERVER__PORT", "9999")
    monkeypatch.setenv("GEMINI_PROXY_AUTH__CLIENT_KEYS", '["leaked"]')
    monkeypatch.setenv("GEMINI_API_KEY", "leaked-key")
    s = load_settings(environ={"GEMINI_API_KEY": "given"})
    assert s.server.port == 8000
    assert s.auth.client_keys == []
    assert keys_of(s) == ["given"]


def test_process_environment_is_the_default(monkeypatch):
    monkeypatch.setenv("GEMINI_PROXY_SERVER__PORT", "9876")
    monkeypatch.setenv("GEMINI_API_KEY", "from-env")
    monkeypatch.delenv("GEMINI_PROXY_CONFIG", raising=False)
    s = load_settings()
    assert s.server.port == 9876 and keys_of(s) == ["from-env"]


def test_config_path_from_env(tmp_path):
    path = write(tmp_path, MINIMAL + "server:\n  port: 9050\n")
    s = load_settings(environ={"GEMINI_PROXY_CONFIG": str(path)})
    assert s.server.port == 9050 and keys_of(s) == ["k1"]


@pytest.mark.parametrize(
    "env, setting",
    [
        ({"GEMINI_PROXY_SERVER__PORT": "eighty"}, "server.port"),
        ({"GEMINI_PROXY_SERVER__PORT": "70000"}, "server.port"),
        ({"GEMINI_PROXY_SERVER__NOT_A_SETTING": "1"}, "server.not_a_setting"),
        ({"GEMINI_PROXY_AUTH__CLIENT_KEYS": "[not json"}, "GEMINI_PROXY_AUTH__CLIENT_KEYS"),
        ({"GEMINI_PROXY_UPSTREAMS": '[{"name": "x", "api_keys": ["k"], "base_url": "ftp://h"}]'}, "upstreams[0]"),
    ],
)
def test_bad_env_override_named(env, setting):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"GEMINI_API_KEY": "k", **env})
    assert setting in str(info.value)


# -- sizes and durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1048576", 1048576),
        (2048, 2048),
        ("20MiB", 20 * 1024**2),
        ("32MB", 32 * 1000**2),
        ("1.5 KiB", 1536),
        ("10kb", 10_000),
        ("1GiB", 1024**3),
        ("512b", 512),
    ],
)
def test_human_sizes(tmp_path, value, expected):
    path = write(tmp_path, MINIMAL + f"server:\n  max_request_bytes: {value!r}\nmedia:\n  fetch_max_bytes: {value!r}\n")
    s = load_settings(path, environ={})
    assert s.server.max_request_bytes == expected
    assert s.media.fetch_max_bytes == expected


def test_human_size_from_env():
    s = load_settings(environ={"GEMINI_API_KEY": "k", "GEMINI_PROXY_SERVER__MAX_REQUEST_BYTES": "4MiB"})
    assert s.server.max_request_bytes == 4 * 1024**2


@pytest.mark.parametrize("value", ["lots", "12 parsecs", "-5MB", "0"])
def test_bad_sizes(tmp_path, value):
    path = write(tmp_path, MINIMAL + f"server:\n  max_request_bytes: {value!r}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "server.max_request_bytes" in str(info.value) and str(path) in str(info.value)


# -- zero-config and demo mode ------------------------------------------------------------------------------


def test_zero_config_single_key():
    s = load_settings(environ={"GEMINI_API_KEY": "AIza-one"})
    assert len(s.upstreams) == 1
    up = s.upstreams[0]
    assert (up.name, up.type, up.base_url) == ("gemini", "gemini", None)
    assert keys_of(s) == ["AIza-one"]
    assert s.passthrough is True and s.demo is False


def test_zero_config_key_pool_and_base_url():
    s = load_settings(environ={"GEMINI_API_KEY": "k1, k2,,k3 ", "GEMINI_BASE_URL": "http://127.0.0.1:8089"})
    assert keys_of(s) == ["k1", "k2", "k3"]
    assert s.upstreams[0].base_url == "http://127.0.0.1:8089"


def test_default_base_url_is_googles():
    from app.upstream.client import Endpoint

    s = load_settings(environ={"GEMINI_API_KEY": "k"})
    endpoint = Endpoint.gemini(s.upstreams[0].base_url)
    assert DEFAULT_GEMINI_BASE_URL == "https://generativelanguage.googleapis.com"
    assert endpoint.generate_url("gemini-2.5-flash").startswith(DEFAULT_GEMINI_BASE_URL + "/v1beta/models/gemini-2.5-flash:")


def test_zero_config_with_env_overrides():
    s = load_settings(environ={"GEMINI_API_KEY": "k", "GEMINI_PROXY_ALIASES": '{"gpt-4o-mini": "gemini-2.5-flash"}'})
    assert s.aliases == {"gpt-4o-mini": "gemini-2.5-flash"} and keys_of(s) == ["k"]


def test_configured_upstreams_win_over_zero_config(tmp_path):
    path = write(tmp_path, MINIMAL)
    s = load_settings(path, environ={"GEMINI_API_KEY": "zero"})
    assert [u.name for u in s.upstreams] == ["main"] and keys_of(s) == ["k1"]


def test_demo_only_with_nothing_configured():
    assert load_settings(environ={}).demo is True
    assert load_settings(environ={"GEMINI_API_KEY": "k"}).demo is False
    assert load_settings(environ={"GEMINI_API_KEY": ""}).demo is True  # empty means unset


def test_config_file_without_upstreams_never_falls_back_to_demo(tmp_path):
    path = write(tmp_path, "server:\n  port: 9000\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value) and "upstreams" in str(info.value)


def test_env_upstreams_never_demo():
    s = load_settings(environ={"GEMINI_PROXY_UPSTREAMS": '[{"name": "u", "api_keys": ["k"]}]'})
    assert s.demo is False


# -- errors name the file, the setting, the problem; never a secret --------------------------------------------


@pytest.mark.parametrize(
    "text, setting, problem",
    [
        ("server:\n  port: abc\n", "server.port", "integer"),
        ("server:\n  prot: 80\n", "server.prot", "not permitted"),
        ("nonsense_section: 1\n", "nonsense_section", "not permitted"),
        ("server:\n  log_level: loud\n", "server.log_level", "'debug'"),
        ("timeouts:\n  connect: -1\n", "timeouts.connect", "greater than 0"),
        ("upstreams:\n  - name: 'bad name!'\n    api_keys: [k]\n", "upstreams[0].name", "pattern"),
        ("upstreams:\n  - name: a\n", "upstreams[0].api_keys", "at least one key"),
        ("upstreams:\n  - name: v\n    type: vertex\n", "upstreams[0]", "project"),
        ("upstreams:\n  - name: a\n    type: openai\n    api_keys: [k]\n", "upstreams[0].type", "'gemini'"),
        (MINIMAL + "models:\n  - name: m\n    targets: [{upstream: zz, model: x}]\n", "models[0].targets[0].upstream", "zz"),
    ],
)
def test_errors_name_file_setting_problem(tmp_path, text, setting, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    assert setting in message
    assert problem in message


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "server:\n  port: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value) and "YAML" in str(info.value) and "line" in str(info.value)


def test_top_level_not_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value) and "mapping" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.yaml", environ={})
    assert "nope.yaml" in str(info.value)


SECRET = "AIzaSyTOP-SECRET-0123456789abcdef"


@pytest.mark.parametrize(
    "text",
    [
        f"upstreams:\n  - name: a\n    api_keys: ['{SECRET}\n",  # unterminated quote: a YAML error
        f"upstreams:\n  - name: a\n    api_keys: [{SECRET}: x: y]\n",  # YAML error on the secret's line
        f"upstreams:\n  - name: a\n    api_keys: {SECRET}\n",  # a string, not a list
        f"upstreams:\n  - name: a\n    api_key: {SECRET}\n",  # misspelt setting
        f"upstreams:\n  - name: a\n    api_keys: [k]\n    token: {SECRET}\n",  # unknown setting
        f"auth:\n  client_keys:\n    - key: {SECRET}\n      key_sha256: nothex\n",
        f"auth:\n  client_keys:\n    - {{key: {SECRET}, name: 1.5, extra: 2}}\n",
        f"upstreams:\n  - name: a\n    api_keys: [{{key: {SECRET}, project: [1]}}]\n",
    ],
)
def test_secrets_never_echoed(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert SECRET not in str(info.value)
    assert str(path) in str(info.value)


def test_secret_from_env_not_echoed():
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"GEMINI_PROXY_AUTH__CLIENT_KEYS": f"[{SECRET}"})
    assert SECRET not in str(info.value)
    assert "GEMINI_PROXY_AUTH__CLIENT_KEYS" in str(info.value)


def test_secrets_listed_for_redaction_and_hidden_in_repr(tmp_path):
    path = write(
        tmp_path,
        f"""
        upstreams:
          - name: a
            api_keys: ["{SECRET}", {{key: "second-secret"}}]
        auth:
          client_keys: ["client-secret", {{key_sha256: "{hashlib.sha256(b"x").hexdigest()}"}}]
        """,
    )
    s = load_settings(path, environ={})
    assert set(s.secrets()) == {SECRET, "second-secret", "client-secret"}
    assert SECRET not in repr(s) and "client-secret" not in repr(s)
    assert SECRET not in s.model_dump_json()


def test_client_key_needs_exactly_one_form(tmp_path):
    path = write(tmp_path, MINIMAL + "auth:\n  client_keys:\n    - name: empty\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "auth.client_keys[0]" in str(info.value)


# -- log redaction (app/logs.py), the last line of defence for configured secrets -----------------------------


def test_redacting_filter_scrubs_messages_args_and_tracebacks():
    import io
    import logging

    from app.logs import REDACTED, RedactingFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([SECRET, "abc"]))  # too short to redact safely: ignored
    logger = logging.getLogger("test_api_settings.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("key %s refused", SECRET)
        logger.warning(f"inline {SECRET}")
        try:
            raise ValueError(f"upstream said {SECRET}")
        except ValueError:
            logger.exception("failed with %r", {"key": SECRET})
        logger.warning("abc stays")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert SECRET not in text
    assert text.count(REDACTED) >= 4
    assert "abc stays" in text


def test_example_config_loads():
    """config.example.yaml documents every setting; it must load as shipped (given the key it references)."""
    example = Path(__file__).resolve().parent.parent / "config.example.yaml"
    s = load_settings(example, environ={"GEMINI_API_KEY": "k-example"})
    assert s.upstreams and not s.demo
    assert "k-example" in s.secrets()
    with pytest.raises(ConfigError) as info:
        load_settings(example, environ={})
    assert "GEMINI_API_KEY" in str(info.value) and "config.example.yaml" in str(info.value)


def test_byok_refuses_vertex_upstreams(tmp_path):
    """Bring-your-own-key has no client authentication: a Vertex upstream would spend the gateway's credentials."""
    from app.settings import ConfigError, load_settings

    sa = tmp_path / "sa.json"
    sa.write_text("{}")
    with pytest.raises(ConfigError, match=r"upstreams\[0\]: auth.byok .* gemini upstreams only"):
        load_settings(
            overrides={"auth": {"byok": True}, "upstreams": [{"name": "vx", "type": "vertex", "project": "p", "credentials_file": str(sa)}]},
            environ={},
        )
    with pytest.raises(ConfigError, match="gemini upstreams only"):  # zero-config Vertex too
        load_settings(overrides={"auth": {"byok": True}}, environ={"GOOGLE_CLOUD_PROJECT": "p"})


def test_redis_url_from_env_and_checked(tmp_path):
    path = write(tmp_path, MINIMAL)
    s = load_settings(path, environ={"GEMINI_PROXY_STORAGE__REDIS_URL": "redis://:pw@127.0.0.1:6379/2"})
    assert s.storage.redis_url is not None and s.storage.redis_url.get_secret_value() == "redis://:pw@127.0.0.1:6379/2"
    assert "pw" not in repr(s.storage)  # a secret, like the database URL
    assert load_settings(path, environ={}).storage.redis_url is None
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={"GEMINI_PROXY_STORAGE__REDIS_URL": "http://127.0.0.1:6379"})
    assert "redis_url" in str(info.value) and "redis://" in str(info.value)
