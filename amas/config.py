"""Settings: one pydantic-settings class per concern, one composite, one cached getter.

Precedence, highest first: values passed to the class, ``AMAS_*`` environment variables,
the ``.env`` file in the working directory (or the file named by ``AMAS_ENV_FILE``; empty
reads none), the defaults below. Defaults are the ``local``
profile: everything embedded under ``AMAS_HOME`` (``./.amas``). The ``production`` profile
refuses embedded parts, placeholder secrets and missing keys, naming each variable.

Secrets are ``SecretStr`` and never printed: ``redacted()`` shows a field only when it is on
the public allowlist, and strips passwords from URLs it shows.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from amas.errors import ConfigError

PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "change_me", "secret", "password", "placeholder",
     "example", "test", "xxx", "todo", "replace-me", "default"}
)


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix, env_file=".env", env_file_encoding="utf-8", extra="ignore",
        # `.env.example` lists every variable with an empty value meaning "the default".
        env_ignore_empty=True,
    )


class Profile(StrEnum):
    local = "local"
    production = "production"


class CoreSettings(BaseSettings):
    model_config = _config("AMAS_")
    public: ClassVar[frozenset[str]] = frozenset({"profile", "home", "log_level"})

    profile: Profile = Field(Profile.local, description="Which set of defaults and checks apply: local or production.")
    home: Path = Field(Path(".amas"), description="Directory for embedded state: SQLite store, local storage, lineage file, Prefect home.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level of AMAS's own loggers.")
    encryption_key: SecretStr | None = Field(None, description="Base64 of 32 random bytes: the AES-256-GCM key for backups (required in production).")
    erasure_key: SecretStr | None = Field(None, description="Key of the keyed hash that the erasure ledger stores instead of identifiers (required in production).")

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()


class DatabaseSettings(BaseSettings):
    model_config = _config("AMAS_DATABASE_")
    public: ClassVar[frozenset[str]] = frozenset({"url", "pool_size", "echo"})

    url: str | None = Field(None, description="SQLAlchemy URL of the AMAS store; empty means SQLite under AMAS_HOME.")
    pool_size: int = Field(5, ge=1, le=100, description="Connection pool size for PostgreSQL.")
    echo: bool = Field(False, description="Log every SQL statement (development only).")

    @field_validator("url")
    @classmethod
    def _normalise_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return normalise_database_url(value.strip())


class StorageSettings(BaseSettings):
    model_config = _config("AMAS_STORAGE_")
    public: ClassVar[frozenset[str]] = frozenset(
        {"url", "s3_endpoint_url", "s3_region", "s3_access_key_id", "multipart_threshold_mb", "multipart_chunk_mb"}
    )

    url: str | None = Field(None, description="Where objects go: a directory path (or file://...) or s3://bucket/prefix; empty means AMAS_HOME/storage.")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint for non-AWS stores (MinIO, moto); empty means AWS.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_access_key_id: str | None = Field(None, description="S3 access key id; empty means the default AWS credential chain.")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key.")
    multipart_threshold_mb: int = Field(64, ge=5, le=5120, description="Objects at least this large are uploaded in parts.")
    multipart_chunk_mb: int = Field(16, ge=5, le=5120, description="Part size for multipart uploads.")

    @field_validator("url")
    @classmethod
    def _check_scheme(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        scheme = urlsplit(value).scheme
        if scheme not in ("", "file", "s3"):
            raise ValueError(f"scheme {scheme!r} is not supported; use a path, file://... or s3://bucket/prefix")
        return value.strip()


class LineageSettings(BaseSettings):
    model_config = _config("AMAS_LINEAGE_")
    public: ClassVar[frozenset[str]] = frozenset({"transport", "file", "url", "namespace", "timeout_seconds"})

    transport: Literal["file", "http", "console", "disabled"] = Field("file", description="Where OpenLineage events go.")
    file: Path | None = Field(None, description="JSONL file for the file transport; empty means AMAS_HOME/lineage/events.jsonl.")
    url: str | None = Field(None, description="Base URL of the OpenLineage HTTP receiver (Marquez) for the http transport.")
    api_key: SecretStr | None = Field(None, description="Bearer token for the OpenLineage HTTP receiver.")
    namespace: str = Field("amas", min_length=1, description="OpenLineage namespace of AMAS jobs.")
    timeout_seconds: float = Field(5.0, gt=0, le=120, description="HTTP transport timeout.")


class PrefectSettings(BaseSettings):
    model_config = _config("AMAS_PREFECT_")
    public: ClassVar[frozenset[str]] = frozenset(
        {"host", "port", "api_url", "work_pool", "worker_poll_seconds"}
    )

    host: str = Field("127.0.0.1", description="Address `amas up` binds the Prefect server to; loopback unless you put a proxy in front.")
    port: int = Field(4200, ge=1, le=65535, description="Port of the Prefect server started by `amas up`.")
    api_url: str | None = Field(None, description="Prefect API URL the CLI and flows use; empty means http://HOST:PORT/api.")
    work_pool: str = Field("amas-local", min_length=1, description="Work pool that `amas up` creates and its worker polls.")
    worker_poll_seconds: float = Field(1.0, gt=0, le=60, description="How often the worker asks for scheduled runs.")


class AgentSettings(BaseSettings):
    model_config = _config("AMAS_AGENTS_")
    public: ClassVar[frozenset[str]] = frozenset(
        {"timeout_seconds", "retries", "retry_delay_seconds", "concurrency"}
    )

    timeout_seconds: float = Field(900.0, gt=0, le=86400, description="An agent task taking longer fails (and may be retried).")
    retries: int = Field(2, ge=0, le=10, description="Retries of an agent task that failed for a transient reason (a service down, a timeout); bad input is never retried.")
    retry_delay_seconds: float = Field(5.0, ge=0, le=3600, description="Wait between retries of an agent task.")
    concurrency: int = Field(2, ge=1, le=1000, description="Tasks of one agent running at once across all flows; created as the Prefect global concurrency limit agent-<name> when missing (edit it there later).")


class RetentionSettings(BaseSettings):
    model_config = _config("AMAS_RETENTION_")
    public: ClassVar[frozenset[str]] = frozenset({"max_fraction", "batch_size", "workers"})

    max_fraction: float = Field(0.5, gt=0, le=1, description="Largest share of a category one `retention apply` may delete or anonymize; more stops the run until it is re-run with --confirm.")
    batch_size: int = Field(10000, ge=1, le=1000000, description="Rows per retention batch; each batch is its own transaction.")
    workers: int = Field(2, ge=1, le=8, description="Connections that delete a category's batches side by side on PostgreSQL, each in its own range of the primary key (1: one at a time). SQLite always uses one.")


class BackupSettings(BaseSettings):
    model_config = _config("AMAS_BACKUP_")
    public: ClassVar[frozenset[str]] = frozenset({
        "url", "scratch_url", "compression_level", "threads", "encrypt", "keep_last", "keep_daily", "keep_weekly",
        "keep_monthly", "keep_yearly", "max_age_hours", "verify_sample_rows",
    })

    url: str | None = Field(None, description="Where backups go: a directory path (or file://...) or s3://bucket/prefix; empty means the AMAS storage (AMAS_STORAGE_URL), under backups/.")
    scratch_url: str | None = Field(None, description="PostgreSQL URL of a database on the server where restore verification may CREATE and DROP scratch databases; empty means the store's server, database postgres.")
    compression_level: int = Field(3, ge=1, le=19, description="zstd level of backup objects (1 fastest; 3 is zstd's default).")
    threads: int = Field(2, ge=0, le=64, description="zstd compression threads (0: compress in the calling thread) and pg_restore jobs.")
    encrypt: bool | None = Field(None, description="Encrypt backups with AES-256-GCM under AMAS_ENCRYPTION_KEY; empty means: when that key is set.")
    keep_last: int = Field(3, ge=0, le=10000, description="GFS rotation: keep the newest N backups.")
    keep_daily: int = Field(7, ge=0, le=10000, description="GFS rotation: keep the newest backup of each of the last N days that have one.")
    keep_weekly: int = Field(4, ge=0, le=10000, description="GFS rotation: the same per ISO week.")
    keep_monthly: int = Field(12, ge=0, le=10000, description="GFS rotation: the same per month.")
    keep_yearly: int = Field(3, ge=0, le=10000, description="GFS rotation: the same per year.")
    max_age_hours: float = Field(26.0, gt=0, le=24 * 366, description="RPO limit: a newest verified backup older than this is reported as stale (a failure).")
    verify_sample_rows: int = Field(20000, ge=100, le=100000000, description="Restore verification runs the store's Great Expectations suites on at most this many rows per table (row counts and content digests always cover every row).")

    @field_validator("url")
    @classmethod
    def _check_scheme(cls, value: str | None) -> str | None:
        return StorageSettings._check_scheme(value)

    @field_validator("scratch_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        url = normalise_database_url(value.strip())
        if make_url(url).get_backend_name() != "postgresql":
            raise ValueError("must be a postgresql:// URL (scratch databases are only needed for a PostgreSQL store)")
        return url


class LLMProvider(BaseModel):
    """One language-model endpoint in ``AMAS_LLM_PROVIDERS``; the key is never shown."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    public: ClassVar[tuple[str, ...]] = (
        "name", "kind", "base_url", "model", "api_key_env", "timeout_seconds",
        "input_price_per_1k", "output_price_per_1k",
    )

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Unique label used in logs and usage totals.")
    kind: Literal["openai", "ollama"] = Field(description="openai: any OpenAI-compatible /chat/completions API; ollama: /api/chat.")
    base_url: str = Field(description="http(s) URL; openai kind up to /v1 (the client appends /chat/completions), ollama the server root.")
    model: str = Field(min_length=1, description="Model name sent with every request.")
    api_key: SecretStr | None = Field(None, description="Bearer token; prefer api_key_env so the key stays out of the JSON.")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Name of an environment variable holding the Bearer token.")
    timeout_seconds: float | None = Field(None, gt=0, le=600, description="Per-request timeout; empty means AMAS_LLM_TIMEOUT_SECONDS.")
    input_price_per_1k: float = Field(0.0, ge=0, description="USD per 1000 prompt tokens, for cost accounting.")
    output_price_per_1k: float = Field(0.0, ge=0, description="USD per 1000 completion tokens, for cost accounting.")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; put the key in api_key or api_key_env")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _one_key_source(self) -> LLMProvider:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
        return self

    def resolved_key(self) -> SecretStr | None:
        """The Bearer token; one named by ``api_key_env`` is read from the process environment now."""
        if self.api_key_env is None:
            return self.api_key
        value = os.environ.get(self.api_key_env, "")
        if not value:
            raise ConfigError(f"AMAS_LLM_PROVIDERS: provider {self.name!r} reads its key from {self.api_key_env}, which is not set")
        return SecretStr(value)

    def redacted(self) -> dict[str, Any]:
        shown: dict[str, Any] = {name: getattr(self, name) for name in self.public}
        shown["api_key"] = "(not set)" if self.api_key is None else "**********"
        return shown


