"""The doctor names the broken part: a stopped database, read-only storage, a down Prefect API."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amas.config import load_settings
from amas.doctor import (
    check_agents,
    check_backup,
    check_deployments,
    check_llm,
    check_prefect,
    check_retention,
    check_storage,
    check_store,
    run_checks,
)
from amas.errors import ConfigError
from amas.stack import PROJECT_DIR
from tests.plugins.prefect_server import free_port

pytestmark = pytest.mark.integration


def test_store_and_storage_pass_on_a_migrated_postgres_store(store_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMAS_DATABASE_URL", store_engine.url.render_as_string(hide_password=False))
    settings = load_settings()
    assert check_store(settings).ok
    assert check_storage(settings).ok
    assert check_retention(settings).ok


def test_unmigrated_store_says_run_db_upgrade(fresh_pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMAS_DATABASE_URL", fresh_pg_url)
    finding = check_store(load_settings())
    assert not finding.ok and "amas db upgrade" in finding.fix


def test_stopped_database_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on this port: to a client that is what a stopped server looks like.
    monkeypatch.setenv("AMAS_DATABASE_URL", f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/amas")
    finding = check_store(load_settings())
    assert not finding.ok
    assert "store unreachable" in finding.detail and "AMAS_DATABASE_URL" in finding.detail
    assert "hunter2" not in finding.detail


def test_read_only_storage_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "storage"
    blocker.write_text("a file where the storage directory should be")
    monkeypatch.setenv("AMAS_STORAGE_URL", str(blocker))
    finding = check_storage(load_settings())
    assert not finding.ok and "AMAS_STORAGE_URL" in finding.detail


def test_down_prefect_api_says_amas_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMAS_PREFECT_PORT", str(free_port()))
    settings = load_settings()
    assert "amas up" in check_prefect(settings).fix
    assert not check_deployments(settings).ok


def test_doctor_command_exits_1_and_lists_failures_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMAS_")}
    env.update(AMAS_HOME=str(tmp_path), AMAS_ENV_FILE="", AMAS_PREFECT_PORT=str(free_port()),
               AMAS_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/amas")
    result = subprocess.run([sys.executable, "-m", "amas.cli.main", "doctor"], env=env, capture_output=True,
                            text=True, timeout=120, cwd=PROJECT_DIR)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "store" in result.stderr and "prefect api" in result.stderr


def test_agents_and_llm_checks_report_what_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_agents(load_settings()).detail.startswith("7 agents load: code_analysis, data_analysis")
    none = check_llm(load_settings())
    assert none.ok and "no model configured" in none.detail
    monkeypatch.setenv("AMAS_LLM_PROVIDERS", '[{"name":"main","kind":"openai","base_url":"http://127.0.0.1:9/v1",'
                                             '"model":"m","api_key_env":"AMAS_TEST_UNSET_KEY"}]')
    monkeypatch.delenv("AMAS_TEST_UNSET_KEY", raising=False)
    with pytest.raises(ConfigError, match="AMAS_TEST_UNSET_KEY, which is not set"):
        check_llm(load_settings())
    monkeypatch.setenv("AMAS_TEST_UNSET_KEY", "k-123")
    assert check_llm(load_settings()).detail == "1 provider(s) in failover order: main (openai, m)"


def test_backup_check_names_the_tools_and_the_missing_key(store_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMAS_DATABASE_URL", store_engine.url.render_as_string(hide_password=False))
    found = check_backup(load_settings())
    assert found.ok, found.detail
    if store_engine.dialect.name == "postgresql":
        assert re.search(r"pg_dump/pg_restore \d+\.\d+ for server \d+", found.detail), found.detail
    assert "not encrypted (no AMAS_ENCRYPTION_KEY)" in found.detail
    monkeypatch.setenv("AMAS_BACKUP_ENCRYPT", "true")
    refused = run_checks(load_settings(), [check_backup])[0]
    assert not refused.ok and "AMAS_BACKUP_ENCRYPT is true but AMAS_ENCRYPTION_KEY is not set" in refused.detail
