"""Configuration: the YAML file, `${ENV}` interpolation, env overrides, zero-config.

Owns every setting the gateway reads (documented one by one in
`config.example.yaml`) and how they are loaded, in this order of precedence:

1. command-line flags (`--host`, `--port`, `--workers`);
2. environment variables `GEMINI_PROXY_<SECTION>__<SETTING>` (e.g.
   `GEMINI_PROXY_SERVER__PORT=9000`; lists and maps as JSON);
3. the YAML file (`--config FILE` or `GEMINI_PROXY_CONFIG`), where `${VAR}` and
   `${VAR:-default}` are replaced from the environment;
4. defaults.

With no upstream configured, the standard variables of Google's SDKs are read
(zero-config): `GEMINI_API_KEY` (+ `GEMINI_BASE_URL`) for the Gemini Developer
API, `GOOGLE_CLOUD_PROJECT` / `GOOGLE_CLOUD_LOCATION` /
`GOOGLE_APPLICATION_CREDENTIALS` (+ `VERTEX_BASE_URL`) for Vertex AI. With none
of them either, the gateway runs in demo mode against the built-in fake Gemini.

A bad configuration raises `ConfigError`, whose message names the file, the
setting and what is wrong.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, InitSettingsSource, SettingsConfigDict

from app.errors import loc_to_path

ENV_PREFIX = "GEMINI_PROXY_"

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _parse_size(value: Any) -> Any:
    """Accept `20MiB`, `32MB`, `1048576`."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    return value


def _access_log_mode(value: Any) -> Any:
    """`true` / `false` (the older boolean setting) mean `text` / `off`."""
    if isinstance(value, bool):
        return "text" if value else "off"
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return "text" if value.lower() == "true" else "off"
    return value


DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///gemini-proxy.db"


def normalise_database_url(url: str) -> str:
    """The async driver of a SQLAlchemy URL: `sqlite://` -> aiosqlite, `postgresql://` -> asyncpg."""
    for plain, driver in (("sqlite://", "sqlite+aiosqlite://"), ("postgresql://", "postgresql+asyncpg://"),
                          ("postgres://", "postgresql+asyncpg://")):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url


ByteSize = Annotated[int, BeforeValidator(_parse_size), Field(ge=1)]
Seconds = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    max_request_bytes: ByteSize = 32 * 1024 * 1024
    keepalive_seconds: Seconds = 15.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: Annotated[Literal["json", "text", "off"], BeforeValidator(_access_log_mode)] = "json"
    metrics: bool = True  # GET /metrics (Prometheus)
    shutdown_grace: Seconds = 30.0  # on SIGTERM, running streams get this long to finish
    docs: bool = True  # serve /docs and /openapi.json
    upstream_connections: int = Field(256, ge=1)  # bound of the pool of connections to Google


MAX_COUNT = 10**15  # bounds that fit the database's 64-bit integers (USD as micro-USD)
MAX_USD = 1e12


class Limits(_Section):
    """A key's or a team's limits; unset = no limit (docs/design.md#team-gateway)."""

    rpm: int | None = Field(None, ge=1, le=MAX_COUNT)  # requests per minute
    tpm: int | None = Field(None, ge=1, le=MAX_COUNT)  # tokens per minute
    concurrency: int | None = Field(None, ge=1, le=MAX_COUNT)  # requests at once
    tokens_per_day: int | None = Field(None, ge=1, le=MAX_COUNT)  # calendar day, UTC
    tokens_per_month: int | None = Field(None, ge=1, le=MAX_COUNT)  # calendar month, UTC
    usd_per_month: float | None = Field(None, gt=0, le=MAX_USD)  # calendar month, UTC


KEY_ID_LENGTH = 64  # the usage records' key_id column (app/team/schema.py)


class _KeySecret(_Section):
    """A key given as its secret or as the secret's SHA-256 (exactly one of them)."""

    name: str | None = None
    key: SecretStr | None = None
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of `key` or `key_sha256`")
        return self

    def digest(self) -> bytes:
        if self.key_sha256 is not None:
            return bytes.fromhex(self.key_sha256)
        assert self.key is not None
        return hashlib.sha256(self.key.get_secret_value().encode()).digest()