_JSON_TYPES = {"dict": "object", "str": "string", "int": "number", "float": "number", "bool": "boolean", "NoneType": "null"}


def _provider_problem(index: int, item: Any, exc: ValidationError) -> str:
    """One line for the first problem of one provider; never echoes the input (it may hold a key)."""
    name = item.get("name") if isinstance(item, dict) else None
    which = f"provider {index + 1}" + (f" ({name!r})" if isinstance(name, str) and re.fullmatch(r"[\w.-]{1,64}", name) else "")
    err = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    return f"{which}: {where + ': ' if where else ''}{message}"


class LLMSettings(BaseSettings):
    model_config = _config("AMAS_LLM_")
    public: ClassVar[frozenset[str]] = frozenset({
        "timeout_seconds", "max_retries", "backoff_seconds", "backoff_max_seconds", "breaker_failures",
        "breaker_reset_seconds", "max_tokens", "temperature", "prompt_budget_chars",
    })

    # NoDecode: the validator below parses the JSON itself, so a typo becomes a ConfigError
    # naming the provider and field instead of pydantic-settings' generic parse error.
    providers: Annotated[list[LLMProvider], NoDecode] = Field(
        [], description='JSON list in priority order, e.g. [{"name":"local","kind":"openai","base_url":"http://127.0.0.1:8080/v1",'
        '"model":"gpt-4o-mini","api_key_env":"OPENAI_API_KEY"}]; fields: name, kind (openai|ollama), base_url, model, '
        'api_key or api_key_env, timeout_seconds, input_price_per_1k, output_price_per_1k; [] means no model.')
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="Per-request timeout for providers without their own.")
    max_retries: int = Field(2, ge=0, le=10, description="Retries of a transient failure (timeout, connection, 429, 5xx) before failing over.")
    backoff_seconds: float = Field(0.5, ge=0, le=60, description="First retry delay; doubles each retry, plus random jitter up to this much.")
    backoff_max_seconds: float = Field(8.0, ge=0, le=300, description="Cap on a retry delay; a longer Retry-After fails over instead of waiting.")
    breaker_failures: int = Field(3, ge=1, le=100, description="Consecutive failed requests that open a provider's circuit.")
    breaker_reset_seconds: float = Field(60.0, gt=0, le=86400, description="How long an open circuit skips its provider before one trial request.")
    max_tokens: int = Field(400, ge=1, le=32768, description="Completion token limit per request.")
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature; 0 keeps summaries repeatable.")
    prompt_budget_chars: int = Field(4000, ge=200, le=200000, description="Most characters of an agent result sent to the model.")

    @field_validator("providers", mode="before")
    @classmethod
    def _parse_providers(cls, value: Any) -> list[LLMProvider]:
        if isinstance(value, str):
            if not value.strip():
                return []
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        if not isinstance(value, list | tuple):
            kind = _JSON_TYPES.get(type(value).__name__, type(value).__name__)
            raise ValueError(f"must be a JSON list of provider objects, not a JSON {kind}")
        providers: list[LLMProvider] = []
        for index, item in enumerate(value):
            if isinstance(item, LLMProvider):
                providers.append(item)
                continue
            if not isinstance(item, dict):
                kind = _JSON_TYPES.get(type(item).__name__, type(item).__name__)
                raise ValueError(f"provider {index + 1}: must be a JSON object, not a JSON {kind}")
            try:
                providers.append(LLMProvider.model_validate(item))
            except ValidationError as exc:
                raise ValueError(_provider_problem(index, item, exc)) from None
        names = [p.name for p in providers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"provider names must be unique; repeated: {', '.join(duplicates)}")
        return providers


