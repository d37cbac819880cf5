"""Settings: defaults, profile checks, redaction, .env.example kept in step with the code."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amas.config import all_env_names, env_example, load_settings, normalise_database_url
from amas.errors import ConfigError
from amas.stack import PROJECT_DIR

pytestmark = pytest.mark.unit

KEY = base64.b64encode(os.urandom(32)).decode()


def production(**env: str) -> dict[str, str]:
    values = {
        "AMAS_PROFILE": "production",
        "AMAS_DATABASE_URL": "postgresql://amas:pw-Zq81@db:5432/amas",
        "AMAS_STORAGE_URL": "s3://amas-backups/prod",
        "AMAS_LINEAGE_TRANSPORT": "http",
        "AMAS_LINEAGE_URL": "http://marquez:5000",
        "AMAS_ENCRYPTION_KEY": KEY,
        "AMAS_ERASURE_KEY": "a-long-random-erasure-key-value",
    }
    values.update(env)
    return values


def test_local_defaults_live_under_home(isolated_settings: Path) -> None:
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{isolated_settings / 'amas.db'}"
    assert settings.storage_url == str(isolated_settings / "storage")
    assert settings.lineage_file == isolated_settings / "lineage" / "events.jsonl"
    assert settings.prefect_api_url == "http://127.0.0.1:4200/api"


def test_production_accepts_a_complete_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in production().items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.database_url.startswith("postgresql+psycopg://")


@pytest.mark.parametrize(("override", "named"), [
    ({"AMAS_DATABASE_URL": ""}, "AMAS_DATABASE_URL"),
    ({"AMAS_DATABASE_URL": "sqlite:///x.db"}, "AMAS_DATABASE_URL"),
    ({"AMAS_STORAGE_URL": "/var/lib/amas"}, "AMAS_STORAGE_URL"),
    ({"AMAS_LINEAGE_TRANSPORT": "file"}, "AMAS_LINEAGE_URL"),
    ({"AMAS_ENCRYPTION_KEY": "changeme"}, "AMAS_ENCRYPTION_KEY"),
    ({"AMAS_ENCRYPTION_KEY": "c2hvcnQ="}, "AMAS_ENCRYPTION_KEY"),
    ({"AMAS_ERASURE_KEY": "password"}, "AMAS_ERASURE_KEY"),
    ({"AMAS_LLM_PROVIDERS": '[{"name":"main","kind":"openai","base_url":"https://llm.example/v1","model":"m",'
                            '"api_key":"changeme"}]'}, "AMAS_LLM_PROVIDERS: provider 'main' has a placeholder api_key"),
])
def test_production_refuses_and_names_the_variable(monkeypatch: pytest.MonkeyPatch, override: dict[str, str], named: str) -> None:
    for name, value in production(**override).items():
        if value:
            monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named) as info:
        load_settings()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "value"), [
    ("AMAS_PROFILE", "staging"),
    ("AMAS_PREFECT_PORT", "99999"),
    ("AMAS_STORAGE_URL", "ftp://host/x"),
    ("AMAS_DATABASE_URL", "mysql://u@h/db"),
    ("AMAS_LINEAGE_TRANSPORT", "kafka"),
])
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^{name}: "):
        load_settings()


def test_database_urls_are_normalised_to_psycopg() -> None:
    assert normalise_database_url("postgres://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalise_database_url("postgresql://u@h:5433/db") == "postgresql+psycopg://u@h:5433/db"


def test_redaction_never_shows_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in production(AMAS_STORAGE_S3_ACCESS_KEY_ID="AKIAEXAMPLE",
                                  AMAS_STORAGE_S3_SECRET_ACCESS_KEY="s3-secret-Vx9",
                                  AMAS_LINEAGE_API_KEY="lineage-token-Q7").items():
        monkeypatch.setenv(name, value)
    shown = repr(load_settings().redacted())
    for secret in ("pw-Zq81", KEY, "a-long-random-erasure-key-value", "s3-secret-Vx9", "lineage-token-Q7"):
        assert secret not in shown
    assert "postgresql+psycopg://amas:***@db:5432/amas" in shown


def test_env_example_lists_every_variable_and_is_current() -> None:
    text = (PROJECT_DIR / ".env.example").read_text()
    assert text == env_example(), "run `make env-example`"
    listed = [line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert listed == all_env_names()


def test_cli_reports_bad_settings_in_one_line_without_traceback(isolated_settings: Path) -> None:
    env = {**os.environ, "AMAS_PROFILE": "production"}
    result = subprocess.run([sys.executable, "-m", "amas.cli.main", "config", "show"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=PROJECT_DIR)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "AMAS_DATABASE_URL" in result.stderr