class ClientKey(_KeySecret):
    # default: cfg-<name> (a name too long for 64 characters: cfg-<its start>-<digest16>), else cfg-<digest16>,
    # digest16 = the first 16 hex digits of the key's SHA-256: the id follows the key, not its place in the list
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:#-]{1,64}$")
    team: str | None = None
    models: list[str] | None = Field(None, min_length=1)  # globs on the public model names; None = every model
    limits: Limits = Limits()

    def default_id(self) -> str:
        """The id of a key the config gives none: from its name, else its digest; at most 64 characters (the
        usage records' `key_id` column), so records and budget counters always find the key by it."""
        digest = self.digest().hex()[:16]
        if not self.name:
            return f"cfg-{digest}"
        named = f"cfg-{self.name}"
        return named if len(named) <= KEY_ID_LENGTH else f"cfg-{self.name[:KEY_ID_LENGTH - 21]}-{digest}"


class AdminKey(_KeySecret):
    pass


class AuthSettings(_Section):
    client_keys: list[SecretStr | ClientKey] = []
    admin_keys: list[SecretStr | AdminKey] = []  # guard /admin/*; GEMINI_PROXY_ADMIN_KEY adds one
    byok: bool = False

    def config_keys(self) -> list[ClientKey]:
        """`client_keys` in their object form, each with its id."""
        out = []
        for entry in self.client_keys:
            key = entry if isinstance(entry, ClientKey) else ClientKey(key=entry)
            if key.id is None:
                key = key.model_copy(update={"id": key.default_id()})
            out.append(key)
        return out

    @model_validator(mode="after")
    def _unique_ids(self) -> AuthSettings:
        ids = [k.id for k in self.config_keys()]
        repeated = sorted({i for i in ids if i is not None and ids.count(i) > 1})
        if repeated:
            raise ValueError(f"auth.client_keys: ids (or names) must be unique; repeated: {repeated}")
        return self


class StorageSettings(_Section):
    # SQLAlchemy URL of the database that holds keys and teams: SQLite (a file, WAL mode) or
    # PostgreSQL. `sqlite:///` and `postgresql://` are given their async drivers.
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    keys_refresh_seconds: Annotated[float, Field(gt=0, le=4)] = 2.0  # how often keys are re-read (<= 4: revocation in 5 s)
    # Usage records (docs/team.md#usage-and-prices): written in batches off the request path.
    usage_records: bool = True  # one record per request of a client key
    usage_flush_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0  # a batch at least this often
    usage_batch_size: int = Field(500, ge=1, le=10_000)  # or as soon as this many are waiting
    usage_queue_size: int = Field(100_000, ge=1)  # records held in memory; beyond, straight to the spool file
    # A write that takes longer is an outage: its batch goes to the spool and is retried.
    usage_write_timeout: Annotated[float, Field(gt=0, le=600)] = 30.0
    # Where records wait while the database is unreachable (a directory of JSON-lines files, one
    # per process). Default: `<sqlite file>.usage-spool/` beside an SQLite database, else
    # `gemini-proxy-usage-spool/` in the working directory.
    usage_spool: str | None = None
    usage_retention_days: int = Field(90, ge=1, le=36_500)  # records older than this are deleted (daily totals stay)
    usage_prune_seconds: Seconds = 3600.0  # how often old records are deleted (also soon after start)

    # Redis shared by the replicas (and `--workers`): rate-limit windows, concurrency leases, budget
    # counters, upstream key rests, thought signatures. None: each process keeps its own (limits divided).
    redis_url: SecretStr | None = None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^rediss?://", value.get_secret_value()):
            raise ValueError("`redis_url` must start with redis:// or rediss://")
        return value

    def spool_dir(self) -> Path:
        if self.usage_spool:
            return Path(self.usage_spool)
        url = self.url()
        if url.startswith("sqlite") and ":memory:" not in url:
            database = url.split(":///", 1)[-1]
            if database:
                return Path(database + ".usage-spool")
        return Path("gemini-proxy-usage-spool")

    def url(self) -> str:
        return normalise_database_url(self.database_url.get_secret_value())