class Settings(BaseModel):
    """Every concern's settings, with the profile's derived defaults filled in."""

    core: CoreSettings
    database: DatabaseSettings
    storage: StorageSettings
    lineage: LineageSettings
    prefect: PrefectSettings
    agents: AgentSettings
    llm: LLMSettings
    retention: RetentionSettings
    backup: BackupSettings

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.core.home / 'amas.db'}"

    @property
    def storage_url(self) -> str:
        return self.storage.url or str(self.core.home / "storage")

    @property
    def lineage_file(self) -> Path:
        return self.lineage.file or self.core.home / "lineage" / "events.jsonl"

    @property
    def prefect_api_url(self) -> str:
        return self.prefect.api_url or f"http://{self.prefect.host}:{self.prefect.port}/api"

    @property
    def prefect_home(self) -> Path:
        return self.core.home / "prefect"

    def redacted(self) -> dict[str, dict[str, Any]]:
        """Effective settings for display: allowlisted fields shown, all else redacted."""
        derived = {
            "database": {"url": self.database_url},
            "storage": {"url": self.storage_url},
            "lineage": {"file": str(self.lineage_file)},
            "prefect": {"api_url": self.prefect_api_url},
        }
        shown: dict[str, dict[str, Any]] = {}
        for concern in ("core", "database", "storage", "lineage", "prefect", "agents", "llm", "retention",
                        "backup"):
            section: BaseSettings = getattr(self, concern)
            values: dict[str, Any] = {}
            for name in type(section).model_fields:
                value = derived.get(concern, {}).get(name, getattr(section, name))
                if isinstance(value, list) and all(isinstance(v, LLMProvider) for v in value):
                    values[name] = [v.redacted() for v in value]
                elif name not in type(section).public:
                    values[name] = "(not set)" if value is None else "**********"
                elif isinstance(value, str) and "://" in value:
                    values[name] = hide_url_password(value)
                else:
                    values[name] = value.value if isinstance(value, StrEnum) else (
                        str(value) if isinstance(value, Path) else value
                    )
            shown[concern] = values
        return shown