class PriceSettings(_Section):
    """One model's prices in USD per 1M tokens (docs/team.md#usage-and-prices)."""

    input: float = Field(ge=0)  # uncached prompt tokens (including tool-use prompt tokens)
    output: float = Field(ge=0)  # answer and thinking tokens
    cached: float | None = Field(None, ge=0)  # cached prompt tokens; default: the input price
    long_prompt_threshold: int | None = Field(None, ge=1)  # prompts over this many tokens use the long_* prices
    long_input: float | None = Field(None, ge=0)
    long_output: float | None = Field(None, ge=0)
    long_cached: float | None = Field(None, ge=0)


class ApiKey(_Section):
    key: SecretStr
    project: str | None = None  # keys of one Google project share its quota


class UpstreamSettings(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["gemini", "vertex"] = "gemini"
    base_url: str | None = None
    api_version: str | None = None
    # gemini
    api_keys: list[SecretStr | ApiKey] = []
    # vertex
    project: str | None = None
    location: str = "global"
    credentials_file: str | None = None

    @model_validator(mode="after")
    def _check(self) -> UpstreamSettings:
        if self.type == "vertex" and not self.project:
            raise ValueError("a vertex upstream needs `project`")
        if self.credentials_file is not None and not os.path.isfile(self.credentials_file):
            raise ValueError(f"credentials_file {self.credentials_file!r} does not exist")
        if any(not k.key.get_secret_value().strip() for k in self.keys()):
            raise ValueError("api_keys: a key is empty")
        if self.base_url is not None and not re.match(r"^https?://", self.base_url):
            raise ValueError("`base_url` must start with http:// or https://")
        return self

    def keys(self) -> list[ApiKey]:
        return [k if isinstance(k, ApiKey) else ApiKey(key=k) for k in self.api_keys]


class TargetSettings(_Section):
    upstream: str | None = None  # default: the first upstream
    model: str
    priority: int = 0
    weight: int = Field(1, ge=1)


class CapabilityOverrides(_Section):
    """Per-model facts; `None` keeps the built-in default (see translate/capabilities.py)."""

    thinking: Literal["none", "budget", "level"] | None = None
    thinking_levels: list[Literal["minimal", "low", "medium", "high"]] | None = None
    thinking_budget_min: int | None = None
    thinking_budget_max: int | None = None
    thinking_can_disable: bool | None = None
    reasoning_effort: dict[str, int | str] | None = None
    json_schema: bool | None = None
    signatures_required: bool | None = None
    per_part_media_resolution: bool | None = None
    multimodal_function_response: bool | None = None
    image_output: bool | None = None
    drop_params: list[str] | None = None
    endpoints: list[Literal["chat", "embeddings", "images"]] | None = None
    embeddings_api: Literal["embed_content", "predict"] | None = None
    images_api: Literal["generate_content", "predict"] | None = None
    image_sizes: list[Literal["1K", "2K", "4K"]] | None = None


class ModelRoute(_Section):
    name: str
    targets: list[TargetSettings] = Field(min_length=1)
    capabilities: CapabilityOverrides | None = None


class TimeoutSettings(_Section):
    connect: Seconds = 10.0
    first_byte: Seconds = 300.0
    total: Seconds = 900.0
    stream_idle: Seconds = 300.0


class RetrySettings(_Section):
    max_attempts: int = Field(3, ge=1)
    backoff_initial: Seconds = 0.5
    backoff_max: Seconds = 8.0
    max_retry_delay: Seconds = 30.0
    max_total_wait: Seconds = 10.0  # non-streamed requests: no retry starts after this many seconds
    malformed_function_call: int = Field(1, ge=0)


class MediaSettings(_Section):
    fetch_urls: bool = False
    fetch_max_bytes: ByteSize = 20 * 1024 * 1024
    fetch_timeout: Seconds = 10.0
    allow_hosts: list[str] = []  # hosts exempt from the public-address rule (internal media servers)


class OutputSettings(_Section):
    images: Literal["audio", "images", "both"] = "audio"


class SignatureSettings(_Section):
    cache_size: int = Field(100_000, ge=0)


class ResponsesSettings(_Section):
    """Where the Responses API keeps stored responses (`store`, `previous_response_id`; docs/responses.md)."""

    store: Literal["database", "memory"] = "database"  # database: shared by every replica; memory: this process only
    store_days: float = Field(30.0, gt=0)  # database: responses kept this long (OpenAI keeps them 30 days)
    # memory (and the database's fallback while it is away): least recently used out first; 0 keeps none
    store_size: int = Field(10_000, ge=0)
    store_max_bytes: ByteSize = 256 * 1024 * 1024  # their JSON, in total


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    upstreams: list[UpstreamSettings] = []
    models: list[ModelRoute] = []
    aliases: dict[str, str] = {}
    passthrough: bool = True
    capabilities: dict[str, CapabilityOverrides] = {}
    timeouts: TimeoutSettings = TimeoutSettings()
    retry: RetrySettings = RetrySettings()
    media: MediaSettings = MediaSettings()
    output: OutputSettings = OutputSettings()
    signatures: SignatureSettings = SignatureSettings()
    storage: StorageSettings = StorageSettings()
    responses: ResponsesSettings = ResponsesSettings()
    pricing: dict[str, PriceSettings] = {}  # model (or glob) -> prices; overrides the built-in table
    demo: bool = False  # set by zero-config when no upstream is known

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        names = [u.name for u in self.upstreams]
        for i, up in enumerate(self.upstreams):
            if up.type == "gemini" and not up.api_keys and not self.auth.byok:
                raise ValueError(f"upstreams[{i}].api_keys: a gemini upstream needs at least one key (or auth.byok: true)")
            if up.type == "vertex" and self.auth.byok:
                raise ValueError(byok_vertex_error(i))
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"upstream names must be unique; repeated: {sorted(duplicates)}")
        for i, route in enumerate(self.models):
            for j, target in enumerate(route.targets):
                if target.upstream is not None and target.upstream not in names:
                    raise ValueError(
                        f"models[{i}].targets[{j}].upstream: no upstream named {target.upstream!r} "
                        f"(known: {names})"
                    )
        return self

    def secrets(self) -> list[str]:
        """Every secret value, so that logs and errors can be scrubbed of them."""
        out: list[str] = []
        for up in self.upstreams:
            out.extend(k.key.get_secret_value() for k in up.keys())
        for ck in [*self.auth.client_keys, *self.auth.admin_keys]:
            value = ck if isinstance(ck, SecretStr) else ck.key
            if value is not None:
                out.append(value.get_secret_value())
        password = database_password(self.storage.url())
        if password:
            out.append(password)
        return [s for s in out if s]