ENV_PREFIXES = {
    "core": "AMAS_",
    "database": "AMAS_DATABASE_",
    "storage": "AMAS_STORAGE_",
    "lineage": "AMAS_LINEAGE_",
    "prefect": "AMAS_PREFECT_",
    "agents": "AMAS_AGENTS_",
    "llm": "AMAS_LLM_",
    "retention": "AMAS_RETENTION_",
    "backup": "AMAS_BACKUP_",
}
_CLASSES: dict[str, type[BaseSettings]] = {
    "core": CoreSettings,
    "database": DatabaseSettings,
    "storage": StorageSettings,
    "lineage": LineageSettings,
    "prefect": PrefectSettings,
    "agents": AgentSettings,
    "llm": LLMSettings,
    "retention": RetentionSettings,
    "backup": BackupSettings,
}


def env_name(concern: str, field: str) -> str:
    return f"{ENV_PREFIXES[concern]}{field.upper()}"


def all_env_names() -> list[str]:
    """Every environment variable AMAS reads, in a stable order (used for .env.example)."""
    return [env_name(c, f) for c, cls in _CLASSES.items() for f in cls.model_fields]


def normalise_database_url(url: str) -> str:
    """Accept the spellings people paste and pin PostgreSQL to the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL ({exc}); expected postgresql://user@host/db or sqlite:///path") from None
    if parsed.drivername in ("postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise ValueError(f"backend {parsed.get_backend_name()!r} is not supported; use postgresql:// or sqlite://")
    return parsed.render_as_string(hide_password=False)


def hide_url_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        parts = urlsplit(url)
        if parts.password:
            return url.replace(f":{parts.password}@", ":***@")
        return url


def _is_placeholder(secret: SecretStr | None) -> bool:
    return secret is None or secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS


def decode_key(secret: SecretStr, variable: str) -> bytes:
    """Decode a base64 32-byte key, or explain which variable is wrong and how to make one."""
    try:
        key = base64.b64decode(secret.get_secret_value(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(
            f"{variable} must be base64 of 32 random bytes; make one with: "
            "python -c \"import base64,os;print(base64.b64encode(os.urandom(32)).decode())\""
        )
    return key


def production_problems(settings: Settings) -> list[str]:
    """What the production profile refuses, one line per variable."""
    problems: list[str] = []
    url = settings.database.url
    if url is None or make_url(url).get_backend_name() != "postgresql":
        problems.append("AMAS_DATABASE_URL must be a postgresql:// URL in production (SQLite is for the local profile)")
    if not (settings.storage.url or "").startswith("s3://"):
        problems.append("AMAS_STORAGE_URL must be s3://bucket/prefix in production (a local directory is for the local profile)")
    if settings.lineage.transport != "http" or not settings.lineage.url:
        problems.append("AMAS_LINEAGE_TRANSPORT=http and AMAS_LINEAGE_URL are required in production")
    if _is_placeholder(settings.core.encryption_key):
        problems.append("AMAS_ENCRYPTION_KEY is missing or a placeholder; set base64 of 32 random bytes")
    else:
        try:
            decode_key(settings.core.encryption_key, "AMAS_ENCRYPTION_KEY")
        except ConfigError as exc:
            problems.append(str(exc))
    if _is_placeholder(settings.core.erasure_key):
        problems.append("AMAS_ERASURE_KEY is missing or a placeholder; set a long random value")
    if settings.storage.s3_access_key_id and _is_placeholder(settings.storage.s3_secret_access_key):
        problems.append("AMAS_STORAGE_S3_SECRET_ACCESS_KEY is missing or a placeholder while AMAS_STORAGE_S3_ACCESS_KEY_ID is set")
    if settings.lineage.api_key is not None and _is_placeholder(settings.lineage.api_key):
        problems.append("AMAS_LINEAGE_API_KEY is a placeholder")
    for provider in settings.llm.providers:
        if provider.api_key is not None and _is_placeholder(provider.api_key):
            problems.append(f"AMAS_LLM_PROVIDERS: provider {provider.name!r} has a placeholder api_key")
    return problems


def _first_error(concern: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else "?"
    message = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if field not in _CLASSES[concern].public or isinstance(got, dict) else f" (got {got!r})"
    return f"{env_name(concern, field)}: {message}{shown}"


def load_settings(**overrides: dict[str, Any]) -> Settings:
    """Build and check settings; raise ``ConfigError`` naming the first bad variable.

    ``overrides`` maps a concern name to keyword arguments for its class (tests use it).
    """
    # AMAS_ENV_FILE picks another dotenv file; an empty value reads none (tests use that).
    env_file = os.environ.get("AMAS_ENV_FILE", ".env") or None
    sections: dict[str, BaseSettings] = {}
    for concern, cls in _CLASSES.items():
        try:
            sections[concern] = cls(_env_file=env_file, **overrides.get(concern, {}))
        except ValidationError as exc:
            raise ConfigError(_first_error(concern, exc)) from None
    settings = Settings(**sections)
    if settings.core.profile is Profile.production:
        problems = production_problems(settings)
        if problems:
            raise ConfigError("production profile refused: " + "; ".join(problems))
    return settings


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once. Tests call ``get_settings.cache_clear()``."""
    return load_settings()


def env_example() -> str:
    """The text of ``.env.example``: every variable, its one-line description, its default."""
    lines = [
        "# AMAS settings. Copy to .env (or export) and change what you need; empty means the default.",
        "# The local profile needs none of them. `amas config show` prints the effective values.",
        "# Also read: AMAS_ENV_FILE (another dotenv file instead of .env; empty reads none).",
    ]
    for concern, cls in _CLASSES.items():
        lines.append("")
        lines.append(f"# --- {concern} ---")
        for name, field in cls.model_fields.items():
            default = field.default
            shown = "" if default is None or isinstance(default, SecretStr) else (
                default.value if isinstance(default, StrEnum) else str(default))
            lines.append(f"# {field.description}")
            lines.append(f"{env_name(concern, name)}={shown}")
    return "\n".join(lines) + "\n"