def database_password(url: str) -> str | None:
    match = re.match(r"^[A-Za-z0-9+.-]+://[^:/@]*:([^@]*)@", url)
    return match.group(1) if match else None


class ConfigError(Exception):
    """A configuration problem, with a message fit for the operator."""


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(value: Any, environ: Mapping[str, str], path: str, source: str) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{source}: {path}: environment variable ${{{name}}} is not set")

        return _ENV_REF.sub(replace, value)
    if isinstance(value, list):
        return [_interpolate(v, environ, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _interpolate(v, environ, f"{path}.{k}" if path else str(k), source) for k, v in value.items()}
    return value


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What and where, without PyYAML's quoted source lines (they could show a secret)."""
    parts = []
    for text, mark in ((getattr(exc, "context", None), getattr(exc, "context_mark", None)),
                       (getattr(exc, "problem", None), getattr(exc, "problem_mark", None))):
        if text:
            parts.append(f"{text} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else text)
    return "; ".join(parts) or type(exc).__name__


def read_config_file(path: str | Path, environ: Mapping[str, str]) -> dict[str, Any]:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of settings, not {type(data).__name__}")
    return _interpolate(data, environ, "", source)


# settings whose value is never echoed in an error: secrets, and URLs (a URL may carry a password, e.g. redis://:pw@host)
_SECRET_LIKE = re.compile(r"key|secret|token|passw|credential|url", re.IGNORECASE)


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = loc_to_path(err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) or err["type"] == "missing" else f" (got {got!r})"
        if err["type"] == "extra_forbidden" or _SECRET_LIKE.search(loc) or isinstance(got, SecretStr):
            shown = ""  # never echo a secret back (a misspelt `api_key:` is an unknown setting)
        env_name = ENV_PREFIX + loc.split("[")[0].replace(".", "__").upper() if loc else ""
        hint = f" [env: {env_name}]" if env_name else ""
        # cross-setting checks have no location of their own; their message starts with the setting
        lines.append(f"{source}: {loc + ': ' if loc else ''}{message}{shown}{hint}")
    return "\n".join(dict.fromkeys(lines))  # one line per distinct problem


def load_settings(
    config_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load and validate the settings; raise ConfigError naming file, setting and problem."""
    environ = os.environ if environ is None else environ
    if config_path is None:
        config_path = environ.get(ENV_PREFIX + "CONFIG") or None
    file_data = read_config_file(config_path, environ) if config_path else {}
    source = str(config_path) if config_path else "configuration (environment)"

    env_vars = {k.lower(): v for k, v in environ.items()}  # case_sensitive=False

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
            # GEMINI_PROXY_* overrides come from `environ`, like everything else (not always os.environ).
            env_settings.env_vars = env_vars
            return (init_settings, env_settings, InitSettingsSource(settings_cls, file_data))

    try:
        settings: Settings = _Loaded(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    except ValueError as exc:  # e.g. a malformed JSON value in a GEMINI_PROXY_* variable
        field = re.search(r'field "([^"]+)"', str(exc))
        names = sorted(k.upper() for k in environ if field and k.upper().startswith(ENV_PREFIX + field.group(1).upper()))
        where = f"{', '.join(names)}: " if names else ""
        why = f" ({exc.__cause__})" if exc.__cause__ is not None else ""  # e.g. a JSON syntax error, never the value
        raise ConfigError(f"{source}: {where}{exc}{why}") from None
    settings = apply_zero_config(settings, environ, source if config_path else None)
    admin_key = environ.get(ENV_PREFIX + "ADMIN_KEY", "").strip()
    if admin_key:
        auth = settings.auth.model_copy(update={"admin_keys": [*settings.auth.admin_keys, SecretStr(admin_key)]})
        settings = settings.model_copy(update={"auth": auth})
    for i, up in enumerate(settings.upstreams):
        if up.type == "vertex" and settings.auth.byok:
            raise ConfigError(f"{source}: {byok_vertex_error(i)}")
    return settings


def byok_vertex_error(index: int) -> str:
    return (
        f"upstreams[{index}]: auth.byok (bring-your-own-key) works with gemini upstreams only; a vertex "
        "upstream would let any client spend the gateway's own Google credentials"
    )


def _split_keys(value: str) -> list[SecretStr | ApiKey]:
    return [SecretStr(k.strip()) for k in value.split(",") if k.strip()]


def apply_zero_config(settings: Settings, environ: Mapping[str, str], config_file: str | None = None) -> Settings:
    """Fill in upstreams from Google's standard variables when none are configured.

    Demo mode (the built-in fake Gemini) is chosen only when nothing at all names
    an upstream: no config file, no upstream settings, no Google variables.
    """
    if settings.upstreams:
        return settings
    upstreams: list[UpstreamSettings] = []
    if environ.get("GEMINI_API_KEY"):
        upstreams.append(
            UpstreamSettings(
                name="gemini",
                type="gemini",
                base_url=environ.get("GEMINI_BASE_URL") or None,
                api_keys=_split_keys(environ["GEMINI_API_KEY"]),
            )
        )
    if environ.get("GOOGLE_CLOUD_PROJECT"):
        vertex = UpstreamSettings(
            name="vertex",
            type="vertex",
            project=environ["GOOGLE_CLOUD_PROJECT"],
            location=environ.get("GOOGLE_CLOUD_LOCATION") or "global",
            credentials_file=environ.get("GOOGLE_APPLICATION_CREDENTIALS") or None,
            base_url=environ.get("VERTEX_BASE_URL") or None,
        )
        prefer_vertex = environ.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower() in ("1", "true", "yes")
        upstreams.insert(0 if prefer_vertex else len(upstreams), vertex)
    if upstreams:
        return settings.model_copy(update={"upstreams": upstreams})
    if config_file is not None:
        raise ConfigError(
            f"{config_file}: upstreams: no upstream is configured; add one, or set GEMINI_API_KEY "
            "(Gemini Developer API) or GOOGLE_CLOUD_PROJECT (Vertex AI)"
        )
    return settings.model_copy(update={"demo": True})
